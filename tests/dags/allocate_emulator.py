"""PreemptiveAllocateOperator for the `etl` pool (run by tests/allocation under `airflow dags test`).

The pools file, store and emulator URL come from [predictive] options set by the test's environment.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from airflow_predictive.operators.preemptive_allocate import PreemptiveAllocateOperator


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["predictive-test"])
def allocate_emulator():
    PreemptiveAllocateOperator(task_id="allocate", pools=["etl"], lock_wait_seconds=5)


allocate_emulator()

"""A daily DAG whose one task is mapped 30 wide over a literal list; each instance sleeps a minute.

Bound to the ``io_fanout`` template's ``wait`` stage (queue ``io-pool``, parallelism 30): the fan-out
is known before the first run. ``max_active_tasks`` lets all 30 run at once (Airflow's default is 16).
The test runs no scheduler, so the DAG never actually runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from airflow_predictive.templates import stage_kwargs

USER_TEMPLATES = Path(__file__).resolve().parents[1] / "user_templates"


@task(**stage_kwargs("io_fanout", "wait", templates_folder=USER_TEMPLATES))
def wait(part: int) -> None:
    time.sleep(60)  # waits on I/O: holds a worker slot, uses no CPU


with DAG(
    dag_id="slots_io_fanout",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=32,
) as dag:
    # fmt: off
    wait.expand(part=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                      15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29])
    # fmt: on

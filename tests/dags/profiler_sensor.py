"""The profiler as a DAG: BehaviorProfilerSensor in poke mode and deferred to the triggerer."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

from airflow_predictive.sensors.behavior_profiler import BehaviorProfilerSensor


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["predictive-test"])
def profiler_sensor():
    BehaviorProfilerSensor(
        task_id="profile_poke",
        window=timedelta(minutes=30),
        window_end="{{ dag_run.run_after }}",
        queue_pools={"cpu-bound": "cpu-workers"},
        poke_interval=5,
        timeout=180,
        mode="poke",
    )
    BehaviorProfilerSensor(
        task_id="profile_deferred",
        window=timedelta(minutes=30),
        window_end="{{ dag_run.run_after }}",
        queue_pools={"cpu-bound": "cpu-workers"},
        collector_name="deferred",
        poke_interval=5,
        timeout=180,
        deferrable=True,
    )


profiler_sensor()

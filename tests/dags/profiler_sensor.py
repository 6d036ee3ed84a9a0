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
        # A minute past the trigger: the first pokes find the window incomplete and keep polling.
        window_end="{{ dag_run.run_after + macros.timedelta(minutes=1) }}",
        interval=timedelta(minutes=1),
        queue_pools={"cpu-bound": "cpu-workers"},
        poke_interval=5,
        timeout=240,
        mode="poke",
    )
    BehaviorProfilerSensor(
        task_id="profile_deferred",
        window=timedelta(minutes=30),
        # A minute past the trigger: the first pokes find the window incomplete and keep polling.
        window_end="{{ dag_run.run_after + macros.timedelta(minutes=1) }}",
        interval=timedelta(minutes=1),
        queue_pools={"cpu-bound": "cpu-workers"},
        collector_name="deferred",
        poke_interval=5,
        timeout=240,
        deferrable=True,
    )


profiler_sensor()

"""The predictive-scaling control loop: profile -> forecast -> allocate (and evaluate beside it), every cycle.

- ``profile``: BehaviorProfilerSensor ingests task and DAG-run history since its watermark from the
  REST API and rebuilds the demand series of the window ending at the run's data-interval end.
- ``forecast``: the series are split into chunks of ``[predictive] series_per_chunk`` and forecast by
  mapped DemandForecastOperator tasks, so a CeleryExecutor or KubernetesExecutor deployment fans the
  work out over its workers (one pmdarima import per chunk, not per series).
  Each forecast includes the work Airflow already knows about (``[predictive] combination = residual``):
  upcoming scheduled runs and the remaining stages of runs in progress, read from the provider's
  ``/predictive/api/upcoming`` endpoint through ``[predictive] api_conn_id``, their stage demand
  forecast from profiled durations and usage, the statistical model fitted on demand minus those
  DAGs' past runs. If the endpoint cannot be read, the cycle forecasts statistically and logs why.
- ``allocate``: PreemptiveAllocateOperator plans the configured pools from the newest forecasts and
  applies each plan to Compute Engine for pools in ``forecast_and_scale`` (records it otherwise), mapped
  over chunks of ``[predictive] pools_per_chunk`` pools so that workers share it. Every cap (instances,
  budget, storage) and the allocation lock are a pool's own, so a chunk plans as one task would; each
  chunk reads its pools' forecasts and recent demand in one go.
- ``evaluate``: ForecastEvaluationOperator scores past forecasts and recalibrates, mapped over the same
  chunks as ``forecast`` (each instance reads only its chunk's series), and raises degraded-forecast
  alerts. It scores buckets that ended before this cycle, so it needs none of this cycle's forecasts or
  plans: it runs beside ``allocate`` (after ``forecast``, whose model-state writes it must not race),
  and ``allocate`` goes first on a busy worker (priority). ``close_evaluation``
  (CloseFeedbackCycleOperator) then moves the scored window on, alerts on failed actions and capped
  plans, prunes old forecasts and emits the pools' metrics.

Copy this file into your DAGs folder; everything it needs comes from the provider and ``[predictive]``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_predictive import config
from airflow_predictive.operators.demand_forecast import DemandForecastOperator
from airflow_predictive.operators.forecast_evaluation import (
    CloseFeedbackCycleOperator,
    ForecastEvaluationOperator,
)
from airflow_predictive.operators.preemptive_allocate import PreemptiveAllocateOperator
from airflow_predictive.sensors.behavior_profiler import BehaviorProfilerSensor

INTERVAL = timedelta(minutes=config.get_int("interval_minutes"))

with DAG(
    dag_id="predictive_scaling",
    description="Forecast each capacity pool's demand and provision Compute Engine capacity ahead of it",
    schedule=INTERVAL,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A cycle that cannot finish before the next one is stale: its forecasts would start in the past.
    dagrun_timeout=INTERVAL * 3,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["predictive", "capacity"],
    doc_md=__doc__,
):
    profile = BehaviorProfilerSensor(
        task_id="profile",
        window=INTERVAL * 12,
        poke_interval=20,
        # Give up within the cycle: a cycle forecasts from the history it has rather than not at all.
        timeout=int(INTERVAL.total_seconds() * 0.6),
    )

    # Runs even when profiling failed (all_done): stale history still gives a better plan than none,
    # and the failed profile task stays red in the grid for a person to see.
    @task(trigger_rule="all_done")
    def series_chunks() -> list[list[str]]:
        """Split the demand series of the configured pools into chunks for the mapped forecast tasks.

        Only pools in the pools file are forecast when it exists: they are what the allocator acts on,
        and auto-ARIMA selection for queues nobody provisions would cost every cold start for nothing.
        """
        from airflow_predictive.operators.demand_forecast import series_chunks as chunk_series

        queue_pools = config.configured_queue_pools()
        return chunk_series(sorted(set(queue_pools.values())) if queue_pools else None)

    @task
    def pool_chunks() -> list[list[str]]:
        """Split the configured pools into chunks for the mapped allocate tasks."""
        from airflow_predictive.operators.preemptive_allocate import pool_chunks as chunk_pools

        return chunk_pools()

    chunks = series_chunks()
    forecast = DemandForecastOperator.partial(task_id="forecast", max_selections=20).expand(series_ids=chunks)
    # Provisioning is what the cycle is for: on a busy worker its tasks go before evaluate's.
    allocate = PreemptiveAllocateOperator.partial(task_id="allocate", priority_weight=10).expand(
        pools=pool_chunks()
    )
    evaluate = ForecastEvaluationOperator.partial(task_id="evaluate", trigger_rule="all_done").expand(
        series_ids=chunks
    )
    # all_done: a chunk that failed loses this window's scores (its task stays red), rather than holding
    # the window open so that every chunk re-scores a growing window each cycle.
    close_evaluation = CloseFeedbackCycleOperator(
        task_id="close_evaluation", forecast_task_id="forecast", trigger_rule="all_done"
    )

    profile >> chunks
    forecast >> [allocate, evaluate]
    [allocate, evaluate] >> close_evaluation

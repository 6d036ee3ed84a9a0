"""One profiling refresh: stored runs and samples -> demand series, queue pressure and summaries.

Used by the sensor (after each ingest), the ``airflow-predictive profile`` command and the demo
history, so real and generated history go through the same builder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.stores import ProfileRefreshStore
from airflow_predictive.profiling.demand_series import align, build_demand, build_queue_pressure
from airflow_predictive.profiling.queue_wait import queue_waits, recent_wait_stats, wait_stats
from airflow_predictive.profiling.summaries import compute_summaries
from airflow_predictive.runtime.task_history import coverage

log = logging.getLogger(__name__)

# Runs that started this long before a window can still overlap it.
LOOKBACK = timedelta(days=1)
# The trailing windows the queue-wait summary reports (the feedback loop judges the hour).
WAIT_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1)}


def refresh_profile(
    store: ProfileRefreshStore,
    *,
    interval: timedelta,
    start: datetime | None = None,
    end: datetime | None = None,
    queue_pools: Mapping[str, str] | None = None,
    pools: Sequence[str] | None = None,
    collector_name: str = "default",
    summary_days: int = 28,
    now: datetime | None = None,
    with_summaries: bool = True,
) -> dict[str, Any]:
    """Rebuild the demand series of ``[start, end)`` and the behaviour summaries; return a small summary.

    :param store: the ProfileStore.
    :param start: first bucket (default: ``end`` minus ``summary_days``).
    :param end: end of the last bucket (default: the end of the profiler's coverage, else now);
        only complete buckets are written.
    :param interval: bucket width (the shell passes ``[predictive] interval_minutes``).
    :param queue_pools: ``{queue: pool}`` from the pools configuration.
    :param pools: pools to include even without runs.
    :param collector_name: whose coverage marks the observed time (no coverage recorded: all observed).
    :param summary_days: history the summaries and queue pressure look at.
    :param now: the current time (still-running runs count until then).
    :param with_summaries: also recompute the behaviour summaries.
    """
    now = now or datetime.now(UTC)
    observed = coverage(store, collector_name) or None
    if end is None:
        end = min(observed[-1][1], now) if observed else now
    end = align(end, interval)  # the bucket in progress is incomplete: leave it out
    start = align(start or end - timedelta(days=summary_days), interval)
    if start >= end:
        return {"buckets": 0, "series": 0, "start": start.isoformat(), "end": end.isoformat()}
    history_start = min(start, end - timedelta(days=summary_days))
    runs = store.task_runs(start=history_start - LOOKBACK, end=end)
    samples = store.usage_samples(start=start - LOOKBACK, end=end + interval)
    # A try that never started (still queued) counts from its queued time.
    began = runs["start_date"].fillna(runs["queued_at"]) if len(runs) else None
    demand = build_demand(
        runs[began < pd.Timestamp(end)] if len(runs) else runs,
        samples,
        start=start,
        end=end,
        interval=interval,
        queue_pools=queue_pools,
        coverage=observed,
        pools=pools,
        now=now,
    )
    written = store.write_demand(demand) if len(demand) else 0
    result: dict[str, Any] = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "interval_minutes": interval.total_seconds() / 60,
        "series": int(demand["series_id"].nunique()) if len(demand) else 0,
        "rows": written,
        "gap_rows": int(demand["value"].isna().sum()) if len(demand) else 0,
        "task_runs": int(len(runs)),
        "usage_samples": int(len(samples)),
    }
    if with_summaries:
        dag_runs = store.dag_runs(start=history_start - LOOKBACK, end=end)
        recent = runs[began >= pd.Timestamp(history_start)] if len(runs) else runs
        for kind, payloads in compute_summaries(recent, dag_runs, queue_pools).items():
            store.put_summaries(kind, payloads)
        pressure = build_queue_pressure(
            recent,
            start=end - timedelta(days=min(summary_days, 7)),
            end=end,
            interval=interval,
            queue_pools=queue_pools,
            coverage=observed,
            now=now,
        )
        waits = queue_waits(recent, start=end - timedelta(days=1), end=end, queue_pools=queue_pools)
        recent_waits = recent_wait_stats(waits, end=end, windows=WAIT_WINDOWS)
        store.put_summaries("queue_pressure", _pressure_payloads(pressure, interval, recent_waits))
        result["summaries"] = {"users": int(dag_runs["triggered_by"].nunique()) if len(dag_runs) else 0}
    return result


def _pressure_payloads(
    pressure: pd.DataFrame, interval: timedelta, recent_waits: Mapping[str, Any]
) -> dict[str, Any]:
    payloads = {}
    for pool, group in pressure.groupby("pool", sort=True):

        def col(name: str, group: pd.DataFrame = group) -> list[float | None]:
            return [None if pd.isna(v) else round(float(v), 3) for v in group[name]]

        waits = group["wait_mean_s"].dropna()
        payloads[pool] = {
            "pool": pool,
            "interval_minutes": interval.total_seconds() / 60,
            "ts": [t.isoformat() for t in group["ts"]],
            "queued_tasks": col("queued_tasks"),
            "wait_mean_s": col("wait_mean_s"),
            "wait_max_s": col("wait_max_s"),
            "wait_p90_s": round(float(waits.quantile(0.9)), 3) if len(waits) else None,
            # per try, not per bucket: p50/p95/max and the share that waited long, last hour and day
            "queue_wait": recent_waits.get(pool, {label: wait_stats([]) for label in WAIT_WINDOWS}),
        }
    return payloads

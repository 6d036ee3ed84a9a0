"""One profiler poke: ingest what is new, then tell whether the profiling window is complete.

The window ``[start, end)`` is complete once an ingest pass has seen the API server's clock at or past
``end``: every task try that started in the window is then stored, finished or recorded as running.
A complete window gets its demand series and the behaviour summaries rebuilt.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.airflow_api import ApiClient
from airflow_predictive.contracts.stores import ProfilerStore
from airflow_predictive.runtime.profile_refresh import refresh_profile
from airflow_predictive.runtime.task_history import TaskHistoryCollector


def profile_window(
    client: ApiClient,
    store: ProfilerStore,
    *,
    start: datetime,
    end: datetime,
    queue_pools: Mapping[str, str] | None = None,
    interval: timedelta,
    collector_name: str = "default",
    settle: timedelta = timedelta(seconds=0),
    restate: timedelta = timedelta(hours=6),
) -> dict[str, Any]:
    """Ingest once; if the window is complete, rebuild its demand and return a compact summary.

    :param client: the REST API client (an ``AirflowApiClient``).
    :param store: the ProfileStore.
    :param start: window start.
    :param end: window end (usually the DAG run's data interval end).
    :param queue_pools: ``{queue: pool}``.
    :param collector_name: names the watermark and the coverage.
    :param interval: demand bucket width.
    :param settle: extra time past ``end`` before the window counts as complete (late commits).
    :param restate: also rebuild the demand of this much time before the window: the worker
        listener reports a try's usage when the try ends, so earlier buckets improve later.
    """
    result = TaskHistoryCollector(client, store, name=collector_name).collect()
    summary: dict[str, Any] = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "ingested": result.as_dict(),
        "complete": bool(result.until and result.until >= end + settle),
    }
    if not summary["complete"]:
        return summary
    runs = store.task_runs(start=start, end=end)
    in_window = runs[(runs["start_date"] >= pd.Timestamp(start)) & (runs["start_date"] < pd.Timestamp(end))]
    dag_runs = store.dag_runs(start=start, end=end)
    refreshed = refresh_profile(
        store,
        start=min(start, end - restate),
        end=max(end, start + interval),
        interval=interval,
        queue_pools=queue_pools,
        collector_name=collector_name,
        now=result.until,
    )
    summary.update(
        {
            "task_runs": int(len(in_window)),
            "running": int(in_window["end_date"].isna().sum()),
            "failed": int((in_window["state"] == "failed").sum()),
            "dag_runs": int(len(dag_runs)),
            "users": sorted(dag_runs["triggered_by"].dropna().unique().tolist()) if len(dag_runs) else [],
            "queues": sorted(in_window["queue"].dropna().unique().tolist()),
            "demand_rows": refreshed.get("rows", 0),
        }
    )
    return summary

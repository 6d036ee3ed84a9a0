"""Queue wait per pool: how long tries waited in the queue for a worker slot (queued to started).

Queue wait is what a user of a pool feels when capacity is short, and what Airflow's own autoscalers
react to. Each try with both a ``queued_at`` and a ``start_date`` waited ``start_date - queued_at``;
a try still queued is not in the task history until it starts (the profiler reads finished and
running tries), so a wait counts once it ends. Deferred tries resumed by the triggerer are queued
again: each try counts once, from its last queued time.

:func:`queue_waits` lists the waits; :func:`wait_stats` summarises them (p50, p95, max, the share of
tries that waited longer than :data:`LONG_WAIT_SECONDS`), per pool and window. The profile refresh
stores the summaries and the feedback loop judges a pool's queue-wait service level on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.profiling.demand_series import pool_for_queue

# A try that waited longer than this waited for capacity, not for the scheduler's loop: the share of
# such tries is the live benchmark's headline too.
LONG_WAIT_SECONDS = 30.0

WAIT_COLUMNS = ["pool", "started", "wait_s"]


def queue_waits(
    task_runs: pd.DataFrame,
    *,
    start: datetime,
    end: datetime,
    queue_pools: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The wait of every try that started in ``[start, end)``: ``pool, started, wait_s``.

    :param task_runs: ``ProfileStore.task_runs()`` rows (``queue``, ``queued_at``, ``start_date``).
    :param start: first start counted.
    :param end: starts from here on are not counted.
    :param queue_pools: ``{queue: pool}`` from the pools configuration.
    """
    if task_runs.empty or "queued_at" not in task_runs:
        return pd.DataFrame(
            {
                "pool": pd.Series(dtype=str),
                "started": pd.Series(dtype="datetime64[ns, UTC]"),
                "wait_s": pd.Series(dtype=float),
            }
        )
    runs = task_runs[task_runs["queued_at"].notna() & task_runs["start_date"].notna()]
    started = pd.to_datetime(runs["start_date"], utc=True)
    runs = runs[(started >= pd.Timestamp(start)) & (started < pd.Timestamp(end))]
    started = pd.to_datetime(runs["start_date"], utc=True)
    wait = (started - pd.to_datetime(runs["queued_at"], utc=True)).dt.total_seconds().clip(lower=0.0)
    pools = [pool_for_queue(q, queue_pools) for q in runs["queue"]]
    return pd.DataFrame({"pool": pools, "started": started.to_numpy(), "wait_s": wait.to_numpy(float)})


def wait_stats(waits: pd.Series | np.ndarray) -> dict[str, Any]:
    """``tasks, wait_p50_s, wait_p95_s, wait_max_s, waited_long_share`` of some waits (None when none).

    :param waits: waits in seconds.
    """
    values = np.asarray(waits, dtype=float)
    if len(values) == 0:
        return {
            "tasks": 0,
            "wait_p50_s": None,
            "wait_p95_s": None,
            "wait_max_s": None,
            "waited_long_share": None,
        }
    return {
        "tasks": int(len(values)),
        "wait_p50_s": round(float(np.quantile(values, 0.5)), 3),
        "wait_p95_s": round(float(np.quantile(values, 0.95)), 3),
        "wait_max_s": round(float(values.max()), 3),
        "waited_long_share": round(float((values > LONG_WAIT_SECONDS).mean()), 4),
    }


def recent_wait_stats(waits: pd.DataFrame, *, end: datetime, windows: Mapping[str, Any]) -> dict[str, dict]:
    """Per pool, :func:`wait_stats` over each trailing window: ``{pool: {"1h": {...}, "24h": {...}}}``.

    :param waits: :func:`queue_waits` rows.
    :param end: the windows end here.
    :param windows: ``{label: timedelta}``.
    """
    out: dict[str, dict] = {}
    for pool, group in waits.groupby("pool", sort=True):
        started = pd.to_datetime(group["started"], utc=True)
        out[pool] = {
            label: wait_stats(group["wait_s"][started >= pd.Timestamp(end) - span])
            for label, span in windows.items()
        }
    return out

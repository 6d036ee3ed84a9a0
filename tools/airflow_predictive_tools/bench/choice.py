"""``airflow-predictive bench choice``: what the daily service-level choice adds to a control-loop cycle.

Seeds a throw-away SQLite profile store with ``--pools`` pools, each with five days of 5-minute CPU
demand (a daily cycle with bursts) and a forecast issued every 5 minutes over the last 48 hours (the
store trims superseded issues to its kept lead times, as in production), then times
:func:`~airflow_predictive.runtime.service_level_choice.choose_for_pools` one pool at a time: reading
the pool's demand and issued forecasts, replaying them through the planner under every candidate and
choosing. The JSON gives the median seconds per pool and what that costs a cycle at 1,000 series:
:func:`~airflow_predictive.runtime.service_level_choice.due_pools` spreads a day's choices over the
day's cycles, so a cycle chooses for ``ceil(pools x 5 min / 1 day)`` pools. Wall and CPU seconds
are both reported: on the shared machine the wall time moves with the load.

With ``--tries-per-day N`` each pool also promises a queue-wait p95 and holds ``N`` task tries a day
in the store's task history, which the choice reads and replays through every candidate's worker
slots (:mod:`airflow_predictive.simulation.task_queue`).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, quantile_column
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.runtime import service_level_choice as choice
from airflow_predictive.simulation.choice import CANDIDATES
from airflow_predictive.store import ProfileStore

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
INTERVAL = timedelta(minutes=5)


def _pool(name: str, queue_wait: bool = False) -> CapacityPool:
    return CapacityPool(
        name=name,
        project="bench-project",
        zone="us-central1-a",
        machine_type="n2-standard-8",
        max_instances=40,
        lead_time_minutes={"boot": 5},
        service_level={"queue_wait_p95_seconds": 120} if queue_wait else "match_reactive",
    )


def _seed_tries(store: ProfileStore, pool: str, per_day: int, seed: int) -> None:
    """``per_day`` tries a day of the pool's queue over the replayed window, queued at uniform random
    times, each picked up 1-10 s later and running 1-30 minutes; and the fleet the allocation cycle
    recorded the pool holding every 5 minutes (40 instances' slots), which the choice replays the
    tries on to measure Airflow's pickup."""
    rng = np.random.default_rng(seed)
    start = NOW - timedelta(days=2, hours=1)
    n = round(per_day * (NOW - start) / timedelta(days=1))
    queued = start + pd.to_timedelta(np.sort(rng.uniform(0, (NOW - start).total_seconds(), n)), unit="s")
    runs = pd.to_timedelta(rng.uniform(60, 1800, n), unit="s")
    pickups = pd.to_timedelta(rng.uniform(1, 10, n), unit="s")
    store.upsert_task_runs(
        {"dag_id": "bench", "run_id": f"{pool}-{i}", "task_id": "t", "state": "success", "queue": pool}
        | {"queued_at": q, "start_date": q + p, "end_date": q + p + r}
        for i, (q, p, r) in enumerate(zip(queued, pickups, runs, strict=True))
    )
    slots = 40 * _pool(pool).slots
    held = pd.date_range(start - timedelta(minutes=5), NOW, freq=INTERVAL)
    store.record_capacity({"pool": pool, "resource": "slots", "ts": t, "value": float(slots)} for t in held)


def _seed(store: ProfileStore, pool: str, seed: int) -> None:
    """A steady-state pool: five days of demand (the two replayed, and the three before that the
    seasonal-naive baseline reads) and two of issued forecasts (a noisy copy of what followed)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(NOW - timedelta(days=2, hours=1), NOW, freq=INTERVAL, inclusive="left")
    values = _daily_cycle(ts, rng)
    sid = f"pool={pool}/resource=cpu"
    store.write_demand(pd.DataFrame({"series_id": sid, "ts": ts, "value": values}))
    # the days before, drawn apart so the replayed days are the same with or without them
    before = pd.date_range(NOW - timedelta(days=5, hours=1), ts[0], freq=INTERVAL, inclusive="left")
    earlier = _daily_cycle(before, np.random.default_rng(seed + 10_000))
    store.write_demand(pd.DataFrame({"series_id": sid, "ts": before, "value": earlier}))
    rows = []
    for i in range(len(ts) - 48 * 12, len(ts)):
        for lead in range(12):
            value = float(values[min(i + lead, len(ts) - 1)] * rng.normal(1.0, 0.1))
            row = {"series_id": sid, "issued_at": ts[i], "ts": ts[i] + lead * INTERVAL, "mean": value}
            row.update({"model": "bench", "fallback": ""})
            row.update({quantile_column(q): value * (1 + 0.2 * (q - 0.5)) for q in DEFAULT_QUANTILES})
            rows.append(row)
    store.write_forecasts(pd.DataFrame(rows))


def _daily_cycle(ts: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """20-100 vCPUs over the day, with one-step bursts of +50% in 5% of the steps."""
    hours = (ts - (NOW - timedelta(days=2, hours=1))).total_seconds().to_numpy() / 3600
    return (60 - 40 * np.cos(2 * np.pi * hours / 24)) * (1 + 0.5 * (rng.random(len(ts)) < 0.05))


def run(pools: int, loop_cycle_seconds: float, tries_per_day: int = 0) -> dict[str, Any]:
    """Seed, time one choice per pool, and extrapolate to a cycle at 1,000 series.

    :param pools: pools to time (each one cpu series).
    :param loop_cycle_seconds: the control loop's cycle at 1,000 series to compare with.
    :param tries_per_day: task tries a day per pool, whose queue wait the choice replays (0: none,
        and no queue-wait level).
    """
    if pools < 1:
        raise ValueError("--pools must be at least 1")
    if tries_per_day < 0:
        raise ValueError("--tries-per-day must be 0 or more")
    with tempfile.TemporaryDirectory() as tmp:
        store = ProfileStore.sqlite(Path(tmp) / "bench.db")
        try:
            configured = [_pool(f"bench-{i}", queue_wait=tries_per_day > 0) for i in range(pools)]
            for i, pool in enumerate(configured):
                _seed(store, pool.name, i)
                if tries_per_day:
                    _seed_tries(store, pool.name, tries_per_day, i)
            seconds, cpu, chosen = [], [], []
            for pool in configured:
                started, started_cpu = time.perf_counter(), time.process_time()
                made = choice.choose_for_pools(store, [pool], now=NOW, interval=INTERVAL)
                seconds.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
                chosen.append(made[pool.name].candidate if pool.name in made else None)
        finally:
            store.dispose()
    per_pool, per_pool_cpu = statistics.median(seconds), statistics.median(cpu)
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "pools_timed": pools,
        "tries_per_day": tries_per_day,
        "candidates": [c.name for c in CANDIDATES],
        "seconds_per_pool": [round(s, 3) for s in seconds],
        "cpu_seconds_per_pool": [round(s, 3) for s in cpu],
        "median_seconds_per_pool": round(per_pool, 3),
        "median_cpu_seconds_per_pool": round(per_pool_cpu, 3),
        "chosen": chosen,
        "loop_cycle_seconds_at_1000_series": loop_cycle_seconds,
        "per_cycle_at_1000_series": {},
    }
    # 1,000 series: 250 pools of 4 resources (the loop benchmark's layout), or 1,000 one-series pools.
    for label, n in (("250 pools x 4 series", 250), ("1000 pools x 1 series", 1000)):
        due = max(1, math.ceil(n * (INTERVAL / choice.CHOICE_EVERY)))
        out["per_cycle_at_1000_series"][label] = {
            "pools_per_cycle": due,
            "seconds": round(due * per_pool, 2),
            "cpu_seconds": round(due * per_pool_cpu, 2),
            "share_of_cycle": round(due * per_pool / loop_cycle_seconds, 4),
            "cpu_share_of_cycle": round(due * per_pool_cpu / loop_cycle_seconds, 4),
        }
    return out

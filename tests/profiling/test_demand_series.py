"""Demand series builder: overlap weighting, precedence of usage sources, pools, gaps, queue pressure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.profiling.demand_series import (
    build_demand,
    build_queue_pressure,
    pool_for_queue,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def run(task_id: str, start_min: float, end_min: float | None, queue: str = "etl", **extra) -> dict:
    row = {
        "dag_id": "d",
        "run_id": "r",
        "task_id": task_id,
        "map_index": -1,
        "try_number": 1,
        "state": "success" if end_min is not None else "running",
        "queue": queue,
        "queued_at": T0 + timedelta(minutes=start_min) - timedelta(seconds=30),
        "start_date": T0 + timedelta(minutes=start_min),
        "end_date": None if end_min is None else T0 + timedelta(minutes=end_min),
        "hints": None,
        "cpu_mean": None,
        "rss_peak_mb": None,
        "write_bytes": None,
        "net_bytes": None,
    }
    row.update(extra)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for column in ("queued_at", "start_date", "end_date"):
        df[column] = pd.to_datetime(df[column], utc=True)
    return df


def values(demand: pd.DataFrame, series: str) -> list[float]:
    return demand[demand["series_id"] == series]["value"].round(6).tolist()


def test_demand_is_the_overlap_weighted_sum_of_runs_per_bucket() -> None:
    runs = frame(
        [
            # 2 vCPU for 2.5 minutes of the first bucket, then nothing.
            run("a", 2.5, 5, hints=json.dumps({"cpus": 2, "ram": 2048})),
            # 1 vCPU across buckets 0-1 fully and half of bucket 2.
            run("b", 0, 12.5, hints=json.dumps({"cpus": 1, "ram": 1024})),
        ]
    )
    demand = build_demand(runs, start=T0, end=T0 + 4 * FIVE, interval=FIVE)
    assert values(demand, "pool=etl/resource=cpu") == [2.0, 1.0, 0.5, 0.0]
    assert values(demand, "pool=etl/resource=memory") == [2.0, 1.0, 0.5, 0.0]
    assert demand["ts"].min() == pd.Timestamp(T0)


def test_samples_win_over_aggregates_over_hints_over_defaults() -> None:
    runs = frame(
        [
            run("sampled", 0, 5, hints=json.dumps({"cpus": 8}), cpu_mean=4.0),
            run("aggregated", 5, 10, hints=json.dumps({"cpus": 8}), cpu_mean=3.0, rss_peak_mb=2048),
            run("hinted", 10, 15, hints=json.dumps({"cpus": 6, "ram": 512})),
            run("bare", 15, 20),
        ]
    )
    samples = pd.DataFrame(
        [
            {
                "dag_id": "d",
                "run_id": "r",
                "task_id": "sampled",
                "map_index": -1,
                "try_number": 1,
                "ts": T0 + timedelta(minutes=m),
                "hostname": "h1",
                "cpu_cores": 1.5,
                "rss_mb": 1024.0,
                "read_bytes": 0.0,
                "write_bytes": 0.0,
                "net_bytes": 0.0,
            }
            for m in (1, 2, 3, 4, 5)
        ]
    )
    samples["ts"] = pd.to_datetime(samples["ts"], utc=True)
    demand = build_demand(runs, samples, start=T0, end=T0 + 4 * FIVE, interval=FIVE)
    # samples (1.5) > aggregate (3.0) > hints (6) > default (1 vCPU)
    assert values(demand, "pool=etl/resource=cpu") == [1.5, 3.0, 6.0, 1.0]
    assert values(demand, "pool=etl/resource=memory") == [1.0, 2.0, 0.5, 0.5]


def test_network_bytes_of_one_host_are_split_between_its_concurrent_tasks() -> None:
    runs = frame([run("x", 0, 5), run("y", 0, 5)])
    rows = []
    for task in ("x", "y"):
        for m in (1, 2, 3, 4, 5):
            rows.append(
                {
                    "dag_id": "d",
                    "run_id": "r",
                    "task_id": task,
                    "map_index": -1,
                    "try_number": 1,
                    "ts": T0 + timedelta(minutes=m),
                    "hostname": "worker-1",
                    "cpu_cores": 0.1,
                    "rss_mb": 10.0,
                    "read_bytes": 0.0,
                    "write_bytes": 0.0,
                    # the HOST moved 60 MB per minute = 8 Mbit/s; both tasks report it
                    "net_bytes": 60e6,
                }
            )
    samples = pd.DataFrame(rows)
    samples["ts"] = pd.to_datetime(samples["ts"], utc=True)
    demand = build_demand(runs, samples, start=T0, end=T0 + FIVE, interval=FIVE)
    assert values(demand, "pool=etl/resource=network") == [pytest.approx(8.0)]


def test_queues_map_to_pools_and_unknown_queues_keep_a_valid_name() -> None:
    runs = frame(
        [run("a", 0, 5, queue="gpu"), run("b", 0, 5, queue="Team A/Heavy"), run("c", 0, 5, queue=None)]
    )
    demand = build_demand(
        runs, start=T0, end=T0 + FIVE, interval=FIVE, queue_pools={"gpu": "gpu-pool"}, pools=["spare"]
    )
    pools = sorted({s.split("/")[0] for s in demand["series_id"]})
    assert pools == ["pool=default", "pool=gpu-pool", "pool=spare", "pool=team-a-heavy"]
    assert values(demand, "pool=spare/resource=cpu") == [0.0]
    assert pool_for_queue("  ") == "default"


def test_time_outside_the_profilers_coverage_is_a_gap_not_zero() -> None:
    runs = frame([run("a", 0, 20, hints=json.dumps({"cpus": 1}))])
    coverage = [(T0, T0 + 2 * FIVE), (T0 + 3 * FIVE, T0 + 4 * FIVE)]
    demand = build_demand(runs, start=T0, end=T0 + 4 * FIVE, interval=FIVE, coverage=coverage)
    cpu = demand[demand["series_id"] == "pool=etl/resource=cpu"]["value"].tolist()
    assert cpu[:2] == [1.0, 1.0] and np.isnan(cpu[2]) and cpu[3] == 1.0


def test_a_running_task_counts_until_now_only() -> None:
    runs = frame([run("a", 0, None, hints=json.dumps({"cpus": 2}))])
    demand = build_demand(runs, start=T0, end=T0 + 2 * FIVE, interval=FIVE, now=T0 + timedelta(minutes=7.5))
    assert values(demand, "pool=etl/resource=cpu") == [2.0, 1.0]


def test_queue_pressure_reports_waiting_tasks_and_their_waits() -> None:
    rows = [run("a", 4, 6), run("b", 9, 10)]
    rows[0]["queued_at"] = T0 + timedelta(minutes=1.5)  # waited 150 s, half of bucket 0 waiting
    pressure = build_queue_pressure(frame(rows), start=T0, end=T0 + 2 * FIVE, interval=FIVE)
    assert pressure["queued_tasks"].round(3).tolist() == [0.5, 0.1]
    assert pressure["wait_mean_s"].tolist() == [150.0, 30.0]
    assert pressure["started"].tolist() == [1.0, 1.0]


def test_slots_are_the_peak_of_a_bucket_so_a_short_fan_out_needs_its_width() -> None:
    """Thirty one-minute tries queued at once need thirty slots: a five-minute mean would say six."""
    rows = [run(f"t{i}", 1 + (i // 10) * 0.5, 2 + (i // 10) * 0.5) for i in range(30)]
    for row in rows:
        row["queued_at"] = T0 + timedelta(minutes=1)
    # back to back on one slot: one ends as the next starts, never two at once
    rows += [run(t, a, b, queue="io", queued_at=None) for t, a, b in (("x", 5, 6), ("y", 6, 7), ("z", 7, 10))]
    demand = build_demand(frame(rows), start=T0, end=T0 + 2 * FIVE, interval=FIVE)

    assert values(demand, "pool=etl/resource=slots") == [30.0, 0.0]
    assert values(demand, "pool=etl/resource=cpu") == [6.0, 0.0]  # usage stays a time-weighted mean
    assert values(demand, "pool=io/resource=slots") == [0.0, 1.0]


def test_slots_count_each_tries_pool_slots_while_queued_and_running_and_gaps_stay_gaps() -> None:
    rows = [
        # 2 slots: queued 09:00-09:02:30 (half of bucket 0), running until 09:07:30
        run("a", 2.5, 7.5, pool_slots=2),
        # default 1 slot: queued 09:05-09:15 (bucket 1, then the unobserved bucket 2), running 09:15-09:20
        run("b", 15, 20, pool_slots=None),
        # no queued time recorded (older history): only its running time counts, 3 slots in another pool
        run("c", 0, 5, queue="io", pool_slots=3, queued_at=None),
    ]
    rows[0]["queued_at"] = T0
    rows[1]["queued_at"] = T0 + FIVE
    coverage = [(T0, T0 + 2 * FIVE), (T0 + 3 * FIVE, T0 + 4 * FIVE)]
    demand = build_demand(frame(rows), start=T0, end=T0 + 4 * FIVE, interval=FIVE, coverage=coverage)

    etl = values(demand, "pool=etl/resource=slots")
    # bucket 0: a waits, then runs, with 2 slots throughout; bucket 1: a still runs (2) while b waits (1)
    assert etl[:2] == [2.0, 3.0] and np.isnan(etl[2]) and etl[3] == 1.0
    io = values(demand, "pool=io/resource=slots")
    assert io[:2] == [3.0, 0.0] and np.isnan(io[2]) and io[3] == 0.0
    # the same tries' cpu: only while running (1 vCPU each by default), so slots are not cpu renamed
    cpu = values(demand, "pool=etl/resource=cpu")
    assert cpu[:2] == [0.5, 0.5] and np.isnan(cpu[2]) and cpu[3] == 1.0
    assert sorted(demand["series_id"].unique()) == [
        f"pool={p}/resource={r}"
        for p in ("etl", "io")
        for r in ("cpu", "memory", "network", "slots", "storage")
    ]

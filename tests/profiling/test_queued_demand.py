"""Work waiting in the queue is demand: a pool at zero workers scales out for tries that never started.

User-triggered runs are not known in advance: their tasks queue on a pool that may have no worker at all,
and they never start until one boots. The profiler records such a try with no start (replaced when it
starts), the ``slots`` series counts it from its queued time until ``now`` (Airflow's KEDA rule counts
queued and running tasks), and the planner's reactive rule launches workers for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from airflow_predictive.contracts.capacity import PoolState
from airflow_predictive.contracts.demand import RESOURCES, series_id
from airflow_predictive.planning.planner import plan as make_plan
from airflow_predictive.profiling.demand_series import build_demand, build_queue_pressure
from airflow_predictive.runtime.profile_refresh import refresh_profile
from airflow_predictive.runtime.task_history import TaskHistoryCollector, coverage
from tests.allocation.test_planner import make_pool
from tests.profiling.test_collector_faults import FakeAirflow, client_for

QUEUED = datetime(2026, 3, 2, 12, 1, tzinfo=UTC)  # six tasks queued at 12:01 on a pool with no worker
NOW = datetime(2026, 3, 2, 12, 7, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def queued_ti(task_id: str, **extra) -> dict:
    """A task instance queued on ``etl`` that no worker has picked up: no start, no end, no duration."""
    item = {
        "dag_id": "adhoc",
        "dag_run_id": "manual__1",
        "task_id": task_id,
        "map_index": -1,
        "try_number": 1,
        "state": "queued",
        "queue": "etl",
        "pool": "default_pool",
        "pool_slots": 1,
        "operator": "PythonOperator",
        "hostname": "",
        "queued_when": QUEUED.isoformat(),
        "start_date": None,
        "end_date": None,
        "duration": None,
    }
    item.update(extra)
    return item


def collect(store, tis: list[dict], clock: datetime):
    api = FakeAirflow(tis, [])
    api.clock = clock
    return TaskHistoryCollector(client_for(api, page_size=10), store).collect()


def test_a_queued_try_is_recorded_without_a_start_then_replaced_when_it_starts(any_store) -> None:
    first = collect(any_store, [queued_ti("t")], NOW)
    assert first.queued == 1 and first.running == 0 and not first.skipped
    runs = any_store.task_runs(start=NOW - timedelta(hours=1), end=NOW)
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["state"] == "queued" and pd.isna(row["start_date"]) and pd.isna(row["end_date"])
    assert pd.isna(row["duration"]) and row["queued_at"] == pd.Timestamp(QUEUED)
    # the first pass observes from the hour the try was queued in: its bucket is not a gap
    assert coverage(any_store) == [(datetime(2026, 3, 2, 12, 0, tzinfo=UTC), NOW)]
    # still waiting long after it was queued: a later window still returns it
    assert len(any_store.task_runs(start=NOW + timedelta(hours=3), end=NOW + timedelta(hours=4))) == 1

    started = NOW + timedelta(minutes=2)
    running = queued_ti("t", state="running", start_date=started.isoformat(), hostname="w1")
    second = collect(any_store, [running], NOW + timedelta(minutes=3))
    assert second.queued == 0 and second.running == 1
    runs = any_store.task_runs()
    assert len(runs) == 1  # the same try, replaced: not a second row
    assert runs.iloc[0]["state"] == "running" and runs.iloc[0]["start_date"] == pd.Timestamp(started)
    assert runs.iloc[0]["queued_at"] == pd.Timestamp(QUEUED)


def test_a_stale_queued_read_never_erases_the_start_the_listener_stored(any_store) -> None:
    # the pass read the try queued; the worker's listener stored it started before the pass wrote
    started = NOW + timedelta(minutes=1)
    listener_row = {
        "dag_id": "adhoc",
        "run_id": "manual__1",
        "task_id": "t",
        "map_index": -1,
        "try_number": 1,
        "state": "running",
        "queue": "etl",
        "start_date": started,
    }
    any_store.upsert_task_runs([listener_row])
    collect(any_store, [queued_ti("t"), queued_ti("other")], NOW + timedelta(minutes=2))
    runs = any_store.task_runs().set_index("task_id")
    assert runs.loc["t", "start_date"] == pd.Timestamp(started) and runs.loc["t", "state"] == "running"
    assert pd.isna(runs.loc["other", "start_date"]) and runs.loc["other", "state"] == "queued"


def test_a_try_failed_in_the_queue_replaces_the_queued_record_and_stops_waiting(store) -> None:
    collect(store, [queued_ti("t")], NOW)
    failed_at = NOW + timedelta(minutes=10)
    collect(store, [queued_ti("t", state="failed", end_date=failed_at.isoformat())], failed_at)
    runs = store.task_runs()
    assert len(runs) == 1 and runs.iloc[0]["state"] == "failed" and pd.isna(runs.iloc[0]["start_date"])
    later = failed_at + timedelta(minutes=20)
    demand = build_demand(runs, start=QUEUED, end=later, interval=FIVE, now=later)
    slots = demand[demand["series_id"] == series_id("etl", "slots")]["value"].tolist()
    # waited 12:01 -> 12:17, then nothing: not "still queued" until now
    assert slots == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_six_queued_tasks_on_a_pool_with_no_worker_show_six_slots_in_the_current_bucket(store) -> None:
    collect(store, [queued_ti(f"t{i}") for i in range(6)], NOW)
    runs = store.task_runs(start=NOW - timedelta(hours=1), end=NOW + FIVE)
    assert len(runs) == 6
    demand = build_demand(runs, start=NOW - timedelta(minutes=15), end=NOW, interval=FIVE, now=NOW)
    slots = demand[demand["series_id"] == series_id("etl", "slots")].set_index("ts")["value"]
    assert slots.tolist() == [0.0, 0.0, 6.0, 6.0]  # 11:50, 11:55, 12:00 (queued at 12:01), 12:05 (now 12:07)
    assert slots[pd.Timestamp("2026-03-02 12:05", tz="UTC")] == 6.0
    # a queued try uses nothing yet: no cpu, memory, storage or network
    for resource in ("cpu", "memory", "storage", "network"):
        assert demand[demand["series_id"] == series_id("etl", resource)]["value"].sum() == 0.0
    # queue pressure counts the same tries waiting, until the same now
    pressure = build_queue_pressure(runs, start=NOW - timedelta(minutes=15), end=NOW, interval=FIVE, now=NOW)
    assert pressure["queued_tasks"].round(6).tolist() == [0.0, 0.0, 4.8, 2.4]
    # and no duration statistics come from tries that never ran
    from airflow_predictive.profiling.summaries import compute_summaries

    assert compute_summaries(runs, store.dag_runs())["application"] == {}


def test_a_pool_at_zero_workers_gets_a_launch_for_queued_tasks_under_the_reactive_rule(store) -> None:
    # the profiler's pass, the refresh of the demand series, then the planner, as the cycles run them
    collect(store, [queued_ti(f"t{i}") for i in range(6)], NOW)
    refresh_profile(store, interval=FIVE, queue_pools={"etl": "etl"}, pools=["etl"], summary_days=1, now=NOW)
    ids = [series_id("etl", r) for r in RESOURCES]
    recent = store.demand(ids, start=NOW - timedelta(minutes=30), end=NOW + timedelta(seconds=1))
    assert recent[recent["series_id"] == series_id("etl", "slots")]["value"].dropna().tolist()[-1] == 6.0

    pool = make_pool(slots_per_instance=4, policy={"signal": "recent_demand"})
    result = make_plan(None, PoolState(), pool, NOW, recent_demand=recent)
    assert [str(a.kind) for a in result.actions] == ["launch_instances"]
    assert result.actions[0].amount == 2  # 6 queued tasks / 4 slots per worker
    assert result.summary["binding"] == "slots" and "slots" in result.actions[0].reason

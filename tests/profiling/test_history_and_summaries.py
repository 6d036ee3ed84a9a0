"""Demo history -> demand series (same builder as real data) shows a daily cycle; summaries learn habits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from airflow_predictive_tools.demo.history import generate_history

from airflow_predictive.profiling.summaries import hour_of_week, user_behaviour
from airflow_predictive.runtime.profile_refresh import refresh_profile

NOW = datetime(2026, 3, 30, 6, 0, tzinfo=UTC)  # a Monday: the history includes the month end
DAY = 288  # 5-minute buckets per day


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from airflow_predictive.store import ProfileStore

    store = ProfileStore.sqlite(tmp_path_factory.mktemp("history") / "profile.db")
    summary = generate_history(store, days=21, now=NOW, seed=11)
    refreshed = refresh_profile(store, interval=timedelta(minutes=5), now=NOW, end=NOW, summary_days=21)
    yield store, summary, refreshed
    store.dispose()


def _autocorrelation(values: np.ndarray, lag: int) -> float:
    x = values - values.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def test_demand_of_the_generated_history_has_a_daily_cycle(seeded) -> None:
    store, summary, refreshed = seeded
    assert summary["generated"] is True and summary["task_runs"] > 1000
    assert refreshed["gap_rows"] == 0
    demand = store.demand()
    for pool in ("analytics", "etl", "ml"):
        series = demand[demand["series_id"] == f"pool={pool}/resource=cpu"].set_index("ts")["value"]
        assert len(series) == 21 * DAY
        # hourly means smooth out the minute-level placement of individual runs
        hourly = series.resample("1h").mean().to_numpy()
        day_lag, half_day_lag = _autocorrelation(hourly, 24), _autocorrelation(hourly, 12)
        assert day_lag > 0.3, (pool, day_lag)
        assert day_lag > half_day_lag + 0.2, (pool, day_lag, half_day_lag)
    # office hours: the analytics pool is busy by day and idle at night
    analytics = demand[demand["series_id"] == "pool=analytics/resource=cpu"].set_index("ts")["value"]
    by_hour = analytics.groupby(analytics.index.hour).mean()
    assert by_hour.loc[10:16].mean() > 5 * by_hour.loc[[0, 1, 2, 3, 4, 22, 23]].mean()


def test_the_refresh_writes_a_slots_series_per_pool_from_queued_and_running_tries(seeded) -> None:
    store, _, refreshed = seeded
    demand = store.demand()
    start = NOW - timedelta(days=21)
    runs = store.task_runs(start=start - timedelta(days=1), end=NOW)
    for pool in ("analytics", "etl", "ml", "reporting"):
        slots = demand[demand["series_id"] == f"pool={pool}/resource=slots"].set_index("ts")["value"]
        assert len(slots) == 21 * DAY and not slots.isna().any()
        # every try holds its slot from its queued time to its end; a bucket holds the peak of them
        mine = runs[runs["queue"] == pool]
        held_from = mine["queued_at"].fillna(mine["start_date"]).to_numpy("datetime64[ns]")
        held_to = mine["end_date"].fillna(pd.Timestamp(NOW)).to_numpy("datetime64[ns]")
        hourly = slots.index[::12].to_numpy("datetime64[ns]")[:, None]
        at_bucket_start = ((held_from <= hourly) & (hourly < held_to)).sum(axis=1)
        overlapping = ((held_from < hourly + np.timedelta64(5, "m")) & (hourly < held_to)).sum(axis=1)
        peaks = slots.iloc[::12].to_numpy()
        assert (peaks >= at_bucket_start).all() and (peaks <= overlapping).all(), pool
        assert (peaks > at_bucket_start).any()  # tries that start inside a bucket count too
    assert refreshed["series"] == 4 * 5  # cpu, memory, storage, network, slots per pool


def test_summaries_learn_applications_timing_and_user_habits(seeded) -> None:
    store, _, _ = seeded
    users = store.summaries("users")
    assert set(users) == {"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}
    # the ML team builds features and then usually trains: the most frequent transition
    frank = users["frank"]["transitions"]["ml_feature_build"]
    assert max(frank, key=frank.get) == "ml_train"
    assert users["carol"]["weekday_share"] > 0.8
    app = store.summaries("application")["etl_nightly_warehouse.rebuild_partition"]
    assert app["duration_p50_s"] and 20 * 60 <= app["duration_p50_s"] <= 40 * 60
    assert app["cpu_p50"] <= app["cpu_p95"] <= 2.2
    timing = store.summaries("timing")
    assert set(timing["pool:analytics"]["peak_hours_utc"]) <= set(range(9, 18))
    assert len(timing["pool:etl"]["hour_of_week"]) == 168
    access = store.summaries("data_access")
    assert access["etl_hourly_ingest.load"]["assets_produced"] == {
        "warehouse.raw_events": pytest.approx(21 * 24, abs=1)
    }
    pressure = store.summaries("queue_pressure")
    assert set(pressure) == {"analytics", "etl", "ml", "reporting"}
    assert pressure["etl"]["wait_p90_s"] > 0


def test_user_transitions_are_counted_within_sessions_only() -> None:
    t = pd.Timestamp("2026-03-02 09:00", tz="UTC")
    runs = pd.DataFrame(
        {
            "dag_id": ["a", "b", "a", "b"],
            "triggered_by": ["u", "u", "u", "u"],
            "start_date": [
                t,
                t + pd.Timedelta("10min"),
                t + pd.Timedelta("1D"),
                t + pd.Timedelta("1D 20min"),
            ],
        }
    )
    result = user_behaviour(runs)["u"]
    assert result["transitions"] == {"a": {"b": 2}, "b": {"<end>": 2}}
    assert result["dags"] == {"a": 2, "b": 2}


def test_hour_of_week_puts_monday_midnight_first() -> None:
    profile = hour_of_week(pd.Series(pd.to_datetime(["2026-03-02 00:30", "2026-03-08 23:10"], utc=True)))
    assert profile[0] == 1.0 and profile[167] == 1.0 and sum(profile) == 2.0

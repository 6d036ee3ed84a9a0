"""Issue #20 item 4: a new pool's loop says what it waits for and when prediction starts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pandas as pd

from airflow_predictive.contracts.demand import series_id
from airflow_predictive.operators.demand_forecast import series_chunks
from airflow_predictive.runtime.learning import LEARNING, PREDICTING, WAITING_FOR_DEMAND, learning_state
from airflow_predictive.store import ProfileStore

NOW = datetime(2026, 12, 2, 13, 2, tzinfo=UTC)
POOL = "qs-etl"


def demand_since(store: ProfileStore, start: datetime, end: datetime = NOW) -> None:
    ts = pd.date_range(start, end, freq="5min", inclusive="left")
    store.write_demand(pd.DataFrame({"series_id": series_id(POOL, "cpu"), "ts": ts, "value": 0.6}))


def test_a_pool_without_a_closed_bucket_waits_for_the_one_open_now(tmp_path):
    store = ProfileStore.sqlite(tmp_path / "profile.db")
    state = learning_state(store, POOL, now=NOW)
    assert state.stage == WAITING_FOR_DEMAND
    assert state.next_bucket_closes == datetime(2026, 12, 2, 13, 5, tzinfo=UTC)
    assert "first closed 5-minute demand bucket" in state.message and "13:05 UTC" in state.message
    assert "Forecast and allocate skip" in state.message
    assert state.to_dict()["stage"] == "waiting_for_demand" and state.to_dict()["first_demand"] is None


def test_a_young_pool_learns_until_its_history_reaches_the_thresholds(tmp_path):
    store = ProfileStore.sqlite(tmp_path / "profile.db")
    first = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    demand_since(store, first)
    state = learning_state(store, POOL, now=NOW)
    assert state.stage == LEARNING and state.first_demand == first
    assert state.models_from == first + timedelta(days=2)  # the forecaster's short-history fallback
    assert state.plans_from == first + timedelta(days=1.5)  # the planner's daily-cycle check
    assert "short_history" in state.message and "2026-12-04 12:00 UTC" in state.message
    assert "reactive rule until at least 2026-12-04 00:00 UTC" in state.message


def test_a_pool_with_two_days_of_demand_is_predicting(tmp_path):
    store = ProfileStore.sqlite(tmp_path / "profile.db")
    demand_since(store, NOW - timedelta(days=5))
    assert learning_state(store, POOL, now=NOW).stage == PREDICTING
    young = ProfileStore.sqlite(tmp_path / "young.db")
    demand_since(young, NOW - timedelta(days=2, minutes=5))
    assert learning_state(young, POOL, now=NOW).stage == PREDICTING


def test_the_cycle_that_has_nothing_to_forecast_says_why_in_its_log(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__STORE_PATH", str(tmp_path / "profile.db"))
    with caplog.at_level(logging.INFO):
        assert series_chunks([POOL]) == []
    text = caplog.text
    assert f"pool {POOL}: waiting for its first closed 5-minute demand bucket" in text
    assert "forecast and allocate skip this cycle" in text

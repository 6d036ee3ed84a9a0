"""forecast_cycle against a real ProfileStore, and the operator under `airflow dags test`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from airflow_predictive_tools.bench.forecasting import generate_history

from airflow_predictive.forecasting.engine import Forecaster, forecast_cycle
from airflow_predictive.store import ProfileStore
from tests.airflow_harness import airflow_cli


def _seed(store: ProfileStore, end: datetime) -> list[str]:
    """One healthy 3-day series, one short series and one constant series, ending at ``end``."""
    healthy = generate_history(1, days=3, seed=3, end=end)
    healthy["series_id"] = "pool=etl/resource=cpu"
    ts = pd.date_range(end=end, periods=100, freq="5min")
    short = pd.DataFrame({"series_id": "pool=etl/resource=memory", "ts": ts, "value": np.linspace(1, 2, 100)})
    ts = pd.date_range(end=end, periods=864, freq="5min")
    flat = pd.DataFrame({"series_id": "pool=web/resource=cpu", "ts": ts, "value": 2.0})
    store.write_demand(pd.concat([healthy, short, flat]))
    return ["pool=etl/resource=cpu", "pool=etl/resource=memory", "pool=web/resource=cpu"]


def test_cycle_selects_once_then_forecasts_warm_and_reselects_when_flagged(store):
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    ids = _seed(store, now)
    forecaster = Forecaster(select_workers=0)
    first = forecast_cycle(store, ids, now=now, forecaster=forecaster)
    assert first["selected"] == ["pool=etl/resource=cpu"] and first["errors"] == {}
    assert first["fallbacks"] == {
        "pool=etl/resource=memory": "short_history:recent_level",
        "pool=web/resource=cpu": "constant:constant",
    }
    stored = store.model_states(ids)
    assert (
        list(stored) == ["pool=etl/resource=cpu"] and stored["pool=etl/resource=cpu"]["model"] == "auto_arima"
    )
    latest = store.latest_forecasts(ids)
    assert latest.groupby("series_id").size().to_dict() == dict.fromkeys(ids, 288)

    later = now + timedelta(minutes=5)
    second = forecast_cycle(store, ids, now=later, forecaster=forecaster, refit_fraction=1.0)
    assert second["selected"] == [] and second["refit"] == ["pool=etl/resource=cpu"]
    assert store.latest_forecasts(ids)["issued_at"].min() == pd.Timestamp(later)

    store.mark_reselect(["pool=etl/resource=cpu"])
    third = forecast_cycle(store, ids, now=later + timedelta(minutes=5), forecaster=forecaster)
    assert third["selected"] == ["pool=etl/resource=cpu"]
    assert not store.model_states(ids)["pool=etl/resource=cpu"]["needs_reselect"]


def test_operator_forecasts_mapped_chunks_under_airflow_dags_test(airflow_db, tmp_path):
    store_path = tmp_path / "profile.db"
    store = ProfileStore.sqlite(store_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ids = _seed(store, now)
    env = {"AIRFLOW_HOME": str(airflow_db), "AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path)}
    airflow_cli("dags", "test", "forecast_demand", env=env, timeout=600)
    latest = store.latest_forecasts(ids)
    assert sorted(latest["series_id"].unique()) == ids
    fallbacks = latest.drop_duplicates("series_id").set_index("series_id")["fallback"].to_dict()
    assert fallbacks["pool=etl/resource=cpu"] == ""
    assert fallbacks["pool=web/resource=cpu"] == "constant:constant"
    state = store.model_states(["pool=etl/resource=cpu"])["pool=etl/resource=cpu"]["state"]
    assert state["kind"] == "arima" and len(json.dumps(state)) < 8000, len(json.dumps(state))
    store.dispose()

"""The feedback loop restores the coverage of the provisioning quantile when a series' noise doubles.

The real forecaster (auto-ARIMA order selection once, then warm forecasts from the stored state with no
refit, so its own calibration stays as learned on the quiet half) forecasts an hourly daily-seasonal
series every 6 hours; half-way through the noise doubles. Without the loop the q0.95 coverage falls
to about 0.75; with it, each cycle's conformal width correction brings it back to its target.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.feedback import evaluation, scores
from airflow_predictive.feedback.cycle import run_feedback_cycle
from airflow_predictive.forecasting.auto_arima import AutoArima
from airflow_predictive.forecasting.engine import Forecaster, forecast_cycle
from airflow_predictive.store import ProfileStore

SERIES = "pool=batch/resource=cpu"
START = datetime(2026, 3, 1, tzinfo=UTC)
QUIET_DAYS, LOUD_DAYS = 10, 10
STEP = timedelta(hours=6)


def _demand() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    hours = (QUIET_DAYS + LOUD_DAYS) * 24
    t = np.arange(hours)
    noise = np.where(t < QUIET_DAYS * 24, 0.6, 1.2) * rng.standard_normal(hours)
    value = 20 + 6 * np.sin(2 * np.pi * t / 24) + noise
    return pd.DataFrame(
        {"series_id": SERIES, "ts": pd.date_range(START, periods=hours, freq="h"), "value": value}
    )


def _run(store: ProfileStore, demand: pd.DataFrame, *, feedback: bool) -> float:
    store.write_demand(demand)
    forecaster = Forecaster(
        interval=timedelta(hours=1),
        horizon=timedelta(hours=6),
        history_days=8,
        select_workers=0,
        model=AutoArima(calibration_days=7, select_days=4),
    )
    change = START + timedelta(days=QUIET_DAYS)
    now = change - timedelta(days=1)
    end = START + timedelta(days=QUIET_DAYS + LOUD_DAYS) - STEP
    while now <= end:
        forecast_cycle(store, [SERIES], now=now, forecaster=forecaster, refit_fraction=0.0)
        run_feedback_cycle(
            store,
            now=now,
            interval=timedelta(hours=1),
            recalibrate=feedback,
            emit_metrics=False,
            min_samples=40,
            recalibration_window=timedelta(days=2),
        )
        now += STEP
    # Coverage of q0.95 over the last 6 days (its first days after the change excluded).
    scored_from = change + timedelta(days=4)
    joined = evaluation.joined(store.forecasts([SERIES], ts_from=scored_from), demand)
    assert len(joined) > 100
    return float((joined["actual"] <= joined["q0.95"]).mean())


def test_recalibration_restores_coverage_after_noise_doubles(tmp_path) -> None:
    demand = _demand()
    without = _run(ProfileStore.sqlite(tmp_path / "without.db"), demand, feedback=False)
    store = ProfileStore.sqlite(tmp_path / "with.db")
    with_loop = _run(store, demand, feedback=True)
    print(f"q0.95 coverage after the noise doubled: without feedback {without:.3f}, with {with_loop:.3f}")
    assert without < 0.85
    assert with_loop == pytest.approx(0.95, abs=0.04)
    # The loop recorded its corrections, and they widened the intervals (noise doubled: about x2).
    factors = store.evaluations([SERIES])
    factors = factors[factors["metric"] == scores.CALIBRATION_SCALE]["value"]
    assert factors.prod() == pytest.approx(2.0, rel=0.5)

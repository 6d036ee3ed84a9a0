"""The feedback loop restores the coverage of the provisioning quantile when a series' noise doubles.

The real forecaster (auto-ARIMA order selection once, then warm forecasts from the stored state with no
refit, so its own calibration stays as learned on the quiet half) forecasts an hourly daily-seasonal
series every 6 hours; half-way through the noise doubles. Without the loop the q0.95 coverage falls
to about 0.75. The loop has two ways back, and each is tested on its own terms:

- with the default thresholds the doubled errors push MASE above 1, the series is flagged, and the next
  forecast cycle re-selects its model, whose calibration learns the louder noise;
- with re-selection switched off, the conformal width correction alone widens the intervals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.feedback import evaluation
from airflow_predictive.forecasting.auto_arima import AutoArima
from airflow_predictive.forecasting.engine import Forecaster, forecast_cycle
from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy, run_feedback_cycle
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


def _run(
    store: ProfileStore,
    demand: pd.DataFrame,
    *,
    feedback: bool,
    mase_threshold: float = 1.0,
) -> float:
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
            policy=FeedbackPolicy(
                interval=timedelta(hours=1),
                recalibrate=feedback,
                min_samples=40,
                recalibration_window=timedelta(days=2),
                mase_threshold=mase_threshold,
            ),
            emit_metrics=False,
        )
        now += STEP
    # Coverage of q0.95 over the last 6 days (its first days after the change excluded).
    scored_from = change + timedelta(days=4)
    joined = evaluation.joined(store.forecasts([SERIES], ts_from=scored_from), demand)
    assert len(joined) > 100
    return float((joined["actual"] <= joined["q0.95"]).mean())


def _factors(store: ProfileStore) -> pd.Series:
    stored = store.evaluations([SERIES])
    return stored[stored["metric"] == evaluation.CALIBRATION_SCALE]["value"]


def test_reselection_restores_coverage_after_noise_doubles(tmp_path) -> None:
    demand = _demand()
    without = _run(ProfileStore.sqlite(tmp_path / "without.db"), demand, feedback=False)
    store = ProfileStore.sqlite(tmp_path / "with.db")
    with_loop = _run(store, demand, feedback=True)
    print(f"q0.95 coverage after the noise doubled: without feedback {without:.3f}, with {with_loop:.3f}")
    assert without < 0.85
    assert with_loop == pytest.approx(0.95, abs=0.04)
    # The way back was re-selection: the model was re-selected after the change; widths were left alone.
    assert (_factors(store) == 1.0).all()
    assert store.model_states([SERIES])[SERIES]["fitted_at"] > START + timedelta(days=QUIET_DAYS)


def test_width_correction_alone_widens_intervals_after_noise_doubles(tmp_path) -> None:
    demand = _demand()
    store = ProfileStore.sqlite(tmp_path / "width.db")
    with_loop = _run(store, demand, feedback=True, mase_threshold=float("inf"))
    factors = _factors(store)
    widened = factors[factors != 1.0]
    print(f"width correction alone: q0.95 coverage {with_loop:.3f}, corrections {widened.round(3).tolist()}")
    # About x2 is what doubled noise needs; the conformal quantile of 48 errors overshoots (x3.3 here),
    # so coverage ends above the target rather than at it.
    assert widened.size >= 1 and 1.5 <= factors.prod() <= 4.0
    assert 0.93 <= with_loop <= 1.0
    # Without re-selection the model stayed the one selected before the change.
    assert store.model_states([SERIES])[SERIES]["fitted_at"] < START + timedelta(days=QUIET_DAYS)

"""Calibration ignores demand stuck at one value for a day or more (a stuck metric, an idle pool)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.forecasting import arima, series


def test_runs_of_a_day_or_more_of_one_value_are_stuck_and_shorter_ones_are_not():
    values = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 4.0, 4.0, np.nan, np.nan, np.nan, 5.0])
    assert series.stuck(values, 3).tolist() == [
        False, True, True, True, False, False, False, False, False, False, False,
    ]  # fmt: skip
    assert series.stuck(np.array([]), 3).size == 0


def test_bucket_means_of_one_repeated_sample_are_one_run():
    """The store's buckets are means of however many samples fell in them: of one repeated value, they
    differ from it in the last bit, and the run must not break there."""
    buckets = np.array([pd.Series([0.1] * n).mean() for n in (1, 3, 2, 3, 7)])
    assert len(set(buckets.tolist())) == 3  # 0.1, 0.1 + 1 ulp, 0.1 - 1 ulp
    assert series.stuck(buckets, 5).all()
    assert not series.stuck(np.array([0.1, 0.1 * (1 + 1e-6), 0.1, 0.1, 0.1]), 5).any()


def _widths_at_first_step(forecaster, state, frame: pd.DataFrame, sid: str) -> np.ndarray:
    """The q0.9 and q0.99 above the mean at the first forecast step, calibrated on ``frame``."""
    window = forecaster.windows(frame, frame["ts"].max().to_pydatetime())[sid]
    state = forecaster.model.calibrated(window, state, steps=forecaster.steps, levels=forecaster.quantiles)
    prediction = forecaster.predict_window(window, state)
    levels = list(forecaster.quantiles)
    return np.array([prediction.quantiles[0, levels.index(q)] - prediction.mean[0] for q in (0.9, 0.99)])


@pytest.mark.parametrize("rule", ["on", "removed"])
def test_days_of_stuck_demand_in_the_window_leave_the_tails_as_live_demand_sets_them(
    selected, demand, rule, monkeypatch
):
    """Three days stuck, then two live: the tails are what the live days alone say.

    Kept, the stuck days' errors (about zero) narrow the learned spread while they are in the older part
    of the window, and the live days after them look like a surge three times its width.
    """
    forecaster, states = selected
    sid, state = next(iter(states.items()))
    live = _widths_at_first_step(forecaster, state, demand, sid)

    stuck = demand.copy()
    last = stuck["ts"].max()
    days = (stuck["ts"] > last - pd.Timedelta(days=5)) & (stuck["ts"] <= last - pd.Timedelta(days=2))
    stuck.loc[days, "value"] = float(stuck.loc[days, "value"].iloc[0])
    if rule == "removed":
        monkeypatch.setattr(arima, "STUCK_DAYS", 1e9)
    after_stuck = _widths_at_first_step(forecaster, state, stuck, sid)

    ratio = after_stuck / live
    if rule == "on":
        np.testing.assert_allclose(ratio, 1.0, atol=0.15)
    else:  # the same check fails without the rule: this is what the rule is for
        assert ratio.max() > 1.5

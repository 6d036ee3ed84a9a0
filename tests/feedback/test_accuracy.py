"""The one definition of each accuracy measure (airflow_predictive.accuracy), on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from airflow_predictive import accuracy


def test_mase_scale_is_the_seasonal_naive_error_then_lag_1_then_undefined() -> None:
    days = np.array([1.0, 2.0, 3.0, 2.0, 4.0, 3.0])  # season 3: |2-1|, |4-2|, |3-3|
    assert accuracy.mase_scale(days, 3) == pytest.approx(1.0)
    # Seasonal differences all zero: the lag-1 naive.
    flat_season = np.array([1.0, 3.0, 1.0, 3.0])
    assert accuracy.mase_scale(flat_season, 2) == pytest.approx(2.0)
    # Not longer than one season: lag 1.
    assert accuracy.mase_scale(np.array([1.0, 2.0, 4.0]), 3) == pytest.approx(1.5)
    # Constant or one value: MASE is undefined.
    assert math.isnan(accuracy.mase_scale(np.full(10, 4.0), 3))
    assert math.isnan(accuracy.mase_scale(np.array([5.0]), 1))
    # Missing values are dropped, and a Series works as an array.
    assert accuracy.mase_scale(pd.Series([1.0, np.nan, 2.0, 4.0])) == pytest.approx(1.5)


def test_mase_pinball_coverage_and_exceedance() -> None:
    actual = np.array([10.0, 12.0, 8.0, 11.0])
    assert accuracy.mase(actual, np.full(4, 10.0), scale=2.0) == pytest.approx(5.0 / 4 / 2.0)
    q = np.array([11.0, 11.0, 11.0, 11.0])
    # 0.9 * (12 - 11) above; 0.1 * (11 - 10), 0.1 * 3, 0 at or below.
    assert accuracy.pinball_loss(actual, q, 0.9) == pytest.approx([0.1, 0.9, 0.3, 0.0])
    assert accuracy.pinball(actual, q[:, None], (0.9,)) == pytest.approx(1.3 / 4)
    assert accuracy.coverage(actual, q) == 0.75
    assert accuracy.exceedance(actual, q) == 0.25
    assert math.isnan(accuracy.coverage(np.array([]), np.array([])))


def test_unmet_and_idle_are_one_shortfall_and_surplus_in_two_units() -> None:
    demand = np.array([10.0, 10.0, 20.0, 0.0])
    capacity = np.array([5.0, 15.0, 20.0, 4.0])
    assert accuracy.shortfall(demand, capacity).tolist() == [5.0, 0.0, 0.0, 0.0]
    assert accuracy.surplus(demand, capacity).tolist() == [0.0, 5.0, 0.0, 4.0]
    assert accuracy.unmet_percent(demand, capacity) == pytest.approx(12.5)  # 5 of 40
    assert accuracy.idle_percent(demand, capacity) == pytest.approx(22.5)  # 9 of 40
    assert accuracy.unmet_mean(demand, capacity) == pytest.approx(1.25)  # 5 over 4 buckets
    assert accuracy.idle_mean(demand, capacity) == pytest.approx(2.25)
    assert accuracy.unmet_percent(np.zeros(3), np.ones(3)) == 0.0

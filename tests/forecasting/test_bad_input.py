"""Short or broken history: a recorded fallback or one clear error naming the series, never a failed cycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.forecasting.engine import Forecaster
from airflow_predictive.forecasting.models import LastValue, SeasonalNaive
from airflow_predictive.forecasting.series import SeriesError, SeriesWindow, regular_window, to_epoch_seconds

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def _series(sid: str, days: float, *, every: str = "5min", value=None, seed: int = 0) -> pd.DataFrame:
    ts = pd.date_range(end=NOW, periods=int(days * 86400 / pd.Timedelta(every).total_seconds()), freq=every)
    rng = np.random.default_rng(seed)
    hours = ts.hour.to_numpy() + ts.minute.to_numpy() / 60
    values = 10 + 5 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.5, ts.size) if value is None else value
    return pd.DataFrame(
        {"series_id": sid, "ts": ts, "value": np.broadcast_to(values, ts.shape).astype(float)}
    )


def _fallbacks(frame: pd.DataFrame) -> dict[str, str]:
    return frame.drop_duplicates("series_id").set_index("series_id")["fallback"].to_dict()


def test_each_kind_of_bad_series_gets_its_fallback_or_error_and_the_rest_still_forecast():
    history = pd.concat(
        [
            _series("pool=a/resource=cpu", 1.5),  # < 2 days: seasonal naive
            _series("pool=b/resource=cpu", 0.1),  # a few hours: recent level
            _series("pool=c/resource=cpu", 3, value=4.0),  # constant
            _series("pool=d/resource=cpu", 3, value=np.nan),  # all NaN: error
            _series("pool=e/resource=cpu", 3, every="1h"),  # wrong frequency: error
            _series("pool=f/resource=cpu", 3),  # healthy but no state: seasonal naive
        ]
    )
    forecaster = Forecaster(select_workers=0)
    frame, states = forecaster.forecast(history, {}, now=NOW)
    assert _fallbacks(frame) == {
        "pool=a/resource=cpu": "short_history:seasonal_naive",
        "pool=b/resource=cpu": "short_history:recent_level",
        "pool=c/resource=cpu": "constant:constant",
        "pool=f/resource=cpu": "no_state:seasonal_naive",
    }
    assert set(forecaster.errors) == {"pool=d/resource=cpu", "pool=e/resource=cpu"}
    assert "pool=d/resource=cpu" in forecaster.errors["pool=d/resource=cpu"]
    assert "every 60 minutes" in forecaster.errors["pool=e/resource=cpu"]
    assert frame[["mean", "q0.99"]].notna().all().all()
    assert (frame.loc[frame["series_id"] == "pool=c/resource=cpu", "q0.99"] == 4.0).all()
    assert states == {}


def test_a_metric_stuck_for_two_days_is_not_a_constant_series():
    """Bitbrains traces hold one value for days; the varying week before it still drives the forecast."""
    history = _series("pool=s/resource=cpu", 7)
    stuck = history["ts"] > NOW - timedelta(days=2, hours=6)
    history.loc[stuck, "value"] = 12.5
    forecaster = Forecaster(select_workers=0)
    frame, _ = forecaster.forecast(history, {}, now=NOW)
    assert _fallbacks(frame) == {"pool=s/resource=cpu": "no_state:seasonal_naive"}
    states = forecaster.select(history, now=NOW)
    frame, _ = forecaster.forecast(history, states, now=NOW)
    assert _fallbacks(frame) == {"pool=s/resource=cpu": ""}
    # the intervals come from the week's errors, not from the flat stretch: they have a width
    assert (frame["q0.95"] - frame["q0.5"]).max() > 0.5


def test_empty_history_gives_an_empty_frame_not_a_crash():
    frame, states = Forecaster(select_workers=0).forecast(
        pd.DataFrame(columns=["series_id", "ts", "value"]), {}, now=NOW
    )
    assert frame.empty and states == {}


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="value"):
        Forecaster(select_workers=0).forecast(pd.DataFrame({"series_id": [], "ts": []}), {}, now=NOW)


def test_duplicates_unsorted_rows_negatives_and_gaps_are_repaired_and_noted():
    ts = pd.date_range(end=NOW, periods=600, freq="5min")
    seconds = to_epoch_seconds(ts)
    values = np.arange(600, dtype=float)
    values[10] = -3.0  # a negative reading
    # daylight-saving style repeat: the same stamp twice, rows out of order, and a 2-hour gap
    seconds = np.r_[seconds, seconds[100]]
    values = np.r_[values, values[100] + 2]
    keep = np.ones(seconds.size, bool)
    keep[300:324] = False
    order = np.random.default_rng(1).permutation(keep.sum())
    window = regular_window(
        "pool=x/resource=cpu",
        seconds[keep][order],
        values[keep][order],
        interval_s=300,
        end=int(NOW.timestamp()) // 300,
        length=2016,
        season=288,
    )
    assert set(window.notes) == {"negatives_clipped", "duplicates_averaged", "gaps_filled"}
    assert window.values[10] == 0.0 and window.values[100] == 101.0
    assert np.isfinite(window.values).all() and not window.observed[300:324].any()
    assert window.values[-1] == 599.0


def test_a_series_with_no_value_before_now_is_an_error_naming_it():
    with pytest.raises(SeriesError, match="pool=x/resource=cpu"):
        regular_window(
            "pool=x/resource=cpu",
            np.array([0]),
            np.array([np.nan]),
            interval_s=300,
            end=10,
            length=5,
            season=288,
        )


def _window(values: np.ndarray) -> SeriesWindow:
    return SeriesWindow("pool=x/resource=cpu", values, 10_000, 300, np.ones(values.size, bool))


def test_baselines_repeat_the_last_value_yesterday_and_last_week():
    values = np.arange(7 * 288, dtype=float)
    levels = (0.5, 0.95)
    last = LastValue().predict(_window(values), {}, steps=288, levels=levels)
    day = SeasonalNaive(1).predict(_window(values), {}, steps=288, levels=levels)
    week = SeasonalNaive(7).predict(_window(values), {}, steps=288, levels=levels)
    assert (last.mean == values[-1]).all()
    np.testing.assert_array_equal(day.mean, values[-288:])
    np.testing.assert_array_equal(week.mean, values[:288])
    assert (day.quantiles[:, 1] >= day.quantiles[:, 0]).all()


def test_seasonal_naive_refuses_too_short_history():
    with pytest.raises(ValueError, match="needs 2016 buckets"):
        SeasonalNaive(7).predict(_window(np.ones(100)), {}, steps=12, levels=(0.5,))


def test_forecaster_rejects_a_horizon_shorter_than_the_interval():
    with pytest.raises(ValueError, match="interval"):
        Forecaster(interval=timedelta(hours=2), horizon=timedelta(hours=1))


def test_bench_accuracy_names_a_missing_trace_file_and_exits_2(capsys):
    from airflow_predictive.cli import main

    assert main(["bench", "accuracy", "/nonexistent/trace.csv", "--json", "/dev/null"]) == 2
    assert "/nonexistent/trace.csv" in capsys.readouterr().err

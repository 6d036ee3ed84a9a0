"""The seasonal-naive baseline on the store's demand: what a pool following it plans from, and what
the service-level choice replays for it.

A pool whose service-level choice reads ``seasonal_naive`` (:class:`~airflow_predictive.contracts.pools.ForecastSource`)
plans from the demand of the same bucket yesterday, with quantiles from the day-to-day changes of the
last :data:`~airflow_predictive.forecasting.models.BASELINE_DAYS` days
(:func:`~airflow_predictive.forecasting.models.seasonal_naive_baseline`, which the backtest's
``seasonal`` policy issues too). It needs no model and nothing stored but the demand, so the cycle
computes it where it is needed: :func:`baseline_frame` for the allocation cycle, :func:`baseline_views`
for the choice's replay of the days before.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, forecast_columns
from airflow_predictive.forecasting.models import BASELINE_DAYS, season_length, seasonal_naive_baseline
from airflow_predictive.planning.planner import ForecastView

MODEL_NAME = "seasonal_naive"
#: Demand the baseline reads before the bucket it forecasts from.
BASELINE_WINDOW = timedelta(days=BASELINE_DAYS)


def step_means(rows: pd.DataFrame, index: pd.DatetimeIndex) -> pd.Series:
    """One series' demand rows (``ts, value``) as the mean of each step of ``index`` (NaN: no row).

    :param rows: the series' demand rows (SQLite returns naive UTC times, PostgreSQL aware ones).
    :param index: the steps (UTC).
    """
    step = index[1] - index[0]
    values = pd.Series(rows["value"].to_numpy(float), index=pd.to_datetime(rows["ts"], utc=True))
    return values.groupby(values.index.floor(step)).mean().reindex(index)


def gridded(rows: pd.DataFrame, index: pd.DatetimeIndex) -> np.ndarray:
    """:func:`step_means` with a step without any row filled from its neighbours, as the forecaster
    fills gaps."""
    return step_means(rows, index).interpolate(limit_direction="both").fillna(0.0).to_numpy(float)


def baseline_frame(demand: pd.DataFrame, *, now: datetime, interval: timedelta) -> pd.DataFrame:
    """The baseline forecast of each series in ``demand`` from the bucket in progress on, a day ahead,
    in the forecast contract (what the planner reads from the store for an issued forecast).

    :param demand: the pool's demand rows (``series_id, ts, value``) over at least the last day.
    :param now: the planning time.
    :param interval: bucket width.
    """
    step = pd.Timedelta(interval)
    stamp = pd.Timestamp(now)
    bucket = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).floor(step)
    index = pd.date_range(bucket - pd.Timedelta(BASELINE_WINDOW), bucket, freq=step, inclusive="left")
    steps = season_length(int(step.total_seconds()))
    ts = pd.date_range(bucket, periods=steps, freq=step)
    parts = []
    for sid, rows in demand.rename(columns=str).groupby("series_id", sort=True):
        prediction = seasonal_naive_baseline(
            gridded(rows, index), int(step.total_seconds()), steps=steps, levels=DEFAULT_QUANTILES
        )
        part = {"series_id": str(sid), "ts": ts, **prediction.columns(DEFAULT_QUANTILES)}
        parts.append(
            pd.DataFrame({**part, "model": MODEL_NAME, "fallback": "", "issued_at": pd.Timestamp(now)})
        )
    if not parts:
        return pd.DataFrame(columns=forecast_columns())
    return pd.concat(parts, ignore_index=True)[forecast_columns()]


def baseline_views(
    observed: pd.Series, index: pd.DatetimeIndex, *, first: int, resource: str, steps: int
) -> dict[int, ForecastView]:
    """Step -> the baseline forecast at that step (its first bucket is the step), for the steps of
    ``index`` from ``first`` on, each from the demand before it: what a pool following the baseline
    read on those days. Empty when the store's demand starts less than a day before ``first`` or holds
    less than half of that day: the baseline's first forecasts would be made up of filled gaps.

    :param observed: demand per step (NaN: not observed), ending where ``index`` ends and starting up
        to :data:`BASELINE_WINDOW` before it.
    :param index: the replay's steps.
    :param first: first step to forecast at.
    :param resource: the series' resource.
    :param steps: buckets each forecast covers.
    """
    step_ns = int(index[1].value - index[0].value)
    interval_s = step_ns // 10**9
    day = season_length(interval_s)
    if observed.first_valid_index() is None:
        return {}
    known = observed.loc[observed.first_valid_index() :]  # no made-up demand before the first seen
    offset = len(known) - len(index)  # steps of ``known`` before the replay's first
    if offset + first < day or known.iloc[offset + first - day : offset + first].notna().sum() < day // 2:
        return {}
    values = known.interpolate(limit_direction="both").to_numpy(float)
    views = {}
    for s in range(first, len(index)):
        prediction = seasonal_naive_baseline(
            values[: offset + s], interval_s, steps=steps, levels=DEFAULT_QUANTILES
        )
        ts = int(index[s].value) + np.arange(steps, dtype=np.int64) * step_ns
        views[s] = ForecastView({resource: (ts, prediction.columns(DEFAULT_QUANTILES))}, step_ns)
    return views

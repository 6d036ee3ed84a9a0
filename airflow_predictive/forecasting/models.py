"""Every forecaster behind one small interface: fit (select), forecast with quantiles, JSON state.

A model works on a :class:`~airflow_predictive.forecasting.series.SeriesWindow` and returns a
:class:`Prediction` of ``steps`` buckets. Its state is a small JSON-able dict (never a pickle), so the
engine can store it in the ProfileStore, and a later cycle, process or machine can forecast from it.
ARIMA, the baselines and the structural forecaster are interchangeable and comparable.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from airflow_predictive.contracts.forecast import quantile_column

# scipy-free (the series helpers, not the ARIMA module): the allocation cycle computes the
# seasonal-naive baseline in tasks that must not pay scipy's import
from airflow_predictive.forecasting.series import SeriesWindow, knots

STATE_VERSION = 1


@dataclass
class Prediction:
    """A forecast of one series: mean ``(steps,)`` and quantiles ``(steps, len(levels))``, in series units.

    :param mean: point forecast per step.
    :param quantiles: one column per quantile level, non-decreasing across levels.
    :param model: name of the model that made it.
    :param fallback: why a fallback was used ('' when none).
    """

    mean: np.ndarray
    quantiles: np.ndarray
    model: str
    fallback: str = ""

    def columns(self, levels: tuple[float, ...], steps: int | None = None) -> dict[str, np.ndarray]:
        """The forecast contract's value columns (``mean``, ``q0.9``...) over the first ``steps``.

        :param levels: the quantile levels ``quantiles`` holds, in its column order.
        :param steps: steps to keep (None: all).
        """
        out = {"mean": self.mean[:steps]}
        for j, level in enumerate(levels):
            out[quantile_column(level)] = self.quantiles[:steps, j]
        return out


class SeriesModel(ABC):
    """The interface every forecaster implements."""

    name: str = "model"

    @abstractmethod
    def fit(self, window: SeriesWindow, *, steps: int, levels: tuple[float, ...]) -> dict:
        """Estimate the model on ``window``; return its JSON-able state.

        :param window: the recent history.
        :param steps: forecast horizon in buckets (calibration is learned per horizon).
        :param levels: quantile levels to calibrate.
        """

    @abstractmethod
    def predict(
        self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]
    ) -> Prediction:
        """Forecast the ``steps`` buckets after ``window`` from a stored ``state``.

        :param window: the recent history (its last bucket is the one containing ``now``).
        :param state: what :meth:`fit` or :meth:`refit` returned.
        :param steps: forecast horizon in buckets.
        :param levels: quantile levels.
        """

    def refit(self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]) -> dict:
        """Re-estimate the parameters, warm-started from ``state``; the default refits from scratch.

        :param window: the recent history.
        :param state: the current state.
        :param steps: forecast horizon in buckets.
        :param levels: quantile levels.
        """
        return self.fit(window, steps=steps, levels=levels)


def season_length(interval_s: int) -> int:
    """Buckets per day."""
    return max(1, round(86400 / interval_s))


def finish(
    point: np.ndarray, offsets: np.ndarray, *, nonnegative: bool, model: str, fallback: str = ""
) -> Prediction:
    """Point + per-level offsets -> Prediction with ordered quantiles (clipped at 0 for demand)."""
    quantiles = point[:, None] + offsets
    quantiles = np.maximum.accumulate(quantiles, axis=1)
    mean = point
    if nonnegative:
        quantiles = np.maximum(quantiles, 0.0)
        mean = np.maximum(mean, 0.0)
    return Prediction(mean, quantiles, model, fallback)


def _offsets(errors: np.ndarray, levels: tuple[float, ...]) -> list[float]:
    """Empirical quantiles of one horizon's errors, each at the order statistic that covers it."""
    err = errors[np.isfinite(errors)]
    if err.size < 10:
        return [0.0] * len(levels)
    n = err.size
    adjusted = [min(1.0, math.ceil((n + 1) * q) / n) for q in levels]
    return np.quantile(err, adjusted, method="higher").tolist()


def empirical_offsets(errors_at: dict[int, np.ndarray], levels: tuple[float, ...], steps: int) -> np.ndarray:
    """Quantile offsets per step from empirical errors measured at a few horizons (interpolated)."""
    hs = sorted(errors_at)
    table = []
    done: dict[int, list[float]] = {}  # horizons sharing one error array (a seasonal lag) share its quantiles
    for h in hs:
        key = id(errors_at[h])
        if key not in done:
            done[key] = _offsets(errors_at[h], levels)
        table.append(done[key])
    table_arr = np.asarray(table, dtype=float)
    at = np.arange(1, steps + 1)
    return np.column_stack([np.interp(at, hs, table_arr[:, j]) for j in range(len(levels))])


# ------------------------------------------------------------------ baselines


class LastValue(SeriesModel):
    """Tomorrow looks like now: the last value, with quantiles from the window's own h-step changes."""

    name = "last_value"

    def fit(self, window: SeriesWindow, *, steps: int, levels: tuple[float, ...]) -> dict:
        """No parameters: the calibration is recomputed from the window at each forecast."""
        return {"kind": self.name, "version": STATE_VERSION}

    def predict(
        self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]
    ) -> Prediction:
        """Repeat the last value; quantiles from the empirical distribution of ``y[t+h] - y[t]``."""
        y = window.values
        errors = {int(h): y[h:] - y[:-h] for h in knots(window.interval_s, steps) if y.size > h} or {
            1: np.zeros(1)
        }
        offsets = empirical_offsets(errors, levels, steps)
        return finish(np.full(steps, y[-1]), offsets, nonnegative=True, model=self.name)


class SeasonalNaive(SeriesModel):
    """Same time yesterday (``days=1``) or last week (``days=7``), with empirical quantiles.

    :param days: seasonal lag in days.
    """

    def __init__(self, days: int = 1) -> None:
        self.days = days
        self.name = "seasonal_naive" if days == 1 else f"seasonal_naive_{days}d"

    def fit(self, window: SeriesWindow, *, steps: int, levels: tuple[float, ...]) -> dict:
        """No parameters: the calibration is recomputed from the window at each forecast."""
        return {"kind": "seasonal_naive", "days": self.days, "version": STATE_VERSION}

    def can_predict(self, window: SeriesWindow) -> bool:
        """True when the window holds at least one full season."""
        return window.values.size >= season_length(window.interval_s) * self.days

    def predict(
        self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]
    ) -> Prediction:
        """The value one season before each future bucket; quantiles from the window's seasonal errors."""
        y = window.values
        lag = season_length(window.interval_s) * self.days
        if y.size < lag:
            raise ValueError(f"{self.name} needs {lag} buckets of history, got {y.size}")
        point = seasonal_naive_point(y, lag, steps)
        errors, by_lag = {}, {}
        for h in knots(window.interval_s, steps):
            full_lag = lag * math.ceil(int(h) / lag)
            if y.size > full_lag:
                if full_lag not in by_lag:
                    by_lag[full_lag] = y[full_lag:] - y[:-full_lag]
                errors[int(h)] = by_lag[full_lag]
        offsets = empirical_offsets(errors or {1: np.zeros(1)}, levels, steps)
        return finish(point, offsets, nonnegative=True, model=self.name)


#: Days of demand the seasonal-naive baseline reads (:func:`seasonal_naive_baseline`): yesterday for
#: its point, the day-to-day changes over these days for its quantiles.
BASELINE_DAYS = 3


def seasonal_naive_baseline(
    values: np.ndarray, interval_s: int, *, steps: int, levels: tuple[float, ...]
) -> Prediction:
    """The seasonal-naive baseline after ``values``: the demand of the same bucket yesterday, with
    quantiles from the day-to-day changes over the last :data:`BASELINE_DAYS` days. Its first step is
    the bucket after the last value. What the backtest's ``seasonal`` policy issues and what a pool
    whose service-level choice reads it plans from (no model, no store: the demand alone).

    :param values: observed demand per bucket, oldest first, gaps filled (at least a day of it).
    :param interval_s: bucket width in seconds.
    :param steps: buckets to forecast.
    :param levels: quantile levels.
    """
    y = np.asarray(values, dtype=float)[-BASELINE_DAYS * season_length(interval_s) :]
    window = SeriesWindow("baseline", y, 0, interval_s, np.ones(y.size, bool))
    model = SeasonalNaive()
    return model.predict(window, model.fit(window, steps=steps, levels=levels), steps=steps, levels=levels)


def seasonal_naive_point(y: np.ndarray, lag: int, steps: int) -> np.ndarray:
    """``y[T + h - lag * ceil(h / lag)]`` for h = 1..steps."""
    h = np.arange(1, steps + 1)
    idx = y.size - 1 + h - lag * np.ceil(h / lag).astype(int)
    return y[idx]


class RecentLevel(SeriesModel):
    """For very short histories: the recent level as the mean, the recent spread and maximum as upper quantiles."""

    name = "recent_level"

    def fit(self, window: SeriesWindow, *, steps: int, levels: tuple[float, ...]) -> dict:
        """No parameters."""
        return {"kind": self.name, "version": STATE_VERSION}

    def predict(
        self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]
    ) -> Prediction:
        """Mean of the last hour; quantile q of the window, and the window maximum for levels >= 0.99."""
        y = window.values
        recent = y[-max(1, round(3600 / window.interval_s)) :]
        level = float(np.mean(recent))
        offsets = []
        for q in levels:
            value = float(np.max(y)) if q >= 0.99 else float(np.quantile(y, q))
            offsets.append(max(value, level) - level if q > 0.5 else value - level)
        return finish(
            np.full(steps, level),
            np.tile(offsets, (steps, 1)),
            nonnegative=True,
            model=self.name,
        )


class Constant(SeriesModel):
    """A series that never changed: forecast that value."""

    name = "constant"

    def fit(self, window: SeriesWindow, *, steps: int, levels: tuple[float, ...]) -> dict:
        """No parameters."""
        return {"kind": self.name, "version": STATE_VERSION}

    def predict(
        self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]
    ) -> Prediction:
        """The last value at every step and every quantile."""
        value = float(window.values[-1])
        return Prediction(np.full(steps, value), np.full((steps, len(levels)), value), self.name)

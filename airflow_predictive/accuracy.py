"""How good a forecast or a capacity was: MASE, pinball loss, coverage, unmet demand and idle capacity.

The one definition of each measure, for the feedback loop (:mod:`airflow_predictive.feedback`), the
forecasting benchmarks (``tools/``) and the backtest (:mod:`airflow_predictive.simulation`). Plain
numpy on arrays (pandas Series work too, element-wise); no Airflow, no store.

- **MASE** = mean absolute error / :func:`mase_scale`, the in-sample mean absolute error of the
  seasonal naive forecast on the history before the scored values. The scale uses the seasonal lag
  when the history is longer than one season and its seasonal differences are not all zero; otherwise
  the lag-1 (last value) naive; when that is zero or undefined too (a constant or a one-value
  history), the scale is NaN: MASE is undefined and reported as NaN (no series is judged on it).
- **pinball loss** at level ``q`` = ``max(q * (actual - quantile), (q - 1) * (actual - quantile))``.
- **coverage** of a quantile = the share of actuals at or below it (its target is the level);
  **exceedance** = the share strictly above it.
- **unmet demand** is always demand above capacity, ``max(demand - capacity, 0)`` per bucket, and
  **idle capacity** capacity above demand, ``max(capacity - demand, 0)``. The name says the unit they
  are summed into: ``*_percent`` = percent of the total demand of the window (the backtest's
  ``unmet_pct``/``idle_pct``); ``*_mean`` = mean per bucket, in the demand's own units (vCPUs, GiB,
  Mbit/s; the feedback loop's ``unmet_demand``/``idle_capacity`` scores).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def mase_scale(history, season: int = 1) -> float:
    """The MASE denominator: mean absolute error of the (seasonal) naive forecast over ``history``.

    Seasonal lag if the history is longer than ``season`` and the scale is positive, else lag 1, else
    NaN (MASE undefined). Missing (NaN) values are dropped first.

    :param history: the values before the scored window, in time order (array or Series).
    :param season: naive lag in buckets (1 = last value; a day of buckets = seasonal naive).
    """
    values = np.asarray(history, dtype=float)
    values = values[~np.isnan(values)]
    errors = {
        lag: (float(np.mean(np.abs(values[lag:] - values[:-lag]))), values.size - lag)
        for lag in dict.fromkeys((int(season), 1))
        if values.size > lag
    }
    return mase_scale_of(errors, season)


def mase_scale_of(naive_errors: Mapping[int, tuple[float, int]], season: int = 1) -> float:
    """:func:`mase_scale` from the naive forecast's errors already reduced per lag (the store reduces a
    week of demand to them, so an evaluation need not read the week).

    :param naive_errors: ``{lag: (mean absolute error, pairs)}`` over the history with its gaps dropped.
    :param season: the seasonal lag, in buckets.
    """
    for lag in dict.fromkeys((int(season), 1)):
        error, pairs = naive_errors.get(lag, (float("nan"), 0))
        if pairs > 0 and error > 0:
            return float(error)
    return float("nan")


def mae(actual, forecast) -> float:
    """Mean absolute error.

    :param actual: observed values.
    :param forecast: point forecasts.
    """
    return float(np.mean(np.abs(actual - forecast)))


def mase(actual, forecast, scale: float) -> float:
    """Mean absolute scaled error: :func:`mae` over a :func:`mase_scale` (NaN when the scale is).

    :param actual: observed values.
    :param forecast: point forecasts.
    :param scale: :func:`mase_scale` of the history before ``actual``.
    """
    return mae(actual, forecast) / scale


def pinball_loss(actual, quantile, level):
    """Pinball (quantile) loss of each value: ``max(level * d, (level - 1) * d)``, ``d = actual - quantile``.

    :param actual: observed values.
    :param quantile: the forecast quantile (broadcast against ``actual``).
    :param level: its level (a number or an array broadcast against ``quantile``).
    """
    diff = actual - quantile
    return np.maximum(level * diff, (level - 1) * diff)


def pinball(actual: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...]) -> float:
    """Mean pinball loss over all steps and levels.

    :param actual: observed values ``(steps,)``.
    :param quantiles: forecast quantiles ``(steps, len(levels))``.
    :param levels: the quantile levels.
    """
    return float(np.mean(pinball_loss(actual[:, None], quantiles, np.asarray(levels)[None, :])))


def covered(actual, quantile):
    """Whether each actual lies at or below the quantile (element-wise booleans).

    :param actual: observed values.
    :param quantile: the forecast quantile.
    """
    return actual <= quantile


def coverage(actual, quantile) -> float:
    """Share of actuals at or below the quantile (NaN for no values).

    :param actual: observed values.
    :param quantile: the forecast quantile.
    """
    actual = np.asarray(actual, dtype=float)
    if actual.size == 0:
        return float("nan")
    return float(np.mean(covered(actual, np.asarray(quantile, dtype=float))))


def exceedance(actual, quantile) -> float:
    """Share of actuals strictly above the quantile (the complement of :func:`coverage`).

    :param actual: observed values.
    :param quantile: the forecast quantile.
    """
    return float(np.mean(actual > quantile))


def shortfall(demand, capacity):
    """Unmet demand of each bucket: ``max(demand - capacity, 0)``.

    :param demand: demand per bucket.
    :param capacity: capacity per bucket.
    """
    return np.maximum(demand - capacity, 0.0)


def surplus(demand, capacity):
    """Idle capacity of each bucket: ``max(capacity - demand, 0)``.

    :param demand: demand per bucket.
    :param capacity: capacity per bucket.
    """
    return np.maximum(capacity - demand, 0.0)


def _percent_of_demand(amount, demand) -> float:
    total = float(np.sum(demand))
    return 100.0 * float(np.sum(amount)) / total if total > 0 else 0.0


def unmet_percent(demand, capacity) -> float:
    """Unmet demand in percent of the total demand: ``100 * sum(shortfall) / sum(demand)`` (0 without demand).

    :param demand: demand per bucket.
    :param capacity: capacity per bucket.
    """
    return _percent_of_demand(shortfall(demand, capacity), demand)


def idle_percent(demand, capacity) -> float:
    """Idle capacity in percent of the total demand: ``100 * sum(surplus) / sum(demand)`` (0 without demand).

    :param demand: demand per bucket.
    :param capacity: capacity per bucket.
    """
    return _percent_of_demand(surplus(demand, capacity), demand)


def unmet_mean(demand, capacity) -> float:
    """Unmet demand per bucket on average, in the demand's own units.

    :param demand: demand per bucket.
    :param capacity: capacity per bucket.
    """
    return float(shortfall(demand, capacity).mean())


def idle_mean(demand, capacity) -> float:
    """Idle capacity per bucket on average, in the demand's own units.

    :param demand: demand per bucket.
    :param capacity: capacity per bucket.
    """
    return float(surplus(demand, capacity).mean())

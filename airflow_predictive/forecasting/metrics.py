"""Forecast accuracy measures used by the benchmarks and the feedback loop (plain numpy)."""

from __future__ import annotations

import numpy as np


def mase_scale(history: np.ndarray, season: int) -> float:
    """Mean absolute seasonal-naive error of the history (MASE denominator; lag 1 if too short).

    :param history: the training values.
    :param season: seasonal lag in buckets.
    """
    lag = season if history.size > season else 1
    diffs = np.abs(history[lag:] - history[:-lag])
    scale = float(np.mean(diffs)) if diffs.size else 0.0
    return scale if scale > 0 else max(float(np.mean(np.abs(history))), 1e-9)


def mae(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Mean absolute error.

    :param actual: observed values.
    :param forecast: point forecasts.
    """
    return float(np.mean(np.abs(actual - forecast)))


def pinball(actual: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...]) -> float:
    """Mean pinball (quantile) loss over all steps and levels.

    :param actual: observed values ``(steps,)``.
    :param quantiles: forecast quantiles ``(steps, len(levels))``.
    :param levels: the quantile levels.
    """
    diff = actual[:, None] - quantiles
    tau = np.asarray(levels)[None, :]
    return float(np.mean(np.maximum(tau * diff, (tau - 1) * diff)))


def exceedance(actual: np.ndarray, upper: np.ndarray) -> float:
    """Share of actuals strictly above the forecast quantile.

    :param actual: observed values.
    :param upper: the quantile forecast.
    """
    return float(np.mean(actual > upper))

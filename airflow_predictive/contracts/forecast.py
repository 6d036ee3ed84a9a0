"""The forecast contract: what every forecaster returns and what the planner and the UI read.

A forecast is a long data frame, one row per ``(series_id, ts)`` future bucket, with the mean, one
column per quantile level named by :func:`quantile_column` (``q0.95``), the model that made it, the
fallback used (empty when none) and when it was issued. A forecast that knows future work (the
``combined`` one) adds the optional :data:`KNOWN` column: the part of each bucket's demand that known
work (scheduled runs, the next stages of running ones) holds, at its upper schedule.
"""

from __future__ import annotations

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)
KNOWN = "known"
#: Observed history a series needs before its statistical model forecasts it (less: the fallback).
MIN_HISTORY_DAYS = 2.0
#: Days of demand the planner's daily-cycle check needs: below it a forecast-driven pool follows the
#: reactive rule (and still provisions known work).
MIN_CYCLE_DAYS = 1.5


def quantile_column(level: float) -> str:
    """Column name of a quantile level: ``0.95 -> 'q0.95'``."""
    if not 0 < level < 1:
        raise ValueError(f"quantile level must lie strictly between 0 and 1, got {level}")
    return f"q{level:g}"


def forecast_columns(quantiles: tuple[float, ...] = DEFAULT_QUANTILES) -> list[str]:
    return [
        "series_id",
        "ts",
        "mean",
        *(quantile_column(q) for q in quantiles),
        "model",
        "fallback",
        "issued_at",
    ]

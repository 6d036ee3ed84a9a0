"""Recalibration decisions from recent forecast errors (conformal-style interval correction, re-selection).

For each series, the recent forecasts of the provisioning quantile ``q`` are scored by the normalised
error ``s = (actual - mean) / (upper - mean)``: the interval would have covered the actual exactly when
``s <= 1``. When the empirical coverage ``P(s <= 1)`` drifts from ``q`` by more than a tolerance, the
width correction is the split-conformal quantile of ``s`` (the ``ceil((n+1)q)/n`` empirical quantile):
multiplying the interval half-widths by it makes those forecasts cover a fraction ``q`` of the actuals.
Because the scored forecasts already carry the current correction, the new total correction is the
product of the two. When MASE exceeds a threshold, the series is flagged for model re-selection.

The decision is pure; applying it goes through the forecaster's own calibration state
(:func:`apply`), so there is one forecaster and one place that widens intervals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive import accuracy
from airflow_predictive.feedback.evaluation import MASE, values_of

MIN_FACTOR, MAX_FACTOR = 0.25, 4.0


@dataclass
class Decision:
    """What the feedback loop decided for one series.

    :param series_id: the series.
    :param level: the provisioning quantile whose coverage is targeted.
    :param coverage: its empirical coverage over the scored forecasts.
    :param n: how many forecast rows were scored.
    :param factor: multiply the interval half-widths by this (1.0 = keep).
    :param mase: the MASE over all lead times.
    :param reselect: flag the series for model re-selection next cycle.
    :param reason: why, in words (logged and shown in alerts).
    """

    series_id: str
    level: float
    coverage: float
    n: int
    factor: float = 1.0
    mase: float = float("nan")
    reselect: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def conformal_factor(normalised: np.ndarray, level: float) -> float:
    """The split-conformal ``level`` quantile of normalised errors ``(actual - mean) / (upper - mean)``.

    :param normalised: finite normalised errors.
    :param level: target coverage.
    """
    n = normalised.size
    if math.ceil((n + 1) * level) > n:
        # Too few errors for the finite-sample rank (it would be the maximum, a noisy overshoot).
        return float(np.quantile(normalised, level))
    return float(np.quantile(normalised, math.ceil((n + 1) * level) / n, method="higher"))


def decide(
    joined: pd.DataFrame,
    evaluations: pd.DataFrame,
    *,
    level: float | dict[str, float] = 0.95,
    tolerance: float = 0.03,
    mase_threshold: float = 1.0,
    min_samples: int = 30,
) -> list[Decision]:
    """Decide the width correction and re-selection flag of every series in ``joined``.

    :param joined: recent forecast rows with their ``actual`` (:func:`evaluation.joined`); an optional
        boolean ``fresh`` column marks the rows made with the current calibration (the only ones the
        width correction learns from; re-selection looks at the MASE of all).
    :param evaluations: this cycle's scores (for MASE).
    :param level: provisioning quantile, or ``{series_id: level}`` (default 0.95 for absent series).
    :param tolerance: leave the width alone while ``|coverage - level|`` is within this tolerance or
        within two binomial standard errors of the measured coverage.
    :param mase_threshold: flag re-selection when MASE exceeds this.
    :param min_samples: fewer scored rows than this: no width change (too noisy to act on).
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must lie strictly between 0 and 1, got {tolerance}")
    if joined.empty:
        return []
    decisions = []
    mase_of = values_of(evaluations, MASE)
    for sid, group in joined.groupby("series_id", sort=True):
        q = level.get(sid, 0.95) if isinstance(level, dict) else level
        col = f"q{q:g}"
        if col not in group:
            raise ValueError(f"forecasts of {sid} have no {col} column; stored quantiles must include {q:g}")
        if "fresh" in group:
            # Only forecasts made with the current calibration measure it (see cycle._corrected_since).
            group = group[group["fresh"].astype(bool)]
        half = (group[col] - group["mean"]).to_numpy(float)
        err = (group["actual"] - group["mean"]).to_numpy(float)
        ok = np.isfinite(half) & np.isfinite(err) & (half > 1e-9)
        covered = accuracy.coverage(group["actual"].to_numpy(float), group[col].to_numpy(float))
        mase = mase_of.get(sid, float("nan"))
        decision = Decision(series_id=sid, level=q, coverage=covered, n=int(ok.sum()), mase=mase)
        reasons = []
        # Act only on drift beyond both the tolerance and two binomial standard errors: a coverage
        # measured on a few dozen rows moves by several points by chance, and chasing it oscillates.
        noise = 2 * math.sqrt(q * (1 - q) / decision.n) if decision.n else 1.0
        if decision.n >= min_samples and math.isfinite(covered) and abs(covered - q) > max(tolerance, noise):
            factor = conformal_factor(err[ok] / half[ok], q)
            decision.factor = float(np.clip(factor, MIN_FACTOR, MAX_FACTOR)) if factor > 0 else MIN_FACTOR
            reasons.append(
                f"coverage of q{q:g} was {covered:.3f} (target {q:g}): widths x{decision.factor:.3f}"
            )
        if math.isfinite(mase) and mase > mase_threshold:
            decision.reselect = True
            reasons.append(f"MASE {mase:.3f} above {mase_threshold:g}: re-select the model")
        decision.reason = "; ".join(reasons)
        decisions.append(decision)
    return decisions

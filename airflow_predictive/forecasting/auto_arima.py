"""The production model: pmdarima ``auto_arima`` order selection, then a cheap warm path on stored numbers.

``fit`` (slow, off the critical path) scales the series by a robust level, clips gross outliers,
picks the seasonal structure (daily Fourier terms at 5-15 minute buckets, a seasonal ``m`` where it
is small), runs ``pmdarima.auto_arima`` on the recent window and stores orders + parameters +
calibration as JSON. ``predict`` re-filters the recent window with the stored parameters (about a
millisecond), combines with seasonal naive where the window's errors say it helps and adds the
per-horizon empirical error quantiles. ``refit`` re-estimates the parameters of the stored orders by
conditional least squares warm-started from the stored ones (tens of milliseconds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from airflow_predictive.forecasting import arima, tails
from airflow_predictive.forecasting.models import (
    STATE_VERSION,
    Prediction,
    SeriesModel,
    finish,
    season_length,
    seasonal_naive_point,
)
from airflow_predictive.forecasting.series import SeriesWindow

FOURIER_CHOICES = (0, 1, 2, 3, 4, 6, 8)


def robust_scale(values: np.ndarray) -> float:
    """A robust level to divide by: the median of the non-zero magnitudes (1.0 for an all-zero series)."""
    magnitude = np.abs(values[np.isfinite(values)])
    nonzero = magnitude[magnitude > 0]
    if nonzero.size == 0:
        return 1.0
    return float(np.median(nonzero)) or float(np.mean(nonzero))


def clip_bounds(z: np.ndarray, sigmas: float, max_share: float = 0.05) -> tuple[float, float]:
    """Bounds beyond which a value is a gross outlier for the model input (median +- sigmas robust SDs).

    Never more than ``max_share`` of the values on either side: when bursts are a tenth of the
    buckets (NAB network_in_5abac7) they are demand, not outliers, and clipping them all left the
    model a flat baseline; a level shift (NAB rds_cpu from 17 % to 28 %) was clipped the same way.
    5% beat 1% and 10% on the shared traces' rolling-origin MASE.
    """
    median = float(np.median(z))
    spread = 1.4826 * float(np.median(np.abs(z - median)))
    if spread <= 0:
        spread = float(np.std(z)) or 1.0
    lo_q, hi_q = np.quantile(z, [max_share, 1 - max_share])
    return min(median - sigmas * spread, float(lo_q)), max(median + sigmas * spread, float(hi_q))


#: The newest run of buckets above the upper clip bound that is a level shift, not outliers (seconds).
#: Clipped, a shift reads as the old level until it fills 5% of the fit window (six hours of five days):
#: after NAB rds_cpu's jump from 17% to 28% CPU the model read 22.8 and issued q0.9 = 26.0 one step
#: ahead while demand held 27.5, and the boot lead's q0.9 was exceeded in 42 of the next morning's 48
#: steps. Only upward: a clipped drop over-forecasts (capacity), a clipped rise under-forecasts (unmet).
LEVEL_SHIFT_S = 1800


def clip_input(z: np.ndarray, bounds: Sequence[float], interval_s: int) -> np.ndarray:
    """``z`` clipped to ``bounds``, except a newest run of :data:`LEVEL_SHIFT_S` or more above the upper
    bound, which the model reads as the new level.

    :param z: the scaled window, oldest first.
    :param bounds: ``(lo, hi)`` from :func:`clip_bounds`.
    :param interval_s: bucket width in seconds.
    """
    lo, hi = bounds
    out = np.clip(z, lo, hi)
    persist = max(1, math.ceil(LEVEL_SHIFT_S / interval_s))
    above = np.asarray(z) > hi
    if z.size >= persist and above[-persist:].all():
        run = z.size - int(np.flatnonzero(~above)[-1]) - 1 if (~above).any() else z.size
        out[-run:] = z[-run:]
    return out


def _fourier_k(
    z: np.ndarray, buckets: np.ndarray, period: int, max_k: int
) -> tuple[int, np.ndarray, np.ndarray]:
    """Number of daily Fourier pairs by BIC of the OLS fit (with a constant); returns (k, beta, residual)."""
    best = (math.inf, 0, np.array([z.mean()]), z - z.mean())
    n = z.size
    for k in FOURIER_CHOICES:
        if k > max_k or (k and n < 1.5 * period):
            continue
        spec = {"order": [0, 0, 0], "seasonal_order": [0, 0, 0, 0], "fourier": {"period": period, "k": k}}
        X = arima.exog(buckets, spec)
        beta, *_ = np.linalg.lstsq(X, z, rcond=None)
        resid = z - X @ beta
        rss = float(resid @ resid) or 1e-12
        bic = n * math.log(rss / n) + X.shape[1] * math.log(n)
        if bic < best[0]:
            best = (bic, k, beta, resid)
    return best[1], best[2], best[3]


def _params(fitted, order: tuple, seasonal_order: tuple) -> dict:
    """AR/MA coefficients of a fitted pmdarima model, by statsmodels parameter name."""
    names = list(fitted.arima_res_.model.param_names)
    values = dict(zip(names, np.asarray(fitted.params(), dtype=float).tolist(), strict=False))
    m = seasonal_order[3]
    return {
        "ar": [values.get(f"ar.L{i}", 0.0) for i in range(1, order[0] + 1)],
        "ma": [values.get(f"ma.L{i}", 0.0) for i in range(1, order[2] + 1)],
        "sar": [values.get(f"ar.S.L{m * i}", 0.0) for i in range(1, seasonal_order[0] + 1)],
        "sma": [values.get(f"ma.S.L{m * i}", 0.0) for i in range(1, seasonal_order[2] + 1)],
    }


@dataclass
class Selection:
    """What order selection found.

    :param state: the JSON state (orders, parameters, scaling, exogenous spec), without calibration.
    :param model: the pmdarima model ``auto_arima`` chose, fitted to ``residual``.
    :param beta: OLS coefficients of constant + Fourier terms (the first stage).
    :param residual: the scaled, clipped selection window minus the first stage.
    """

    state: dict
    model: object
    beta: np.ndarray
    residual: np.ndarray

    def refit_exact(self):
        """The chosen orders re-fitted by exact maximum likelihood (pmdarima defaults), for its own predict."""
        import pmdarima as pm

        seasonal = self.state["seasonal_order"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pm.ARIMA(
                order=tuple(self.state["order"]),
                seasonal_order=tuple(seasonal) if seasonal[3] else (0, 0, 0, 0),
                with_intercept=False,
                method="lbfgs",
                maxiter=50,
                suppress_warnings=True,
            ).fit(self.residual)


class AutoArima(SeriesModel):
    """pmdarima auto-ARIMA selection with a stored-parameter warm path, seasonal-naive combination and calibration.

    :param select_days: days of history given to ``auto_arima`` (selection cost grows with it).
    :param fit_days: days of history the parameters are (re-)estimated on by CSS, and the scale and
        clip bounds measured on.
    :param calibration_days: days of history whose forecast errors calibrate the quantiles (the
        engine's whole window: fewer days leave too few independent day-ahead errors).
    :param filter_days: days re-filtered at each warm forecast.
    :param max_p: largest AR order searched.
    :param max_q: largest MA order searched.
    :param max_fourier: largest number of daily Fourier pairs.
    :param max_seasonal_m: bucket counts per day up to which a seasonal ARIMA replaces Fourier terms.
    :param maxiter: optimizer iterations per candidate in ``auto_arima``.
    :param clip_sigmas: robust SDs beyond which a value is clipped in the model input.
    :param combine: allow combining with seasonal naive where measured better.
    :param calibration_half_life_days: recency weighting of the calibration errors (``None``: equal).
    """

    name = "auto_arima"

    def __init__(
        self,
        *,
        select_days: float = 2.0,
        fit_days: float = 5.0,
        calibration_days: float = 7.0,
        filter_days: float = 2.0,
        max_p: int = 3,
        max_q: int = 3,
        max_fourier: int = 6,
        max_seasonal_m: int = 48,
        maxiter: int = 20,
        clip_sigmas: float = 10.0,
        combine: bool = True,
        calibration_half_life_days: float | None = None,
    ) -> None:
        self.select_days = select_days
        self.fit_days = fit_days
        self.calibration_days = calibration_days
        self.filter_days = filter_days
        self.max_p = max_p
        self.max_q = max_q
        self.max_fourier = max_fourier
        self.max_seasonal_m = max_seasonal_m
        self.maxiter = maxiter
        self.clip_sigmas = clip_sigmas
        self.combine = combine
        self.calibration_half_life_days = calibration_half_life_days

    # ---------------------------------------------------------------- selection

    def select(self, window: SeriesWindow, *, refine: bool = True) -> Selection:
        """Run ``auto_arima`` on the scaled recent window; return the state (without calibration) and more.

        :param window: the history (at least two days is sensible).
        :param refine: re-estimate all parameters jointly by CSS on the calibration window afterwards.
        """
        import pmdarima as pm

        period = season_length(window.interval_s)
        scale = robust_scale(window.values[-self._buckets(self.fit_days, period) :])
        n_select = self._buckets(self.select_days, period)
        z_all = window.values / scale
        lo, hi = clip_bounds(z_all[-self._buckets(self.fit_days, period) :], self.clip_sigmas)
        z = clip_input(z_all[-n_select:], (lo, hi), window.interval_s)
        buckets = window.buckets[-n_select:]
        seasonal = period <= self.max_seasonal_m and z.size >= 3 * period
        kwargs = dict(
            seasonal=seasonal,
            m=period if seasonal else 1,
            stepwise=True,
            max_p=self.max_p,
            max_q=self.max_q,
            max_P=1,
            max_Q=1,
            max_d=1,
            max_D=1,
            maxiter=self.maxiter,
            method="lbfgs",
            with_intercept=False,
            suppress_warnings=True,
            error_action="ignore",
            # Both cut each candidate's cost several-fold without changing the selected orders.
            sarimax_kwargs={"simple_differencing": True, "concentrate_scale": True},
        )
        if seasonal:
            k, beta, resid = 0, np.array([z.mean()]), z - z.mean()
        else:
            k, beta, resid = _fourier_k(z, buckets, period, self.max_fourier)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = int(pm.arima.ndiffs(resid, test="kpss", max_d=1))
            try:
                fitted = pm.auto_arima(resid, d=d, **kwargs)
            except ValueError:
                # "no viable model": every candidate failed to converge; a small fixed order always fits
                fitted = pm.ARIMA(
                    order=(1, d, 1),
                    with_intercept=False,
                    method="lbfgs",
                    maxiter=self.maxiter,
                    suppress_warnings=True,
                    **kwargs["sarimax_kwargs"],  # pm.ARIMA takes them as keywords, not as one dict
                ).fit(resid)
                seasonal = False
        order = tuple(int(v) for v in fitted.order)
        seasonal_order = tuple(int(v) for v in fitted.seasonal_order) if seasonal else (0, 0, 0, 0)
        state = {
            "kind": "arima",
            "version": STATE_VERSION,
            "pmdarima": pm.__version__,
            "interval_s": window.interval_s,
            "scale": scale,
            "clip": [lo, hi],
            "order": list(order),
            "seasonal_order": list(seasonal_order),
            "fourier": {"period": period, "k": k},
            "sigma2": float(np.var(resid)),
            "selected_at": datetime.now(UTC).isoformat(),
            "training_end_bucket": int(window.end),
            "training_buckets": int(z.size),
        }
        state.update(_params(fitted, order, seasonal_order))
        # Two-stage regression with ARIMA errors: pmdarima modelled the OLS residual; a differenced
        # model drops the constant (differencing removes it), keeping the Fourier coefficients.
        differenced = d > 0 or seasonal_order[1] > 0
        state["beta"] = (beta[1:] if differenced else beta).tolist()
        if refine:
            zc, bc = self._recent(window, state, self.fit_days)
            state = arima.css_refit(zc, bc, state)
        return Selection(state, fitted, np.asarray(beta, dtype=float), resid)

    # ---------------------------------------------------------------- SeriesModel interface

    def fit(self, window: SeriesWindow, *, steps: int, levels: tuple[float, ...]) -> dict:
        """Select orders with ``auto_arima``, refine by CSS and calibrate; return the JSON state."""
        state = self.select(window).state
        return self.calibrated(window, state, steps=steps, levels=levels)

    def refit(self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]) -> dict:
        """Warm re-estimation of the stored orders' parameters (CSS) and fresh calibration."""
        period = season_length(window.interval_s)
        new = dict(state)
        z_all = window.values / state["scale"]
        new["clip"] = list(clip_bounds(z_all[-self._buckets(self.fit_days, period) :], self.clip_sigmas))
        z, buckets = self._recent(window, new, self.fit_days)
        new = arima.css_refit(z, buckets, new, maxiter=25)
        new["refit_at"] = datetime.now(UTC).isoformat()
        return self.calibrated(window, new, steps=steps, levels=levels)

    def calibrated(self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]) -> dict:
        """``state`` with a calibration learned from the window's recent forecast errors.

        :param window: the history.
        :param state: a state with orders and parameters.
        :param steps: forecast horizon in buckets.
        :param levels: quantile levels.
        """
        period = season_length(window.interval_s)
        n = self._buckets(self.calibration_days, period)
        raw = window.values[-n:] / state["scale"]
        z = clip_input(raw, state["clip"], window.interval_s)
        new = dict(state)
        new["calibration"] = arima.calibrate(
            z,
            raw,
            window.buckets[-n:],
            state,
            levels=levels,
            horizon=steps,
            period=period,
            combine=self.combine,
            half_life=self.calibration_half_life_days * period if self.calibration_half_life_days else None,
        )
        # A correction the feedback loop made (coverage drifted) outlives this re-learning: the offsets
        # stay "learned base x correction" until the loop measures again and changes the factor.
        previous = state.get("calibration") or {}
        factor = previous.get("feedback_factor")
        if factor and new["calibration"].get("offsets"):
            new["calibration"]["offsets"] = (
                np.asarray(new["calibration"]["offsets"], dtype=float) * factor
            ).tolist()
            new["calibration"]["feedback_factor"] = factor
            new["calibration"]["feedback_at"] = previous.get("feedback_at")
        new["calibrated_end_bucket"] = int(window.end)
        return new

    def predict(
        self, window: SeriesWindow, state: dict, *, steps: int, levels: tuple[float, ...]
    ) -> Prediction:
        """Re-filter the recent window with the stored parameters and forecast with calibrated quantiles."""
        period = season_length(window.interval_s)
        z, buckets = self._recent(window, state, self.filter_days)
        point, innovations = arima.forecast_and_innovations(z, buckets, state, steps)
        calibration = state.get("calibration") or {}
        if calibration.get("levels") != list(levels) or calibration.get("h", [0])[-1] < steps:
            state = self.calibrated(window, state, steps=steps, levels=levels)
            calibration = state["calibration"]
        weight, offsets = arima.interpolate(calibration, steps)
        if np.isnan(offsets).any():
            return _normal(point, state, steps, levels, window, self.name, "uncalibrated")
        raw = window.values / state["scale"]
        if raw.size >= period and (weight < 1).any():
            point = weight * point + (1 - weight) * seasonal_naive_point(raw, period, steps)
        if calibration.get("tails"):
            # one-step surprises against the raw series, as the calibration measured them
            surprise = innovations + raw[-z.size :] - z
            offsets = self._sharper_tails(offsets, calibration, surprise, window.end + 1)
        scale = state["scale"]
        return finish(point * scale, offsets * scale, nonnegative=True, model=self.name)

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _sharper_tails(
        offsets: np.ndarray, calibration: dict, surprise: np.ndarray, first_bucket: int
    ) -> np.ndarray:
        """``offsets`` with the short leads' rows conditioned on block of the day and recent volatility.

        The feedback loop's width correction multiplies the stored pooled offsets and records its
        factor; the conditional table is stored as learned, so the factor is applied here.
        """
        short = tails.offsets(
            calibration["tails"], surprise=surprise, first_bucket=first_bucket, steps=len(offsets)
        )
        out = offsets.copy()
        out[: len(short)] = short * float(calibration.get("feedback_factor") or 1.0)
        return out

    @staticmethod
    def _buckets(days: float, period: int) -> int:
        return max(1, round(days * period))

    def _recent(self, window: SeriesWindow, state: dict, days: float) -> tuple[np.ndarray, np.ndarray]:
        """The scaled, clipped last ``days`` of the window and their bucket numbers."""
        period = season_length(window.interval_s)
        n = self._buckets(days, period)
        a, _, _ = arima.polynomials(state)
        n = max(n, 4 * len(a))
        z = clip_input(window.values[-n:] / state["scale"], state["clip"], window.interval_s)
        return z, window.buckets[-n:]


def _normal(point, state, steps, levels, window, name, fallback) -> Prediction:
    """Gaussian intervals from psi weights: used only when no empirical calibration could be learned."""
    from statistics import NormalDist

    psi = arima.psi_weights(state, steps)
    sd = np.sqrt(max(state.get("sigma2", 0.0), 1e-12) * np.cumsum(psi**2))
    offsets = np.column_stack([NormalDist().inv_cdf(q) * sd for q in levels])
    scale = state["scale"]
    return finish(point * scale, offsets * scale, nonnegative=True, model=name, fallback=fallback)

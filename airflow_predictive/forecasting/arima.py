"""ARIMA with Fourier (or seasonal) terms as plain numbers: filter, forecast, re-estimate, calibrate.

The model is a regression with ARIMA errors on the series divided by a robust level ``scale``:
``z_t = x_t' beta + u_t`` with ``phi(B) Phi(B^m) (1-B)^d (1-B^m)^D u_t = theta(B) Theta(B^m) e_t``.
``x_t`` holds a constant (when undifferenced) and daily Fourier terms evaluated at absolute time
(epoch bucket number), so a stored state applies to any window. Everything here is numpy/scipy on
arrays (``scipy.signal.lfilter`` runs the recursions), so a warm forecast costs about a millisecond;
pmdarima is only used for order selection (:mod:`airflow_predictive.forecasting.auto_arima`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, signal

from airflow_predictive.forecasting import tails
from airflow_predictive.forecasting.series import STUCK_DAYS, knots, stuck


def exog(buckets: np.ndarray, state: dict) -> np.ndarray:
    """Regressors at the given bucket numbers: constant (if ``d == D == 0``) and Fourier pairs."""
    constant = state["order"][1] == 0 and state["seasonal_order"][1] == 0
    period, k = state["fourier"]["period"], state["fourier"]["k"]
    out = np.empty((buckets.size, int(constant) + 2 * k))
    if constant:
        out[:, 0] = 1.0
    if k:
        out[:, int(constant) :] = _fourier_table(int(period), int(k))[buckets % period]
    return out


@functools.lru_cache(maxsize=32)
def _fourier_table(period: int, k: int) -> np.ndarray:
    """``sin_1, cos_1, sin_2, cos_2, ...`` at each phase ``0..period-1`` (looked up, not recomputed)."""
    angle = np.multiply.outer(2 * np.pi * np.arange(period) / period, np.arange(1, k + 1))
    table = np.empty((period, 2 * k))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)
    table.flags.writeable = False
    return table


def polynomials(state: dict, params: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, ma, delta)``: the integrated AR polynomial, the MA polynomial and the differencing polynomial."""
    params = params or state
    m = state["seasonal_order"][3]
    # plain concatenation: np.r_ costs more than the filtering of a whole window here
    ar = np.concatenate(([1.0], -np.asarray(params["ar"], dtype=float)))
    ma = np.concatenate(([1.0], np.asarray(params["ma"], dtype=float)))
    if m and (params["sar"] or params["sma"]):
        sar = np.zeros(m * len(params["sar"]) + 1)
        sar[0] = 1.0
        sar[m::m] = -np.asarray(params["sar"], dtype=float)
        sma = np.zeros(m * len(params["sma"]) + 1)
        sma[0] = 1.0
        sma[m::m] = np.asarray(params["sma"], dtype=float)
        ar, ma = np.convolve(ar, sar), np.convolve(ma, sma)
    delta = np.array([1.0])
    for _ in range(state["order"][1]):
        delta = np.convolve(delta, [1.0, -1.0])
    if m:
        seasonal_diff = np.zeros(m + 1)
        seasonal_diff[[0, m]] = [1.0, -1.0]
        for _ in range(state["seasonal_order"][1]):
            delta = np.convolve(delta, seasonal_diff)
    return np.convolve(ar, delta), ma, delta


def innovations(z: np.ndarray, buckets: np.ndarray, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """One-step innovations ``e`` of the scaled window and the regression residual ``u`` (CSS recursion)."""
    a, ma, _ = polynomials(state)
    u = z - exog(buckets, state) @ np.asarray(state["beta"], dtype=float)
    e = signal.lfilter(a, ma, u)
    # The first len(a)-1 innovations lack their past (zero initial conditions): treat them as unknown.
    e[: len(a) - 1] = 0.0
    return e, u


def point_forecast(z: np.ndarray, buckets: np.ndarray, state: dict, steps: int) -> np.ndarray:
    """Mean forecast of the scaled series for the ``steps`` buckets after the window."""
    return forecast_and_innovations(z, buckets, state, steps)[0]


def forecast_and_innovations(
    z: np.ndarray, buckets: np.ndarray, state: dict, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`point_forecast` and the window's one-step innovations it filtered (one pass for both)."""
    a, ma, _ = polynomials(state)
    e, u = innovations(z, buckets, state)
    zi = signal.lfiltic(ma, a, u[::-1][: len(a)], e[::-1][: len(ma)])
    future_u = signal.lfilter(ma, a, np.zeros(steps), zi=zi)[0]
    future = np.arange(buckets[-1] + 1, buckets[-1] + 1 + steps, dtype=np.int64)
    return exog(future, state) @ np.asarray(state["beta"], dtype=float) + future_u, e


def psi_weights(state: dict, steps: int) -> np.ndarray:
    """Impulse response of ``theta/a``: ``err_h = sum_{j<h} psi_j e_{t+h-j}``."""
    a, ma, _ = polynomials(state)
    impulse = np.zeros(steps)
    impulse[0] = 1.0
    return signal.lfilter(ma, a, impulse)


# ------------------------------------------------------------------ parameter vector helpers


ARMA_NAMES = ("ar", "ma", "sar", "sma")


def _pack(state: dict) -> np.ndarray:
    """The ARMA coefficients as one vector (the regression ``beta`` is solved for, not searched)."""
    return np.array([v for name in ARMA_NAMES for v in state[name]], dtype=float)


def _unpack(vector: np.ndarray, state: dict) -> dict:
    out, i = {}, 0
    for name in ARMA_NAMES:
        n = len(state[name])
        out[name] = vector[i : i + n].tolist()
        i += n
    return out


def is_stable(state: dict, params: dict | None = None) -> bool:
    """AR part stationary and MA part invertible (all roots outside the unit circle)."""
    params = params or state
    for name, sign in (("ar", -1.0), ("ma", 1.0), ("sar", -1.0), ("sma", 1.0)):
        coeffs = params[name]
        if coeffs and np.any(np.abs(np.roots(np.r_[1.0, sign * np.asarray(coeffs)][::-1])) <= 1.0001):
            return False
    return True


def css_refit(z: np.ndarray, buckets: np.ndarray, state: dict, *, maxiter: int = 40) -> dict:
    """Re-estimate beta and the ARMA coefficients by conditional least squares, warm-started from ``state``.

    Variable projection: the innovations ``a/ma (z - X beta)`` are linear in ``beta`` (zero initial
    conditions), so for given ARMA coefficients the best ``beta`` is one least-squares solve on the
    filtered ``z`` and ``X``; the optimizer only searches the few ARMA coefficients (a numerical
    gradient over 2-3 numbers instead of 15 with the Fourier terms: several-fold fewer filters).

    Returns a new state (orders unchanged) whose ARMA part is always stationary and invertible: an
    unstable stored state restarts from white noise (its explosive innovations overflowed, and
    every later filter of it did too); an unstable optimum keeps the stable start.
    """
    if not is_stable(state):
        state = {**state, **{name: [0.0] * len(state[name]) for name in ARMA_NAMES}}
    X = exog(buckets, state)
    if X.shape[1] != len(state["beta"]):
        raise ValueError(f"state has {len(state['beta'])} regression coefficients, its spec {X.shape[1]}")
    burn = len(polynomials(state)[0]) - 1
    data = np.column_stack([z, X])

    def solve(vector: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean squared innovation, best beta) for ARMA coefficients ``vector``."""
        a, ma, _ = polynomials(state, {**_unpack(vector, state), "beta": state["beta"]})
        with np.errstate(all="ignore"):  # unstable trial points overflow; they just score badly
            filtered = signal.lfilter(a, ma, data, axis=0)[burn:]
            if not np.isfinite(filtered).all():
                return 1e300, np.zeros(X.shape[1])
            target, design = filtered[:, 0], filtered[:, 1:]
            beta = np.linalg.lstsq(design, target, rcond=None)[0] if design.shape[1] else np.zeros(0)
            e = target - design @ beta
            value = float(e @ e) / max(1, e.size)
        return (value if math.isfinite(value) else 1e300), beta

    x0 = _pack(state)
    start, beta0 = solve(x0)
    new = dict(state)
    best, x_best, beta_best = start, x0, beta0
    if x0.size:
        # the optimizer's finite differences across an unstable trial point overflow too
        with np.errstate(over="ignore", invalid="ignore"):
            result = optimize.minimize(
                lambda v: solve(v)[0], x0, method="L-BFGS-B", options={"maxiter": maxiter}
            )
        if result.fun < start and is_stable(state, {**_unpack(result.x, state)}):
            best, beta_best = solve(result.x)
            x_best = result.x
    new.update(_unpack(x_best, state))
    new["beta"] = np.asarray(beta_best, dtype=float).tolist()
    new["sigma2"] = float(best)
    return new


# ------------------------------------------------------------------ calibration and combination

#: Fewer live errors at a lead than this: calibrate on all of them (a pool idle most of the window).
MIN_LIVE_ERRORS = 100


def calibrate(
    z: np.ndarray,
    raw: np.ndarray,
    buckets: np.ndarray,
    state: dict,
    *,
    levels: tuple[float, ...],
    horizon: int,
    period: int,
    combine: bool = True,
    half_life: float | None = None,
) -> dict:
    """Learn, from the window's own forecast errors, the seasonal-naive weight and error quantiles per horizon.

    For every knot ``h`` the exact ``h``-step errors of the ARIMA forecast (``psi`` convolution of the
    innovations) and of the seasonal naive forecast are computed at every origin of the window; the
    combination weight minimising the mean absolute error is chosen on a grid, and the empirical
    quantiles of the combined error (against the raw, unclipped series) become the quantile offsets.

    :param z: the scaled, cleaned window the model filters.
    :param raw: the scaled window before outlier clipping (what the forecast is judged against).
    :param buckets: bucket numbers of the window.
    :param state: the model state.
    :param levels: quantile levels.
    :param horizon: forecast steps.
    :param period: buckets per day (seasonal naive lag).
    :param combine: allow mixing in the seasonal naive forecast.
    :param half_life: weight errors by recency with this half-life in origins (``None``: equal weights).

    The quantiles leave out the errors whose target lies in a stretch of identical values a day or
    longer (:func:`~.series.stuck`), while enough others remain: see :data:`~.series.STUCK_DAYS`.
    """
    hs = knots(state["interval_s"], horizon)
    e, _ = innovations(z, buckets, state)
    psi = psi_weights(state, int(hs[-1]))
    burn = len(polynomials(state)[0]) - 1 + 1
    clip_gap = raw - z
    live = ~stuck(raw, max(1, round(STUCK_DAYS * period)))
    short = set(tails.short_leads(hs, state["interval_s"]))
    weights, offsets, short_errors = [], [], {}
    for h in hs:
        h = int(h)
        arima_err = np.convolve(e[burn:], psi[:h], mode="valid") if e.size - burn >= h else np.empty(0)
        # error of the forecast made at origin t for bucket t+h, against the raw actual
        targets = np.arange(burn + h - 1, e.size)
        arima_err = arima_err + clip_gap[targets]
        lag = period * math.ceil(h / period)
        weight = 1.0
        err, err_targets = arima_err, targets
        if combine and period > 1:
            ok = targets - lag >= 0
            if ok.sum() >= max(50, period // 2):
                naive_err = raw[targets[ok]] - raw[targets[ok] - lag]
                a_err = arima_err[ok]
                grid = np.linspace(0.0, 1.0, 11)
                mae = np.abs(np.multiply.outer(grid, a_err) + np.multiply.outer(1 - grid, naive_err)).mean(
                    axis=1
                )
                weight = float(grid[int(np.argmin(mae))])
                err, err_targets = weight * a_err + (1 - weight) * naive_err, targets[ok]
        keep = live[err_targets]
        if MIN_LIVE_ERRORS <= keep.sum() < keep.size:
            err, err_targets = err[keep], err_targets[keep]
        weights.append(weight)
        offsets.append(_widened(err, levels, half_life))
        if h in short:
            short_errors[h] = (err, err_targets)
    out = {
        "h": hs.tolist(),
        "weight": weights,
        "levels": list(levels),
        "offsets": offsets,
        "n": int(e.size - burn),
    }
    table = tails.learn(
        short_errors,
        surprise=e + clip_gap,
        buckets=buckets,
        period=period,
        interval_s=state["interval_s"],
        quantiles=lambda normalised: _widened(normalised, levels, half_life),
    )
    if table is not None:
        out["tails"] = table
    return out


def _widened(err: np.ndarray, levels: tuple[float, ...], half_life: float | None) -> list[float]:
    """Error quantiles of the whole window, widened by how much the newest part outgrew the older part.

    In-sample errors are optimistic and demand drifts: the spread (quantile minus median) learned on
    the older 60% of origins is compared with the spread on the newest 40%; when the newest is wider,
    the whole-window spread is scaled up by that ratio (at most 3x), never narrowed.
    """
    base = _quantiles(err, levels, half_life)
    err = err[np.isfinite(err)]
    split = int(0.6 * err.size)
    if err.size < 100 or any(math.isnan(v) for v in base):
        return base
    older = _linear_quantiles(np.sort(err[:split]), (0.5, *levels))
    newer = _linear_quantiles(np.sort(err[split:]), (0.5, *levels))
    median = float(_linear_quantiles(np.sort(err), (0.5,))[0])
    out = []
    for j, q in enumerate(levels):
        spread_old = older[j + 1] - older[0]
        spread_new = newer[j + 1] - newer[0]
        if q > 0.5 and spread_old > 0 and spread_new > spread_old:
            factor = min(3.0, spread_new / spread_old)
            out.append(median + factor * (base[j] - median))
        else:
            out.append(base[j])
    return out


def _quantiles(err: np.ndarray, levels: tuple[float, ...], half_life: float | None = None) -> list[float]:
    """Empirical error quantiles, the newest errors weighted most (half-life in origins).

    Demand drifts, so errors are not exchangeable: weighting recent origins (non-exchangeable
    conformal prediction) follows level and volatility changes within a day instead of a week.
    """
    err = err[np.isfinite(err)]
    if err.size < 20:
        return [float("nan")] * len(levels)
    n = err.size
    if not half_life:
        # conformal finite-sample correction: the ceil((n+1)q)/n empirical quantile
        adjusted = np.array([min(1.0, math.ceil((n + 1) * q) / n) for q in levels])
        # np.quantile(method="higher") without its per-call overhead (this runs 10x per refit)
        return np.sort(err)[np.ceil(adjusted * (n - 1)).astype(np.int64)].astype(float).tolist()
    weights = 0.5 ** ((n - 1 - np.arange(n)) / half_life)
    order = np.argsort(err, kind="stable")
    cum = np.cumsum(weights[order])
    total = cum[-1] + weights[-1]  # one extra "test point" of the newest weight, as in conformal
    out = []
    for q in levels:
        i = int(np.searchsorted(cum, q * total, side="left"))
        out.append(float(err[order[min(i, n - 1)]]))
    return out


def _linear_quantiles(ordered: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """``np.quantile``'s default (linear) quantiles of an already sorted array."""
    position = np.asarray(levels, dtype=float) * (ordered.size - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, ordered.size - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def interpolate(calibration: dict, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-step seasonal-naive weight ``(steps,)`` and quantile offsets ``(steps, levels)``."""
    hs = np.asarray(calibration["h"], dtype=float)
    at = np.arange(1, steps + 1, dtype=float)
    weight = np.interp(at, hs, calibration["weight"])
    offsets = np.asarray(calibration["offsets"], dtype=float)
    table = np.column_stack([np.interp(at, hs, offsets[:, j]) for j in range(offsets.shape[1])])
    return weight, table

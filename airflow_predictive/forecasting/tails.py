"""Sharper tails at short leads: forecast-error quantiles that depend on when and how the series surprises.

One error distribution for a week of forecasts is too narrow in the hours that burst and too wide in
the quiet ones (the backtest's calibration by block of the day at the boot lead showed it on bitbrains
407/411/412 and NAB rds). For leads up to :data:`SHORT_LEAD_S` the errors are scaled by two factors:

- the **block of the day** of the bucket forecast (:data:`BLOCK_HOURS` wide, UTC): the mean error of
  the block over the window's days, shrunk toward the typical block-day by :data:`SHRINK_DAYS`;
- the **recent surprise** at the forecast origin: the mean one-step forecast error (against the raw
  series) over the last hour, in :data:`REGIMES` regimes split at its terciles over the window. Its
  sign says where the series is breaking out to (a burst starting, a level shift); on the shared
  traces the signed mean beat the mean absolute error (bitbrains 407: q0.9 exceeded 9.8% against
  12.6%, docs/benchmarks.md). Each regime's factor is shrunk toward 1 by :data:`SHRINK` pseudo-errors.

Errors above and below zero get their own scales (bursts skew the errors upward). The quantile offsets
are the window's empirical quantiles of the errors divided by their own scale (normalised, "locally
weighted" conformal prediction), times the scale where a forecast falls. A scale is a mean, stable on a
few dozen errors, while the shape of the tail is learned from all of them: quantiles per group would
need far more errors than a week holds.

Plain numbers in, a small JSON table out (stored in the model's calibration as ``tails``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

#: Leads up to this many seconds get conditional tails; longer leads keep the pooled offsets.
SHORT_LEAD_S = 3600
#: Width of a block of the day, hours. Recurring bursts keep to an hour or so (Alibaba 2018: spikes of
#: +50% at 00:35-01:30 every night); a 4-hour block spread their headroom over the calm hours beside
#: them, and the service-level choice bought it all day. With 1-hour blocks the backtest's
#: ``predictive`` held 0.842x reactive's capacity-hours on Alibaba (0.893x with 4-hour blocks) and 0.831x
#: on bitbrains 411 (0.876x). 30-minute blocks cost more on Alibaba (0.918x) and left more unmet on 407.
BLOCK_HOURS = 1
#: Recent-surprise regimes (split at the window's quantiles of the recent surprise).
REGIMES = 3
#: Pseudo-errors at factor 1 added to each regime's (shrinkage by count).
SHRINK = 30.0
#: Pseudo-days of the typical block-day added to each block's days. A window of three to seven days
#: holds few days of each hour; at 2 a nightly spike hour's scale was pulled 40% of the way to the calm
#: hours' on a three-day window (Alibaba 0.857x reactive's capacity-hours, 0.842x at 1, 0.877x at 4).
SHRINK_DAYS = 1.0
#: Fewer errors at a lead than this: no conditional tails (the pooled offsets stay).
MIN_ERRORS = 200
#: No block's scale below this share of the whole window's (an error side that is mostly zero, as in
#: a series idle most of the day, must not divide by about nothing).
FLOOR_SHARE = 0.25
_TINY = 1e-9


def short_leads(knots: np.ndarray, interval_s: int) -> list[int]:
    """The calibration knots (in buckets) that get conditional tails.

    :param knots: calibration horizons in buckets.
    :param interval_s: bucket width in seconds.
    """
    last = max(1, SHORT_LEAD_S // interval_s)
    return [int(h) for h in knots if h <= last]


def block_of(buckets: np.ndarray, period: int, blocks: int) -> np.ndarray:
    """Block of the day (``0 .. blocks-1``) of each epoch bucket number.

    :param buckets: epoch bucket numbers (epoch seconds // interval).
    :param period: buckets per day.
    :param blocks: blocks per day.
    """
    return (np.asarray(buckets, dtype=np.int64) % period) * blocks // period


def recent_surprise(surprise: np.ndarray, width: int) -> np.ndarray:
    """Mean one-step surprise over the ``width`` buckets ending at each bucket (the first average what they have).

    :param surprise: the one-step forecast error at each bucket, against the raw (unclipped) series.
    :param width: buckets averaged.
    """
    total = np.cumsum(np.asarray(surprise, dtype=float))
    lagged = np.concatenate([np.zeros(width), total[:-width]]) if total.size > width else np.zeros(total.size)
    count = np.minimum(np.arange(1, total.size + 1), width)
    return (total - lagged) / count


def regime_of(recent: np.ndarray | float, edges: list[float]) -> np.ndarray:
    """Regime of each recent surprise: how many edges lie strictly below it.

    :param recent: recent surprises.
    :param edges: regime boundaries (ascending).
    """
    return np.searchsorted(np.asarray(edges, dtype=float), recent, side="left")


def _block_scales(part: np.ndarray, block: np.ndarray, day: np.ndarray, blocks: int) -> np.ndarray:
    """Per block, the mean of its day means of ``part``, shrunk toward the median block-day."""
    days, day_index = np.unique(day, return_inverse=True)
    key = np.asarray(block, dtype=np.int64) * days.size + day_index
    count = np.bincount(key, minlength=blocks * days.size).reshape(blocks, days.size)
    total = np.bincount(key, weights=part, minlength=blocks * days.size).reshape(blocks, days.size)
    seen = count > 0
    means = np.divide(total, count, out=np.zeros_like(total), where=seen)
    center = float(np.median(means[seen]))
    n = seen.sum(axis=1)
    scales = np.where(n > 0, (means.sum(axis=1) + SHRINK_DAYS * center) / (n + SHRINK_DAYS), center)
    return np.maximum(scales, FLOOR_SHARE * max(float(part.mean()), _TINY))


def _scales(
    part: np.ndarray, block: np.ndarray, day: np.ndarray, regime: np.ndarray, blocks: int
) -> tuple[np.ndarray, np.ndarray]:
    """The scales of one error side ``part``: ``(blocks,)`` block scales and ``(REGIMES,)`` regime
    factors, the scale of a bucket being their product (:func:`_scale`)."""
    block_scale = _block_scales(part, block, day, blocks)
    ratio = part / block_scale[block]
    mean_ratio = float(ratio.mean())
    factor = np.array(
        [
            (ratio[regime == r].sum() + SHRINK * mean_ratio) / ((regime == r).sum() + SHRINK)
            for r in range(REGIMES)
        ]
    )
    return block_scale, factor


def _scale(block_scale: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``(..., blocks, REGIMES)`` scales from block scales and regime factors."""
    return np.maximum(block_scale[..., :, None] * factor[..., None, :], _TINY)


def _stored(values: np.ndarray) -> list:
    """A table's numbers as stored: six significant digits, far finer than a week of errors pins them
    down, in about half the characters of a full float (a model state is read for every series each
    cycle)."""
    return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(values).tolist()


def learn(
    errors: Mapping[int, tuple[np.ndarray, np.ndarray]],
    *,
    surprise: np.ndarray,
    buckets: np.ndarray,
    period: int,
    interval_s: int,
    quantiles: Callable[[np.ndarray], list[float]],
) -> dict | None:
    """The conditional tail table from the window's own errors at short leads (``None``: too few errors).

    :param errors: per short lead ``h`` (buckets), the errors and the window index of their target bucket.
    :param surprise: the one-step forecast error at each bucket of the window, against the raw series.
    :param buckets: epoch bucket numbers of the window.
    :param period: buckets per day.
    :param interval_s: bucket width in seconds.
    :param quantiles: the error quantiles per level of a 1-d array of errors (the pooled calibration's
        own rule, so both read errors the same way).
    """
    if not errors or any(e[np.isfinite(e)].size < MIN_ERRORS for e, _ in errors.values()):
        return None
    width = max(1, SHORT_LEAD_S // interval_s)
    recent = recent_surprise(surprise, width)
    edges = np.quantile(recent[width:], np.arange(1, REGIMES) / REGIMES).tolist()
    blocks = max(1, round(24 / BLOCK_HOURS))
    hs, up, up_regime, down, down_regime, normalised = [], [], [], [], [], []
    for h, (err, targets) in sorted(errors.items()):
        ok = np.isfinite(err)
        err, targets = err[ok], targets[ok]
        block = block_of(buckets[targets], period, blocks)
        day = buckets[targets] // period
        regime = regime_of(recent[targets - h], edges)
        b_up, f_up = _scales(np.maximum(err, 0.0), block, day, regime, blocks)
        b_down, f_down = _scales(np.maximum(-err, 0.0), block, day, regime, blocks)
        s_up, s_down = _scale(b_up, f_up), _scale(b_down, f_down)
        scale = np.where(err >= 0, s_up[block, regime], s_down[block, regime])
        hs.append(int(h))
        up.append(b_up)
        up_regime.append(f_up)
        down.append(b_down)
        down_regime.append(f_down)
        normalised.append(quantiles(err / scale))
    if np.isnan(np.asarray(normalised, dtype=float)).any():
        return None
    return {
        "h": hs,
        "blocks": blocks,
        "period": int(period),
        "width": int(width),
        "edges": edges,
        # Per lead, the block scales and the regime factors of each error side; a bucket's scale is
        # their product (stored apart: 24 + 3 numbers a lead, not 24 x 3).
        "up": _stored(np.array(up)),
        "up_regime": _stored(np.array(up_regime)),
        "down": _stored(np.array(down)),
        "down_regime": _stored(np.array(down_regime)),
        "normalised": normalised,
    }


def offsets(table: dict, *, surprise: np.ndarray, first_bucket: int, steps: int) -> np.ndarray:
    """Quantile offsets ``(n, levels)`` of the first ``n = min(steps, longest short lead)`` forecast steps.

    :param table: what :func:`learn` returned.
    :param surprise: the one-step forecast errors of the window ending at the forecast origin.
    :param first_bucket: epoch bucket number of the first forecast step.
    :param steps: forecast steps.
    """
    hs = np.asarray(table["h"], dtype=float)
    n = int(min(steps, hs[-1]))
    recent = recent_surprise(surprise[-table["width"] :], table["width"])[-1]
    regime = int(regime_of(recent, table["edges"]))
    at = np.arange(1, n + 1, dtype=float)
    block = block_of(first_bucket + np.arange(n), table["period"], table["blocks"])
    up = _table_scales(table, "up")[:, :, regime]  # (knots, blocks)
    down = _table_scales(table, "down")[:, :, regime]
    s_up = np.array([np.interp(a, hs, up[:, b]) for a, b in zip(at, block, strict=True)])
    s_down = np.array([np.interp(a, hs, down[:, b]) for a, b in zip(at, block, strict=True)])
    normalised = np.asarray(table["normalised"], dtype=float)
    q = np.column_stack([np.interp(at, hs, normalised[:, j]) for j in range(normalised.shape[1])])
    return np.where(q >= 0, q * s_up[:, None], q * s_down[:, None])


def _table_scales(table: dict, side: str) -> np.ndarray:
    """``(knots, blocks, REGIMES)`` scales of one error side of a stored table. A table learned before
    the factors were stored apart holds the product itself (no ``{side}_regime``)."""
    scales = np.asarray(table[side], dtype=float)
    if f"{side}_regime" not in table:
        return scales
    return _scale(scales, np.asarray(table[f"{side}_regime"], dtype=float))

"""Turn one demand series (any timestamps, gaps, duplicates, junk values) into a regular numeric window.

Every model works on a :class:`SeriesWindow`: a float array on a fixed bucket grid whose last element
is the bucket that contains ``now``. Bad input is either repaired here (duplicates averaged, negatives
clipped, short gaps filled) with a note, or refused with a :class:`SeriesError` naming the series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd


class SeriesError(ValueError):
    """One series cannot be forecast as given; the message names the series and what to fix."""


@dataclass
class SeriesWindow:
    """A regular window of one series: ``values[i]`` is the bucket ``end - len(values) + 1 + i``.

    :param series_id: the series.
    :param values: float values, gaps filled (``observed`` tells which were measured).
    :param end: bucket number (``epoch_seconds // interval_s``) of the last value.
    :param interval_s: bucket width in seconds.
    :param observed: True where a bucket had at least one measurement.
    :param notes: repairs applied (``duplicates_averaged``, ``negatives_clipped``, ``gaps_filled``...).
    """

    series_id: str
    values: np.ndarray
    end: int
    interval_s: int
    observed: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def buckets(self) -> np.ndarray:
        """Bucket numbers of the values."""
        return np.arange(self.end - len(self.values) + 1, self.end + 1, dtype=np.int64)

    @property
    def observed_span(self) -> int:
        """Buckets from the first to the last measured bucket (inclusive)."""
        idx = np.flatnonzero(self.observed)
        return 0 if idx.size == 0 else int(idx[-1] - idx[0] + 1)


def to_epoch_seconds(ts: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Timestamps (aware or naive = UTC, any unit) as int64 epoch seconds, without per-row Python work."""
    values = ts.values if isinstance(ts, pd.Series | pd.Index) else np.asarray(ts)
    if values.dtype == object:  # mixed or string timestamps: let pandas parse once
        values = pd.to_datetime(values, utc=True, format="mixed").tz_convert(None).values
    elif isinstance(getattr(values, "dtype", None), pd.DatetimeTZDtype):
        values = values.tz_convert(None).to_numpy()
    return values.astype("datetime64[s]").astype(np.int64)


def now_bucket(now: datetime, interval_s: int) -> int:
    """Bucket number that contains ``now`` (naive datetimes are UTC)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return int(now.timestamp()) // interval_s


def regular_window(
    series_id: str,
    ts_seconds: np.ndarray,
    values: np.ndarray,
    *,
    interval_s: int,
    end: int,
    length: int,
    season: int,
) -> SeriesWindow:
    """Resample one series onto the bucket grid ``(end - length, end]``, repairing what can be repaired.

    :param series_id: the series (for messages).
    :param ts_seconds: epoch seconds of the samples, in any order.
    :param values: the sample values (NaN = missing).
    :param interval_s: bucket width in seconds.
    :param end: bucket number of the last bucket (the one containing ``now``).
    :param length: number of buckets wanted.
    :param season: buckets per day, used to fill gaps from the same time the day before.
    """
    notes: list[str] = []
    values = np.asarray(values, dtype=float)
    buckets = ts_seconds // interval_s
    keep = (buckets <= end) & (buckets > end - length) & np.isfinite(values)
    buckets, values = buckets[keep], values[keep]
    if buckets.size == 0:
        raise SeriesError(f"series {series_id!r} has no finite value in the window before now")
    if (values < 0).any():
        values = np.maximum(values, 0.0)
        notes.append("negatives_clipped")
    order = np.argsort(buckets, kind="stable")
    buckets, values = buckets[order], values[order]
    unique, first, counts = np.unique(buckets, return_index=True, return_counts=True)
    if unique.size != buckets.size:
        sums = np.add.reduceat(values, first)
        values = sums / counts
        notes.append("duplicates_averaged")
    if unique.size >= 3:
        spacing = float(np.median(np.diff(unique)))
        if spacing > 2:
            raise SeriesError(
                f"series {series_id!r} has one value every {spacing * interval_s / 60:g} minutes but the "
                f"forecaster runs at {interval_s / 60:g}-minute buckets: resample it or set the interval"
            )
    start = int(unique[0])
    grid = np.full(end - start + 1, np.nan)
    grid[unique - start] = values
    observed = np.isfinite(grid)
    if not observed.all():
        grid = _fill_gaps(grid, season)
        notes.append("gaps_filled")
    return SeriesWindow(series_id, grid, end, interval_s, observed, notes)


def _fill_gaps(grid: np.ndarray, season: int) -> np.ndarray:
    """Fill NaN: short gaps linearly, long ones from the same time a day earlier, the tail with the last value."""
    out = grid.copy()
    missing = ~np.isfinite(out)
    idx = np.arange(out.size)
    good = np.flatnonzero(~missing)
    linear = np.interp(idx, good, out[good])
    # A gap longer than an hour is better filled from yesterday's shape than by a straight line.
    run_id = np.cumsum(~missing)
    run_len = np.bincount(run_id[missing], minlength=run_id.max() + 1)[run_id]
    long_gap = missing & (run_len > max(2, season // 24))
    for i in np.flatnonzero(long_gap):
        out[i] = out[i - season] if i >= season and np.isfinite(out[i - season]) else linear[i]
    still = ~np.isfinite(out)
    out[still] = linear[still]
    return out


# Horizons (in buckets) at which forecast errors are measured for calibration and combination;
# values in between are interpolated.
KNOTS_MINUTES = (5, 15, 30, 60, 120, 240, 360, 720, 1080, 1440)


def knots(interval_s: int, horizon: int) -> np.ndarray:
    """Calibration horizons in buckets for a bucket width and a horizon (always includes 1 and ``horizon``)."""
    steps = {max(1, round(m * 60 / interval_s)) for m in KNOTS_MINUTES}
    steps = sorted(s for s in steps if s < horizon) + [horizon]
    return np.array(sorted(set([1, *steps])), dtype=np.int64)


# ------------------------------------------------------------------------------ stuck demand

#: A run of identical values at least this many days long is a stuck metric or a pool with nothing
#: running, and its forecast errors (about zero: the model forecasts the constant) say nothing about how
#: live demand departs from its forecast. Kept in the calibration window, they narrowed the learned
#: quantiles while in it, then made the newest errors look like a surge (:func:`.arima._widened`, up to 3x) once
#: demand came back: on bitbrains 411 (four days stuck, 07-05 to 07-09) the q0.9 at the boot lead was
#: exceeded 12% and 20% of the time on the two days after, then the q0.99 stood 107-143% of mean demand
#: above the mean for three days (62-89% on its other days; docs/benchmarks.md).
STUCK_DAYS = 1.0
#: Consecutive values this close (relative) are the same value: a bucket's mean of one repeated sample
#: can differ from it in the last bit (pandas' mean of three 0.1s is not 0.1), and the store's buckets
#: are such means.
SAME_VALUE_RTOL = 1e-9


def stuck(values: np.ndarray, run: int) -> np.ndarray:
    """Whether each value lies in a run of at least ``run`` identical consecutive values (equal within
    :data:`SAME_VALUE_RTOL`).

    :param values: a series (NaN never repeats, so it never forms a run).
    :param run: the shortest run that counts.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    same = np.isclose(values[1:], values[:-1], rtol=SAME_VALUE_RTOL, atol=0.0)
    starts = np.concatenate(([True], ~same))
    ids = np.cumsum(starts) - 1
    return np.bincount(ids)[ids] >= run

"""Forecast issues packed as arrays: one record per series and issue instead of one row per step.

A forecast frame (``series_id, issued_at, ts, mean, q<level>..., model, fallback``) becomes one
record per ``(series_id, issued_at)``: the step width, the first and last target bucket, the
quantile levels, the offsets of the steps kept (``None``: every step from the first to the last) and
the values, ``mean`` then each level per step, as float32 little-endian bytes (6 values a step with
the default quantiles: 24 bytes instead of a ~200-byte row). float32 keeps 7 significant digits,
far finer than any capacity a pool is sized in. :func:`unpack` turns records back into the frame.

:func:`lead_steps_kept` says which steps of an issue outlive it once a newer issue of its series is
stored: the lead times that scoring and recalibration read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.contracts.forecast import KNOWN

_VALUE = np.dtype("<f4")
_OFFSET = np.dtype("<u2")
_MAX_OFFSET = np.iinfo(_OFFSET).max
#: The most steps one stored issue can span.
MAX_STEPS = int(_MAX_OFFSET) + 1

# Every lead up to 6 steps (30 minutes at 5-minute buckets), then a ladder that grows by 3/2 and 4/3
# in turn: 9, 12, 18, 24, 36, 48, 72, 96, 144, 192, 288 ... 17 leads a 24-hour horizon, four or five in
# each of the evaluation's lead-time buckets (15 min, 1 h, 6 h, 24 h).
_DENSE_LEADS = 6


def lead_steps_kept(horizon_steps: int) -> list[int]:
    """The lead times, in steps (1 = the first bucket after the issue), an issue keeps once superseded.

    :param horizon_steps: the longest lead to cover.
    """
    leads = list(range(1, min(_DENSE_LEADS, horizon_steps) + 1))
    lead, grow_by_half = _DENSE_LEADS, True
    while True:
        lead = lead * 3 // 2 if grow_by_half else lead * 4 // 3
        grow_by_half = not grow_by_half
        if lead > horizon_steps:
            return leads
        leads.append(lead)


def quantile_columns(frame: pd.DataFrame) -> list[str]:
    """The ``q<level>`` columns of a forecast frame, lowest level first."""
    found = [c for c in frame.columns if c.startswith("q") and c[1:].replace(".", "", 1).isdigit()]
    return sorted(found, key=lambda c: float(c[1:]))


def pack(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per ``(series_id, issued_at)`` of a forecast frame (the later of two equal steps wins).

    :param frame: ``series_id, issued_at, ts, mean, q<level>..., model[, fallback]``.
    """
    qcols = quantile_columns(frame)
    # Known work's part (the combined forecast's ``known`` column) rides along as one more "level".
    extra = [KNOWN] if KNOWN in frame.columns else []
    levels = ",".join([*(c[1:] for c in qcols), *extra])
    frame = frame.assign(
        issued_at=pd.to_datetime(frame["issued_at"], utc=True), ts=pd.to_datetime(frame["ts"], utc=True)
    )
    if "fallback" not in frame:
        frame = frame.assign(fallback="")
    frame = frame.drop_duplicates(["series_id", "issued_at", "ts"], keep="last")
    frame = frame.sort_values(["series_id", "issued_at", "ts"], kind="stable")
    values = frame[["mean", *qcols, *extra]].to_numpy(dtype=_VALUE)
    nanos = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8
    ts = np.array(frame["ts"].dt.to_pydatetime(), dtype=object)
    models = frame["model"].to_numpy(dtype=object)
    fallbacks = frame["fallback"].to_numpy(dtype=object)
    records = []
    # Column arrays, not frame lookups: a 5,000-series write packs 5,000 issues.
    for (sid, issued), rows in frame.groupby(["series_id", "issued_at"], sort=False).indices.items():
        first, last = rows[0], rows[-1]
        records.append(
            {
                "series_id": sid,
                "issued_at": issued.to_pydatetime(),
                "model": models[first],
                "fallback": fallbacks[first] if isinstance(fallbacks[first], str) else "",
                "levels": levels,
                "trimmed": False,
                **_layout(sid, nanos[rows], ts[first], ts[last]),
                "values": values[rows].tobytes(),
            }
        )
    return records


def _layout(sid: str, nanos: np.ndarray, first_ts: datetime, last_ts: datetime) -> dict[str, Any]:
    """Step width, first and last bucket and step offsets (``None`` when contiguous) of one issue."""
    since_first = nanos - nanos[0]
    step = int(np.gcd.reduce(np.diff(since_first))) if len(nanos) > 1 else 0
    if step % 1_000_000_000:
        raise ValueError(f"forecast of {sid} has target buckets that are not whole seconds apart")
    offsets = since_first // step if step else np.zeros(1, dtype=np.int64)
    if offsets[-1] > _MAX_OFFSET:
        raise ValueError(f"forecast of {sid} spans more than {_MAX_OFFSET} of its steps")
    contiguous = offsets[-1] == len(offsets) - 1
    return {
        "step_seconds": step // 1_000_000_000,
        "first_ts": first_ts,
        "last_ts": last_ts,
        "steps": None if contiguous else offsets.astype(_OFFSET).tobytes(),
    }


def offsets_of(record: Mapping[str, Any]) -> np.ndarray:
    """The step offsets (from ``first_ts``) of the values a record holds."""
    if record["steps"] is not None:
        return np.frombuffer(record["steps"], dtype=_OFFSET).astype(np.int64)
    width = len(record["levels"].split(",")) + 1 if record["levels"] else 1
    return np.arange(len(record["values"]) // (_VALUE.itemsize * width), dtype=np.int64)


def trimmed(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record reduced to the steps at :func:`lead_steps_kept` (leads counted from its issue time)."""
    step = int(record["step_seconds"])
    if step == 0:
        return {**record, "trimmed": True}
    offsets = offsets_of(record)
    first, issued = _utc(record["first_ts"]), _utc(record["issued_at"])
    leads = math.ceil((first - issued).total_seconds() / step) + offsets
    keep = _kept(int(leads.max()))[np.clip(leads, 0, None)]
    width = len(record["levels"].split(",")) + 1 if record["levels"] else 1
    values = np.frombuffer(record["values"], dtype=_VALUE).reshape(-1, width)[keep]
    kept = offsets[keep]
    if not kept.size:
        return {**record, "trimmed": True, "values": b"", "steps": b""}
    return {
        **record,
        "trimmed": True,
        "first_ts": first + timedelta(seconds=int(kept[0]) * step),
        "last_ts": first + timedelta(seconds=int(kept[-1]) * step),
        "steps": (kept - kept[0]).astype(_OFFSET).tobytes(),
        "values": values.tobytes(),
    }


@functools.lru_cache(maxsize=16)
def _kept(horizon_steps: int) -> np.ndarray:
    """``mask[lead]``: whether a lead of at most ``horizon_steps`` steps is kept once superseded."""
    mask = np.zeros(horizon_steps + 1, dtype=bool)
    mask[lead_steps_kept(horizon_steps)] = True
    return mask


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive UTC times, PostgreSQL aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def unpack(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The forecast frame of stored records: ``series_id, issued_at, ts, mean, model, fallback, q...``."""
    records = list(records)
    return unpack_columns({name: [r[name] for r in records] for name in UNPACKED})


#: The record fields :func:`unpack_columns` reads.
UNPACKED = (
    "series_id",
    "issued_at",
    "model",
    "fallback",
    "step_seconds",
    "first_ts",
    "levels",
    "steps",
    "values",
)


def unpack_columns(columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """:func:`unpack` of records given as columns (``{field: values}``, the fields of :data:`UNPACKED`),
    as a query result's columns come without building a mapping per row."""
    rows_of: dict[str, list[int]] = {}
    for row, levels in enumerate(columns["levels"]):
        rows_of.setdefault(levels, []).append(row)
    frames = [
        _unpack_same_levels(levels, columns)
        if len(rows) == len(columns["levels"])
        else _unpack_same_levels(levels, {name: [columns[name][i] for i in rows] for name in UNPACKED})
        for levels, rows in rows_of.items()
    ]
    if not frames:
        return pd.DataFrame(columns=["series_id", "issued_at", "ts", "mean", "model", "fallback"])
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    base = ["series_id", "issued_at", "ts", "mean", "model", "fallback"]
    qcols = sorted((c for c in frame.columns if c not in base and c != KNOWN), key=lambda c: float(c[1:]))
    return frame[base + qcols + ([KNOWN] if KNOWN in frame.columns else [])]


def _unpack_same_levels(levels: str, columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    # Column-wise: an evaluation chunk reads ~100k issues, and per-record numpy or Timestamp calls were
    # most of its time.
    names = [KNOWN if level == KNOWN else f"q{level}" for level in levels.split(",")] if levels else []
    width = len(names) + 1
    blobs = columns["values"]
    counts = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs)) // (
        _VALUE.itemsize * width
    )
    values = np.frombuffer(b"".join(blobs), dtype=_VALUE).reshape(-1, width).astype(np.float64)
    all_offsets = _offsets(columns["steps"], counts)
    first = _nanos(columns["first_ts"])
    step = np.fromiter((int(s) for s in columns["step_seconds"]), dtype=np.int64, count=len(blobs))
    ts = np.repeat(first, counts) + all_offsets * np.repeat(step * 1_000_000_000, counts)
    issued = _nanos(columns["issued_at"])
    frame = pd.DataFrame(
        {
            "series_id": np.repeat(np.array(columns["series_id"], dtype=object), counts),
            "issued_at": pd.to_datetime(np.repeat(issued, counts), utc=True),
            "ts": pd.to_datetime(ts, utc=True),
            "mean": values[:, 0],
            "model": np.repeat(np.array(columns["model"], dtype=object), counts),
            "fallback": np.repeat(np.array([f or "" for f in columns["fallback"]], dtype=object), counts),
        }
    )
    for column, name in enumerate(names, start=1):
        frame[name] = values[:, column]
    return frame


def _offsets(steps: Sequence[bytes | None], counts: np.ndarray) -> np.ndarray:
    """Every record's step offsets, concatenated: ``0..n-1`` for a contiguous one, else its ``steps``."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = np.arange(int(counts.sum()), dtype=np.int64) - starts
    sparse = [s is not None for s in steps]
    if any(sparse):
        given = b"".join(s for s in steps if s is not None)
        offsets[np.repeat(np.array(sparse, dtype=bool), counts)] = np.frombuffer(given, dtype=_OFFSET)
    return offsets


def _nanos(moments: Sequence[datetime | pd.Timestamp]) -> np.ndarray:
    """Nanoseconds since the epoch of naive-UTC (SQLite) or aware (PostgreSQL) times."""
    return pd.DatetimeIndex(pd.to_datetime(list(moments), utc=True)).as_unit("ns").asi8

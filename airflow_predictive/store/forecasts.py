"""Forecasts: one row per series and issue, its steps packed as arrays (:mod:`.forecast_arrays`).

What reads them decides what is kept. The planner, the UI and the metrics read the newest issue of each
series over its whole horizon; scoring and recalibration read each past issue at a few lead times. So
when an issue is stored, the series' previous issues are trimmed to the lead times of
:func:`~airflow_predictive.store.forecast_arrays.lead_steps_kept` (17 of a 24-hour horizon's 288 steps).
A series then grows by ~0.6 KB a cycle instead of 288 rows of ~200 bytes. Readers get the same long
frames as ever: ``series_id, issued_at, ts, mean, model, fallback, q<level>...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from airflow_predictive.contracts.forecast import KNOWN
from airflow_predictive.store import forecast_arrays, schema
from airflow_predictive.store.database import Part, to_utc, within

# Series per statement: a long IN list is one query, not one per series, yet stays within driver limits.
_SERIES_PER_QUERY = 500
# Every lead a trimmed issue can keep (the ladder up to the longest horizon a record can hold).
_KEPT_LEADS = forecast_arrays.lead_steps_kept(forecast_arrays.MAX_STEPS)
# Issue-time ranges per statement, at most (beyond, neighbouring ranges are merged).
_MAX_RANGES = 64


class Forecasts(Part):
    """Write, read and prune forecast frames (``series_id, ts, mean, q<level>..., model, fallback, issued_at``)."""

    def write_forecasts(self, frame: pd.DataFrame) -> int:
        """Store a forecast frame and trim the older issues of its series; return the steps stored."""
        missing = {"series_id", "ts", "mean", "model", "issued_at"} - set(frame.columns)
        if missing:
            raise ValueError(f"forecast frame lacks column(s): {', '.join(sorted(missing))}")
        known = [KNOWN] if KNOWN in frame.columns else []
        _refuse_non_finite(frame, ["mean", *forecast_arrays.quantile_columns(frame), *known])
        if frame.empty:
            return 0
        issues = pd.DataFrame(forecast_arrays.pack(frame))
        with self._db.write() as conn:
            self._db.upsert_frame(schema.forecast_issues, issues, conn)
            self._trim_superseded(conn, sorted(set(issues["series_id"])))
        return int(frame[["series_id", "issued_at", "ts"]].drop_duplicates().shape[0])

    def _trim_superseded(self, conn: sa.Connection, series: Sequence[str]) -> None:
        """Reduce every untrimmed issue but each series' newest to the scored lead times."""
        t = schema.forecast_issues
        for ids in _batches(series):
            rows = (
                conn.execute(sa.select(t).where(t.c.series_id.in_(ids), ~t.c.trimmed).order_by(t.c.issued_at))
                .mappings()
                .all()
            )
            newest: dict[str, dict] = {}
            superseded = []
            for row in rows:
                if row["series_id"] in newest:
                    superseded.append(newest[row["series_id"]])
                newest[row["series_id"]] = dict(row)
            if superseded:
                self._db.upsert_frame(t, pd.DataFrame([forecast_arrays.trimmed(r) for r in superseded]), conn)

    def _read(self, query: sa.Select) -> pd.DataFrame:
        """The forecast frame of ``query``'s issues (of the table, joined or filtered)."""
        t = schema.forecast_issues
        query = query.with_only_columns(*(t.c[name] for name in forecast_arrays.UNPACKED))
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        # columns, not a mapping per row: an evaluation chunk reads ~100k issues
        columns = zip(*rows, strict=True) if rows else ([] for _ in forecast_arrays.UNPACKED)
        return forecast_arrays.unpack_columns(dict(zip(forecast_arrays.UNPACKED, columns, strict=True)))

    def latest_forecasts(
        self, series_ids: Sequence[str] | None = None, *, pools: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The newest forecast of each series (all its future buckets)."""
        t = schema.forecast_issues
        # A series' newest issue is never trimmed, so the few untrimmed rows (a partial index) hold it:
        # the pools' LIKE then filters those instead of scanning every stored issue (the allocator asks
        # once per pool).
        newest = (
            sa.select(t.c.series_id, sa.func.max(t.c.issued_at).label("issued_at"))
            .where(~t.c.trimmed)
            .group_by(t.c.series_id)
        )
        if series_ids is not None:
            newest = newest.where(t.c.series_id.in_(list(series_ids)))
        if pools:
            newest = newest.where(sa.or_(*(t.c.series_id.like(f"pool={p}/%") for p in pools)))
        newest = newest.subquery()
        query = sa.select(t).join(
            newest, sa.and_(t.c.series_id == newest.c.series_id, t.c.issued_at == newest.c.issued_at)
        )
        frame = self._read(query)
        return frame.sort_values(["series_id", "ts"], ignore_index=True)

    def forecasts(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        issued_from: datetime | None = None,
        issued_to: datetime | None = None,
        ts_from: datetime | None = None,
        ts_to: datetime | None = None,
        ts_in: Sequence[datetime] | None = None,
        step: timedelta | None = None,
    ) -> pd.DataFrame:
        """Every stored forecast step matching the filters (for evaluation and the UI).

        An issue older than its series' newest holds only the scored lead times. ``ts_in`` keeps only
        these target buckets (an empty list matches nothing). ``step``, the series' bucket width, makes
        the read cheaper: the same rows of the issues of that width, from fewer issues (see
        :func:`_reaching_issues`). Superseded issues of another width (issued before the interval
        changed, whose targets are not the demand's buckets) are then left out.
        """
        t = schema.forecast_issues
        targets = pd.DatetimeIndex([to_utc(v) for v in ts_in]) if ts_in is not None else None
        if targets is not None:
            if targets.empty:
                return forecast_arrays.unpack([])
            ts_from = max(filter(None, [to_utc(ts_from), targets.min().to_pydatetime()]))
            ts_to = min(
                filter(None, [to_utc(ts_to), (targets.max() + pd.Timedelta(1, "us")).to_pydatetime()])
            )
        query = within(sa.select(t), t.c.issued_at, issued_from, issued_to)
        # An issue reaches a bucket in [ts_from, ts_to) only if its own span overlaps that range.
        if ts_from is not None:
            query = query.where(t.c.last_ts >= to_utc(ts_from))
        if ts_to is not None:
            query = query.where(t.c.first_ts < to_utc(ts_to))
        spans = None
        if step is not None and ts_from is not None and ts_to is not None:
            spans = targets if targets is not None else [(ts_from, ts_to)]
        frames = []
        for ids in _batches(series_ids):
            batch = query if ids is None else query.where(t.c.series_id.in_(ids))
            if spans is None:
                frames.append(self._read(batch))
            else:
                frames += [self._read(part) for part in self._reaching(batch, step, spans, ids)]
        # An empty part has untyped columns: concatenated, it would turn the others' strings to objects.
        frames = [f for f in frames if not f.empty] or frames[:1]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        keep = np.ones(len(frame), dtype=bool)
        if ts_from is not None:
            keep &= (frame["ts"] >= pd.Timestamp(to_utc(ts_from))).to_numpy()
        if ts_to is not None:
            keep &= (frame["ts"] < pd.Timestamp(to_utc(ts_to))).to_numpy()
        if targets is not None:
            keep &= frame["ts"].isin(targets).to_numpy()
        frame = frame[keep]
        return frame.sort_values(["series_id", "issued_at", "ts"], ignore_index=True)

    def _reaching(
        self, query: sa.Select, step: timedelta, spans: Any, ids: Sequence[str] | None
    ) -> list[sa.Select]:
        """``query`` as two index reads: the untrimmed issues, and the trimmed issues of width ``step``
        whose kept leads reach ``spans`` (:func:`_reaching_issues`).

        Two reads, not one with an OR: every part must be one the indexes answer. With a condition no
        index serves, PostgreSQL scanned the whole table for each chunk (1.4 million issues at 5,000
        series).
        """
        t = schema.forecast_issues
        # The series' oldest issue bounds the leads worth a range: an index-only read of the key.
        oldest_query = sa.select(sa.func.min(t.c.issued_at))
        if ids is not None:
            oldest_query = oldest_query.where(t.c.series_id.in_(ids))
        with self._db.read() as conn:
            oldest = conn.execute(oldest_query).scalar()
        untrimmed = query.where(~t.c.trimmed)
        if oldest is None:
            return [untrimmed]
        trimmed = query.where(t.c.trimmed, t.c.step_seconds == int(step.total_seconds()))
        return [untrimmed, _reaching_issues(trimmed, step, spans, to_utc(oldest))]

    def prune_forecasts(self, before: datetime) -> int:
        """Delete forecasts issued before ``before``; return how many issues (series x cycle) went."""
        t = schema.forecast_issues
        with self._db.write() as conn:
            return conn.execute(t.delete().where(t.c.issued_at < to_utc(before))).rowcount


def _reaching_issues(
    query: sa.Select,
    step: timedelta,
    spans: Sequence[tuple[datetime, datetime]] | pd.DatetimeIndex,
    oldest: datetime,
) -> sa.Select:
    """``query`` (of trimmed issues of width ``step``) without those that hold no step in ``spans``
    (buckets ``[a, b)``, or single buckets).

    A trimmed issue keeps only the leads of :func:`~.forecast_arrays.lead_steps_kept`, so it reaches a
    bucket ``ts`` at lead ``L`` only if it was issued in ``[ts - L step, ts - (L-1) step)``. Scoring one
    5-minute bucket thus needs 17 of the 288 issues whose spans overlap it; the span test alone read
    and unpacked all of them, most of an evaluate task's time (docs/benchmarks.md, issue #16).
    ``oldest`` is the earliest issue time the query can match: ranges before it are dropped.
    """
    t = schema.forecast_issues
    if isinstance(spans, pd.DatetimeIndex):
        spans = [(moment.to_pydatetime(), moment.to_pydatetime()) for moment in spans]
    # A window [a, b) is reached from [a - L step, b - (L-1) step); a single bucket is the case a == b.
    ranges = sorted(
        (to_utc(first) - lead * step, to_utc(last) - (lead - 1) * step)
        for first, last in spans
        for lead in _KEPT_LEADS
        if to_utc(last) - (lead - 1) * step > oldest
    )
    merged = _merged(ranges, timedelta(0))
    gap = step
    while len(merged) > _MAX_RANGES:
        # Too many ranges for one statement: read a few issues more, merging ranges closer than `gap`.
        merged, gap = _merged(merged, gap), gap * 2
    if not merged:
        return query.where(sa.false())  # every range lies before the oldest issue: none can reach
    return query.where(sa.or_(*(sa.and_(t.c.issued_at >= lo, t.c.issued_at < hi) for lo, hi in merged)))


def _merged(ranges: Sequence[Sequence[datetime]], gap: timedelta) -> list[list[datetime]]:
    """Sorted ``[lo, hi)`` ranges merged where they overlap or lie at most ``gap`` apart."""
    merged: list[list[datetime]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return merged


def _batches(series: Sequence[str] | None) -> list[list[str] | None]:
    """Series ids in statement-sized lists; ``None`` (every series) stays one unfiltered read."""
    if series is None:
        return [None]
    ids = list(series)
    return [ids[i : i + _SERIES_PER_QUERY] for i in range(0, len(ids), _SERIES_PER_QUERY)] or [[]]


def _refuse_non_finite(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """A forecast of inf or NaN has no capacity to plan for (the planner would overflow sizing it)."""
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"forecast frame column {column!r} is not a finite number in row {row + 1} "
                f"({frame['series_id'].iloc[row]} at {frame['ts'].iloc[row]}: {frame[column].iloc[row]}); "
                "every mean and quantile must be a finite number"
            )

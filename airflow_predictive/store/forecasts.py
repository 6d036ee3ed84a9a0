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
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from airflow_predictive.contracts.forecast import KNOWN
from airflow_predictive.store import forecast_arrays, schema
from airflow_predictive.store.database import Part, to_utc, within

# Series per statement: a long IN list is one query, not one per series, yet stays within driver limits.
_SERIES_PER_QUERY = 500


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
    ) -> pd.DataFrame:
        """Every stored forecast step matching the filters (for evaluation and the UI).

        An issue older than its series' newest holds only the scored lead times. ``ts_in`` keeps only
        these target buckets (an empty list matches nothing).
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
        frames = [
            self._read(query if ids is None else query.where(t.c.series_id.in_(ids)))
            for ids in _batches(series_ids)
        ]
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

    def prune_forecasts(self, before: datetime) -> int:
        """Delete forecasts issued before ``before``; return how many issues (series x cycle) went."""
        t = schema.forecast_issues
        with self._db.write() as conn:
            return conn.execute(t.delete().where(t.c.issued_at < to_utc(before))).rowcount


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

"""Forecasts: every issued forecast row, its quantiles as one JSON column, pruned by issue time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, to_utc, within


class Forecasts(Part):
    """Write, read and prune forecast frames (``series_id, ts, mean, q<level>..., model, fallback, issued_at``)."""

    def write_forecasts(self, frame: pd.DataFrame) -> int:
        """Store a forecast frame (``series_id, ts, mean, q<level>..., model, fallback, issued_at``)."""
        missing = {"series_id", "ts", "mean", "model", "issued_at"} - set(frame.columns)
        if missing:
            raise ValueError(f"forecast frame lacks column(s): {', '.join(sorted(missing))}")
        qcols = [c for c in frame.columns if c.startswith("q") and c[1:].replace(".", "", 1).isdigit()]
        _refuse_non_finite(frame, ["mean", *qcols])
        quantiles = [
            json.dumps({c[1:]: float(v) for c, v in zip(qcols, values, strict=True)})
            for values in frame[qcols].itertuples(index=False, name=None)
        ]
        records = pd.DataFrame(
            {
                "series_id": frame["series_id"],
                "issued_at": frame["issued_at"],
                "ts": frame["ts"],
                "mean": frame["mean"].astype(float),
                "quantiles": quantiles,
                "model": frame["model"],
                "fallback": frame["fallback"].fillna("") if "fallback" in frame else "",
            }
        )
        return self._db.upsert_frame(schema.forecasts, records)

    def _forecast_frame(self, query: sa.Select) -> pd.DataFrame:
        frame = self._db.frame(query, schema.forecasts)
        if frame.empty:
            return frame.drop(columns=["quantiles"])
        # One parse of one JSON array: per-row json.loads was most of a large read (4.5 s per 830k rows).
        parsed = json.loads("[" + ",".join(frame.pop("quantiles")) + "]")
        quantiles = pd.DataFrame(parsed, index=frame.index)
        quantiles.columns = [f"q{c}" for c in quantiles.columns]
        ordered = sorted(quantiles.columns, key=lambda c: float(c[1:]))
        return pd.concat([frame, quantiles[ordered]], axis=1)

    def latest_forecasts(
        self, series_ids: Sequence[str] | None = None, *, pools: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The newest forecast of each series (all its future buckets)."""
        t = schema.forecasts
        newest = sa.select(t.c.series_id, sa.func.max(t.c.issued_at).label("issued_at")).group_by(
            t.c.series_id
        )
        if series_ids is not None:
            newest = newest.where(t.c.series_id.in_(list(series_ids)))
        if pools:
            newest = newest.where(sa.or_(*(t.c.series_id.like(f"pool={p}/%") for p in pools)))
        newest = newest.subquery()
        query = (
            sa.select(t)
            .join(newest, sa.and_(t.c.series_id == newest.c.series_id, t.c.issued_at == newest.c.issued_at))
            .order_by(t.c.series_id, t.c.ts)
        )
        return self._forecast_frame(query)

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
        """Every stored forecast row matching the filters (for evaluation and the UI).

        ``ts_in`` keeps only these target buckets (an empty list matches nothing).
        """
        t = schema.forecasts
        query = sa.select(t)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        if ts_in is not None:
            query = query.where(t.c.ts.in_([to_utc(v) for v in ts_in]))
        query = within(query, t.c.issued_at, issued_from, issued_to)
        query = within(query, t.c.ts, ts_from, ts_to)
        return self._forecast_frame(query.order_by(t.c.series_id, t.c.issued_at, t.c.ts))

    def prune_forecasts(self, before: datetime) -> int:
        """Delete forecasts issued before ``before``; return how many rows went."""
        t = schema.forecasts
        with self._db.write() as conn:
            return conn.execute(t.delete().where(t.c.issued_at < to_utc(before))).rowcount


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

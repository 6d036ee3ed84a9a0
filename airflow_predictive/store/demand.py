"""Demand series: one row per ``(series_id, ts)`` bucket, NULL for a gap (not zero demand)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, to_utc, within


class DemandSeries(Part):
    """Write and read demand in the long format of :mod:`airflow_predictive.contracts.demand`."""

    def write_demand(self, frame: pd.DataFrame) -> int:
        """Upsert demand rows ``series_id, ts, value`` (NaN value = gap, stored as NULL)."""
        missing = {"series_id", "ts", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"demand frame lacks column(s): {', '.join(sorted(missing))}")
        return self._db.upsert_frame(schema.demand, frame[["series_id", "ts", "value"]])

    def demand(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Demand rows in long format, ordered by series and time; ``ts`` in ``[start, end)``."""
        t = schema.demand
        query = sa.select(t.c.series_id, t.c.ts, t.c.value)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        query = within(query, t.c.ts, start, end)
        frame = self._db.frame(query.order_by(t.c.series_id, t.c.ts), t)
        frame["value"] = frame["value"].astype(float)
        return frame

    def first_observed(
        self, series_ids: Sequence[str], *, start: datetime | None = None, end: datetime | None = None
    ) -> dict[str, datetime]:
        """Per series, its first bucket in ``[start, end)`` with observed demand (not a gap); series
        without one are absent. One grouped query for any number of series (the allocator asks for
        every pool it plans)."""
        t = schema.demand
        query = sa.select(t.c.series_id, sa.func.min(t.c.ts)).where(t.c.value.is_not(None))
        query = within(query.where(t.c.series_id.in_(list(series_ids))), t.c.ts, start, end)
        with self._db.read() as conn:
            rows = conn.execute(query.group_by(t.c.series_id)).all()
        return {sid: to_utc(first) for sid, first in rows}

    def series_ids(self, pools: Sequence[str] | None = None) -> list[str]:
        t = schema.demand
        with self._db.read() as conn:
            ids = [
                row[0] for row in conn.execute(sa.select(t.c.series_id).distinct().order_by(t.c.series_id))
            ]
        if pools:
            prefixes = tuple(f"pool={p}/" for p in pools)
            ids = [i for i in ids if i.startswith(prefixes)]
        return ids

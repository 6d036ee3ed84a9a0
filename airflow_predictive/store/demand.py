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

    def naive_errors(
        self,
        series_ids: Sequence[str],
        *,
        lags: Sequence[int],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, dict[int, tuple[float, int]]]:
        """Per series and lag, the naive forecast's mean absolute error over ``[start, end)`` and how many
        pairs it averages: ``|value - the value lag observations before|``, gaps dropped first (the
        denominator of MASE, :func:`airflow_predictive.accuracy.mase_scale_of`). The database reduces a
        week of demand to these few numbers, so an evaluation chunk does not read the week."""
        t = schema.demand
        window = {"partition_by": t.c.series_id, "order_by": t.c.ts}
        lagged = sa.select(
            t.c.series_id,
            t.c.value,
            *(sa.func.lag(t.c.value, lag).over(**window).label(f"before_{lag}") for lag in lags),
        ).where(t.c.value.is_not(None), t.c.series_id.in_(list(series_ids)))
        lagged = within(lagged, t.c.ts, start, end).subquery()
        errors = [sa.func.abs(lagged.c.value - lagged.c[f"before_{lag}"]) for lag in lags]
        query = sa.select(
            lagged.c.series_id,
            *(sa.func.avg(e) for e in errors),
            *(sa.func.count(e) for e in errors),
        ).group_by(lagged.c.series_id)
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        n = len(lags)
        return {
            row[0]: {
                lag: (float(row[1 + i]) if row[1 + i] is not None else float("nan"), int(row[1 + n + i]))
                for i, lag in enumerate(lags)
            }
            for row in rows
        }

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

"""Provisioned capacity per pool and resource over time (what the allocator saw after acting)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, to_utc


class CapacityHistory(Part):
    """Record and read provisioned capacity points."""

    def record_capacity(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Upsert provisioned capacity points: dicts with pool, resource, ts, value."""
        rows = self._db.rows(schema.capacity, records)
        with self._db.write() as conn:
            return self._db.upsert(conn, schema.capacity, rows)

    def capacity(
        self, *, pool: str | None = None, since: datetime | None = None, pools: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Rows of one ``pool`` or of several ``pools`` (default: every pool), created since ``since``."""
        t = schema.capacity
        query = sa.select(t)
        if pool is not None:
            query = query.where(t.c.pool == pool)
        if pools is not None:
            query = query.where(t.c.pool.in_(list(pools)))
        if since is not None:
            query = query.where(t.c.ts >= to_utc(since))
        return self._db.frame(query.order_by(t.c.pool, t.c.resource, t.c.ts), t)

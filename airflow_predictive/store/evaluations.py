"""Forecast and capacity scores: ``series_id, window_end, horizon_minutes, metric, value``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, to_utc


class Evaluations(Part):
    """Write and read evaluation scores."""

    def write_evaluations(self, frame: pd.DataFrame) -> int:
        """Upsert scores: ``series_id, window_end, horizon_minutes, metric, value``."""
        # A chunk writes ~60 scores a series: COPY and one merge on PostgreSQL, not executemany.
        columns = ["series_id", "window_end", "horizon_minutes", "metric", "value"]
        return self._db.upsert_frame(schema.evaluations, frame[columns])

    def evaluations(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        since: datetime | None = None,
        metrics: Sequence[str] | None = None,
        horizon: int | None = None,
    ) -> pd.DataFrame:
        """Stored scores, optionally of some series, since a window end, of some metrics and one
        lead-time bucket (a reader that needs two metrics of 12 h should not read all of them)."""
        t = schema.evaluations
        query = sa.select(t)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        if since is not None:
            query = query.where(t.c.window_end >= to_utc(since))
        if metrics is not None:
            query = query.where(t.c.metric.in_(list(metrics)))
        if horizon is not None:
            query = query.where(t.c.horizon_minutes == horizon)
        return self._db.frame(query.order_by(t.c.series_id, t.c.window_end), t)

"""Model states: the fitted forecasting model of each series and its re-selection flag."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, to_utc, utcnow


class ModelStates(Part):
    """Save and read model states (small JSON per series); flag series for re-selection."""

    def save_model_states(self, states: Iterable[Mapping[str, Any]]) -> int:
        """Upsert model states: dicts with series_id, model, state (a JSON-able dict), fitted_at."""
        now = utcnow()
        records = []
        for item in states:
            state = item["state"]
            records.append(
                {
                    "series_id": item["series_id"],
                    "model": item["model"],
                    "state": state if isinstance(state, str) else json.dumps(state, sort_keys=True),
                    "fitted_at": item.get("fitted_at", now),
                    "needs_reselect": bool(item.get("needs_reselect", False)),
                    "updated_at": now,
                }
            )
        rows = self._db.rows(schema.model_states, records)
        with self._db.write() as conn:
            return self._db.upsert(conn, schema.model_states, rows)

    def model_states(self, series_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """``{series_id: {"model", "state" (dict), "fitted_at", "needs_reselect"}}``."""
        t = schema.model_states
        query = sa.select(t)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        with self._db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return {
            row["series_id"]: {
                "model": row["model"],
                "state": json.loads(row["state"]),
                "fitted_at": to_utc(row["fitted_at"]),
                "needs_reselect": bool(row["needs_reselect"]),
            }
            for row in rows
        }

    def mark_reselect(self, series_ids: Sequence[str], flag: bool = True) -> int:
        """Flag series for model re-selection in the next cycle (the feedback loop's lever)."""
        t = schema.model_states
        if not series_ids:
            return 0
        with self._db.write() as conn:
            return conn.execute(
                t.update()
                .where(t.c.series_id.in_(list(series_ids)))
                .values(needs_reselect=flag, updated_at=utcnow())
            ).rowcount

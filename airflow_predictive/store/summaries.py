"""Behaviour summaries: what the profiler learned (usage, data access, timing, users), JSON per key."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, utcnow


class Summaries(Part):
    """Replace and read the summaries of one kind."""

    def put_summaries(self, kind: str, payloads: Mapping[str, Any]) -> int:
        """Replace the behaviour summaries of one kind (``{key: JSON-able payload}``)."""
        now = utcnow()
        rows = [
            {
                "kind": kind,
                "key": key,
                "computed_at": now,
                "payload": json.dumps(payload, sort_keys=True, default=str),
            }
            for key, payload in payloads.items()
        ]
        t = schema.summaries
        with self._db.write() as conn:
            conn.execute(t.delete().where(t.c.kind == kind))
            return self._db.upsert(conn, t, self._db.rows(t, rows))

    def summaries(self, kind: str) -> dict[str, Any]:
        t = schema.summaries
        with self._db.read() as conn:
            rows = conn.execute(sa.select(t.c.key, t.c.payload).where(t.c.kind == kind)).all()
        return {key: json.loads(payload) for key, payload in rows}

"""Task history: task tries, DAG runs and the worker's usage samples, as the profiler records them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, to_utc, utcnow, within


class TaskHistory(Part):
    """Task runs, DAG runs and usage samples."""

    def upsert_task_runs(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store task tries keyed by (dag_id, run_id, task_id, map_index, try_number); re-ingest updates."""
        rows = self._db.rows(schema.task_runs, records)
        now = utcnow()
        for row in rows:
            row.setdefault("map_index", -1)
            row.setdefault("try_number", 1)
            row["map_index"] = -1 if row["map_index"] is None else row["map_index"]
            row["try_number"] = 1 if row["try_number"] is None else row["try_number"]
            row["updated_at"] = now
        with self._db.write() as conn:
            rows = self._not_unstarting(conn, rows)
            return self._db.upsert(conn, schema.task_runs, rows)

    @staticmethod
    def _not_unstarting(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` without the never-started ones whose try is already stored as started.

        A pass may read a try while it is queued and write it after the worker's listener stored it
        started: a try that started never goes back to not started, so the stale read must not erase
        its start (the next pass would restore it, but the demand in between would be wrong).
        """
        waiting = [r for r in rows if r.get("start_date") is None]
        if not waiting:
            return rows
        t = schema.task_runs
        key = ("dag_id", "run_id", "task_id", "map_index", "try_number")
        query = sa.select(*(t.c[k] for k in key)).where(
            t.c.start_date.is_not(None),
            t.c.dag_id.in_(sorted({r["dag_id"] for r in waiting})),
            t.c.run_id.in_(sorted({r["run_id"] for r in waiting})),
        )
        started = {tuple(found) for found in conn.execute(query)}
        if not started:
            return rows
        return [r for r in rows if r.get("start_date") is not None or tuple(r[k] for k in key) not in started]

    def upsert_dag_runs(self, records: Iterable[Mapping[str, Any]]) -> int:
        rows = self._db.rows(schema.dag_runs, records)
        now = utcnow()
        for row in rows:
            row["updated_at"] = now
        with self._db.write() as conn:
            return self._db.upsert(conn, schema.dag_runs, rows)

    def add_usage_samples(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store usage samples; a sample already stored (same task try and ts) is kept as it was."""
        rows = self._db.rows(schema.usage_samples, records)
        with self._db.write() as conn:
            return self._db.upsert(conn, schema.usage_samples, rows, update=False)

    def task_runs(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        dag_ids: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Task tries that overlap [start, end): started before ``end`` and not ended before ``start``;
        of ``dag_ids`` and on ``queues`` when given (a try without a queue is on ``default``).

        A try that never started (queued, no ``start_date``) counts from its ``queued_at``: it is in the
        window when it was queued before ``end`` and is still waiting or ended (left the queue) after
        ``start``.
        """
        t = schema.task_runs
        query = sa.select(t)
        began = sa.func.coalesce(t.c.start_date, t.c.queued_at)
        if start is not None:
            query = query.where(
                sa.or_(
                    began >= to_utc(start),
                    t.c.end_date >= to_utc(start),
                    sa.and_(t.c.start_date.is_(None), t.c.end_date.is_(None)),
                )
            )
        query = within(query, began, None, end)
        if dag_ids:
            query = query.where(t.c.dag_id.in_(list(dag_ids)))
        if queues:
            on = t.c.queue.in_(list(queues))
            query = query.where(
                sa.or_(on, t.c.queue.is_(None), t.c.queue == "") if "default" in queues else on
            )
        return self._db.frame(query.order_by(t.c.start_date), t)

    def dag_runs(self, *, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        t = schema.dag_runs
        query = sa.select(t)
        query = within(query, t.c.start_date, start, end)
        return self._db.frame(query.order_by(t.c.start_date), t)

    def usage_samples(self, *, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        t = schema.usage_samples
        query = sa.select(t)
        query = within(query, t.c.ts, start, end)
        return self._db.frame(query.order_by(t.c.ts), t)

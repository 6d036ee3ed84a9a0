"""The action ledger: plans and their actions, written before (planned) and after (applied/failed) each call."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, StoreError, to_utc, utcnow

if TYPE_CHECKING:
    from airflow_predictive.contracts.plan import Plan


class ActionLedger(Part):
    """Record plans and actions, update an action's status, read both back."""

    def record_plan(self, plan: Plan) -> None:
        """Record a Plan and all its actions (status as they are, normally ``planned``) in one transaction.

        An action whose request id is already in the ledger keeps its stored status: re-recording a
        re-run plan never turns an applied action back into a planned one.
        """
        now = utcnow()
        plan_row = self._db.rows(
            schema.plans,
            [
                {
                    "plan_id": plan.plan_id,
                    "pool": plan.pool,
                    "created_at": plan.created_at,
                    "mode": str(plan.mode),
                    "capped": list(plan.capped),
                    "summary": dict(plan.summary),
                }
            ],
        )
        action_rows = self._db.rows(
            schema.actions,
            [
                {
                    "request_id": a.request_id,
                    "plan_id": plan.plan_id,
                    "pool": a.pool,
                    "kind": str(a.kind),
                    "resource": a.resource,
                    "amount": float(a.amount),
                    "provisioning": str(a.provisioning),
                    "target": a.target,
                    "reason": a.reason,
                    "status": str(a.status),
                    "error": a.error,
                    "details": dict(a.details),
                    "created_at": now,
                    "updated_at": now,
                }
                for a in plan.actions
            ],
        )
        with self._db.write() as conn:
            self._db.upsert(conn, schema.plans, plan_row)
            self._db.upsert(conn, schema.actions, action_rows, update=False)

    def update_action(
        self,
        request_id: str,
        status: str,
        *,
        error: str = "",
        details: Mapping[str, Any] | None = None,
        attempt: int | None = None,
    ) -> None:
        """Set an action's status (and error, details, attempt number when given).

        :param attempt: the number of the call to Compute Engine this status is about (1 for the first).
        """
        t = schema.actions
        values: dict[str, Any] = {"status": str(status), "error": error, "updated_at": utcnow()}
        if details is not None:
            values["details"] = json.dumps(dict(details), sort_keys=True, default=str)
        if attempt is not None:
            values["attempt"] = int(attempt)
        with self._db.write() as conn:
            if conn.execute(t.update().where(t.c.request_id == request_id).values(**values)).rowcount != 1:
                raise StoreError(f"no action with request id {request_id} in the ledger")

    def actions(
        self,
        *,
        pool: str | None = None,
        since: datetime | None = None,
        request_ids: Sequence[str] | None = None,
        plan_id: str | None = None,
    ) -> pd.DataFrame:
        t = schema.actions
        query = sa.select(t)
        if pool is not None:
            query = query.where(t.c.pool == pool)
        if since is not None:
            query = query.where(t.c.created_at >= to_utc(since))
        if request_ids is not None:
            query = query.where(t.c.request_id.in_(list(request_ids)))
        if plan_id is not None:
            query = query.where(t.c.plan_id == plan_id)
        return self._db.frame(query.order_by(t.c.created_at, t.c.request_id), t)

    def plans(
        self, *, pool: str | None = None, since: datetime | None = None, pools: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Rows of one ``pool`` or of several ``pools`` (default: every pool), created since ``since``."""
        t = schema.plans
        query = sa.select(t)
        if pool is not None:
            query = query.where(t.c.pool == pool)
        if pools is not None:
            query = query.where(t.c.pool.in_(list(pools)))
        if since is not None:
            query = query.where(t.c.created_at >= to_utc(since))
        return self._db.frame(query.order_by(t.c.created_at), t)

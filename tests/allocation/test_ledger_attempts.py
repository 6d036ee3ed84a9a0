"""The ledger tells the truth about retried actions: ``planned`` with the attempt number during every call."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_predictive.contracts.plan import Action, ActionKind, Mode, Plan
from airflow_predictive.runtime.ledger import execute_plan
from airflow_predictive.store import ProfileStore

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _plan() -> Plan:
    # A fresh Plan object per run, as each cycle builds one; the request id is what repeats.
    action = Action(pool="etl", kind=ActionKind.LAUNCH_INSTANCES, amount=2, reason="q0.9", request_id="req-1")
    return Plan(plan_id="p1", pool="etl", created_at=T0, mode=Mode.FORECAST_AND_SCALE, actions=[action])


def _row(store: ProfileStore) -> dict:
    return store.actions(request_ids=["req-1"]).iloc[0][["status", "attempt", "error"]].to_dict()


def test_a_failed_action_reads_planned_with_attempt_2_during_its_retry_then_applied(any_store):
    seen = []

    def failing(action):
        seen.append(_row(any_store))
        raise RuntimeError("quota exceeded")

    def succeeding(action):
        seen.append(_row(any_store))
        return {"operation": "op-2"}

    assert execute_plan(_plan(), any_store, failing).failed
    assert _row(any_store) == {"status": "failed", "attempt": 1, "error": "RuntimeError: quota exceeded"}
    assert execute_plan(_plan(), any_store, succeeding).applied == ["req-1"]
    assert seen == [
        {"status": "planned", "attempt": 1, "error": ""},
        {"status": "planned", "attempt": 2, "error": ""},  # not the first run's "failed"
    ]
    assert _row(any_store) == {"status": "applied", "attempt": 2, "error": ""}


def test_a_dry_run_action_applied_later_reads_planned_with_attempt_1_during_its_call(any_store):
    seen = []
    execute_plan(_plan(), any_store, None)
    assert _row(any_store)["status"] == "dry_run" and _row(any_store)["attempt"] == 0

    outcome = execute_plan(_plan(), any_store, lambda action: seen.append(_row(any_store)) or {})
    assert outcome.applied == ["req-1"]
    assert seen == [{"status": "planned", "attempt": 1, "error": ""}]
    # An applied action is never called again, so its attempt stays.
    assert execute_plan(_plan(), any_store, lambda action: pytest.fail("called twice")).skipped == ["req-1"]
    assert _row(any_store)["attempt"] == 1

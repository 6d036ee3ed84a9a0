"""The action ledger and the per-pool lock: every action is recorded before and after it is applied.

:func:`execute_plan` writes the plan (actions ``planned``, or ``dry_run`` when nothing is to be
applied), then for each action not already ``applied`` sets it ``planned`` with its ``attempt``
number (1 for the first call of a request id, +1 for each retry by a later run, so a stale
``failed`` or ``dry_run`` never shows during a call), calls the applier and records ``applied``
with the details or ``failed`` with the error. A fault mid-plan leaves the earlier actions
``applied``; the next cycle re-reads capacity and converges, and the deterministic request ids stop
Compute Engine from doing any call twice.

:func:`pool_lock` is a lease row in the store (``watermarks`` table, name ``lock:allocation/<pool>``)
taken with one atomic conditional write, so a manual trigger during a scheduled run waits or skips
instead of planning from the same stale capacity.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from airflow_predictive.contracts.plan import Action, ActionCancelled, ActionStatus, Plan
from airflow_predictive.contracts.stores import Leases, Ledger

log = logging.getLogger(__name__)

Applier = Callable[[Action], dict[str, Any]]


class PoolBusy(RuntimeError):
    """Another allocator run holds this pool's lock."""


@dataclass
class Outcome:
    """What one execution of a plan did.

    :param applied: request ids applied now.
    :param skipped: request ids already applied by an earlier run (nothing called).
    :param failed: request id -> error message.
    :param dry_run: request ids only recorded.
    :param cancelled: request id -> why it was deliberately not sent (busy VM, lost lease).
    """

    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: list[str] = field(default_factory=list)
    cancelled: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": len(self.applied),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "dry_run": len(self.dry_run),
            "cancelled": len(self.cancelled),
            "errors": dict(self.failed),
            "cancelled_why": dict(self.cancelled),
        }


def execute_plan(
    plan: Plan,
    store: Ledger,
    applier: Applier | None,
    *,
    fence: Callable[[], bool] | None = None,
) -> Outcome:
    """Record a plan in the ledger and apply its actions (``applier=None``: record as ``dry_run`` only).

    :param plan: the plan from the planner.
    :param store: a ProfileStore.
    :param applier: applies one action and returns details (``ComputeEngine.apply`` bound to the pool,
        releases through the release protocol); :class:`ActionCancelled` records the action ``cancelled``.
    :param fence: renews the pool's lease before each action; False (lost) cancels it and the rest.
    """
    outcome = Outcome()
    if applier is None:
        for action in plan.actions:
            action.status = ActionStatus.DRY_RUN
        store.record_plan(plan)
        outcome.dry_run = [a.request_id for a in plan.actions]
        return outcome
    for action in plan.actions:
        action.status = ActionStatus.PLANNED
    store.record_plan(plan)  # keeps the stored status of request ids seen before
    known = store.actions(request_ids=[a.request_id for a in plan.actions]) if plan.actions else None
    done, attempts = set(), {}
    if known is not None and not known.empty:
        done = set(known.loc[known["status"] == str(ActionStatus.APPLIED), "request_id"])
        attempts = dict(zip(known["request_id"], known["attempt"].astype(int), strict=True))
    for action in plan.actions:
        if action.request_id in done:
            action.status = ActionStatus.APPLIED
            outcome.skipped.append(action.request_id)
            continue
        # An id an earlier run left failed or dry_run keeps that stored status; the ledger must say
        # planned, and which call this is, before Compute Engine is called again.
        if fence is not None and not fence():
            _lost_lease(plan, action, outcome)
            break
        attempt = attempts.get(action.request_id, 0) + 1
        store.update_action(action.request_id, ActionStatus.PLANNED, attempt=attempt)
        try:
            details = applier(action)
        except ActionCancelled as exc:
            _cancel(action, exc.reason, store, outcome)
            continue
        except Exception as exc:
            message = f"{exc.__class__.__name__}: {exc}"
            action.status, action.error = ActionStatus.FAILED, message
            store.update_action(action.request_id, ActionStatus.FAILED, error=message)
            outcome.failed[action.request_id] = message
            log.error(
                "%s %s failed (attempt %d): %s",
                action.kind,
                action.target or action.request_id,
                attempt,
                message,
            )
            continue
        action.status = ActionStatus.APPLIED
        store.update_action(
            action.request_id, ActionStatus.APPLIED, details={**action.details, **(details or {})}
        )
        outcome.applied.append(action.request_id)
        log.info("applied %s %s: %s", action.kind, action.target, action.reason)
    return outcome


def _lost_lease(plan: Plan, first: Action, outcome: Outcome) -> None:
    """Send nothing more. The ledger is not written either: the run that took the lease over may be
    writing the same request ids; it re-reads capacity and converges."""
    reason = "not sent: this run lost the pool's lease (another run may hold it now)"
    pending = plan.actions[plan.actions.index(first) :]
    for action in pending:
        action.status, action.error = ActionStatus.CANCELLED, reason
        outcome.cancelled[action.request_id] = reason
    log.error("pool %s: lease lost; %d action(s) not sent", plan.pool, len(pending))


def _cancel(action: Action, reason: str, store: Ledger, outcome: Outcome) -> None:
    action.status, action.error = ActionStatus.CANCELLED, reason
    store.update_action(action.request_id, ActionStatus.CANCELLED, error=reason)
    outcome.cancelled[action.request_id] = reason
    log.warning("%s %s not sent: %s", action.kind, action.target or action.request_id, reason)


@dataclass(frozen=True)
class Lease:
    """A held pool lease: :meth:`renew` extends it, and says whether this run still holds it."""

    store: Leases
    name: str
    owner: str
    ttl_seconds: float

    def renew(self) -> bool:
        return self.store.renew_lease(self.name, self.owner, self.ttl_seconds)


@contextmanager
def pool_lock(
    store: Leases, pool: str, *, ttl_seconds: float = 900.0, wait_seconds: float = 0.0
) -> Iterator[Lease]:
    """Hold the pool's allocation lease for the block; raise :class:`PoolBusy` if another run holds it.

    Expiry is judged on the store's clock; the holder renews before each action it sends (the fence).

    :param store: a ProfileStore.
    :param pool: pool name.
    :param ttl_seconds: the lease expires after this long (a crashed run cannot block the pool forever).
    :param wait_seconds: how long to wait for a busy lease before giving up.
    """
    name = f"lock:allocation/{pool}"
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_seconds
    while not store.try_lease(name, owner, ttl_seconds):
        if time.monotonic() >= deadline:
            holder, until = store.lease_holder(name) or ("?", "?")
            raise PoolBusy(
                f"pool {pool}: another allocator run holds the lock ({holder}, until {until}); "
                "this run skips the pool to avoid double provisioning"
            )
        time.sleep(0.2)
    try:
        yield Lease(store, name, owner, ttl_seconds)
    finally:
        store.release_lease(name, owner)

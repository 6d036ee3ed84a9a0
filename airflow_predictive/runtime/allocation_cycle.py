"""One allocation cycle for one pool: lock, read capacity, read forecasts, plan, record, apply.

Shared by :class:`~airflow_predictive.operators.preemptive_allocate.PreemptiveAllocateOperator` and
``airflow-predictive plan``, so the command a user trials is exactly what the DAG runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_predictive.contracts.capacity_provider import CapacityProvider
from airflow_predictive.contracts.demand import series_id
from airflow_predictive.contracts.plan import Action, Mode, Plan
from airflow_predictive.contracts.pools import CapacityPool, Signal
from airflow_predictive.contracts.stores import AllocationStore
from airflow_predictive.planning.planner import plan as make_plan
from airflow_predictive.planning.planner import planned_capacity
from airflow_predictive.runtime import metrics
from airflow_predictive.runtime.ledger import Outcome, PoolBusy, execute_plan, pool_lock

log = logging.getLogger(__name__)


@dataclass
class CycleResult:
    """What a cycle did for one pool.

    :param pool: pool name.
    :param plan: the plan (None when the pool was skipped).
    :param outcome: what was applied, skipped, failed or only recorded.
    :param applied_mode: whether actions were sent to Compute Engine.
    :param skipped: why the pool was skipped ("" when it was not).
    """

    pool: str
    plan: Plan | None = None
    outcome: Outcome = field(default_factory=Outcome)
    applied_mode: bool = False
    skipped: str = ""

    def summary(self) -> dict[str, Any]:
        """Compact, JSON-safe summary for XCom and ``--json`` (no reasons longer than needed, no secrets)."""
        if self.plan is None:
            return {"pool": self.pool, "skipped": self.skipped}
        return {
            "pool": self.pool,
            "plan_id": self.plan.plan_id,
            "mode": str(self.plan.mode),
            "applied": self.applied_mode,
            "actions": [
                {
                    "kind": str(a.kind),
                    "amount": a.amount,
                    "target": a.target,
                    "provisioning": str(a.provisioning),
                    "status": str(a.status),
                }
                for a in self.plan.actions
            ],
            "capped": list(self.plan.capped),
            "instances": [
                self.plan.summary.get("instances_before"),
                self.plan.summary.get("instances_after"),
            ],
            "cost_per_hour": [self.plan.summary.get("cost_before"), self.plan.summary.get("cost_after")],
            "outcome": self.outcome.as_dict(),
        }


def run_cycle(
    pool: CapacityPool,
    store: AllocationStore,
    engine: CapacityProvider,
    *,
    now: datetime | None = None,
    busy_hosts: Iterable[str] | None = (),
    apply: bool | None = None,
    lock_wait_seconds: float = 0.0,
    drain: Callable[[Action], None] | None = None,
    read_machine_type: bool = True,
) -> CycleResult:
    """Plan (and apply, if asked and allowed) one pool.

    :param pool: the pool.
    :param store: a ProfileStore (forecasts in, plans and ledger out).
    :param engine: the pool's project and zone on the cloud (a :class:`~airflow_predictive.gce.compute.ComputeEngine`).
    :param now: planning time (default: now, UTC).
    :param busy_hosts: hostnames running Airflow tasks (never released); None = unknown, so no VM is released.
    :param apply: True/False force applying or recording only; None follows the pool's mode.
    :param lock_wait_seconds: how long to wait for another run's lock on this pool.
    :param drain: called before releasing a VM (e.g. stop its Celery worker consuming).
    :param read_machine_type: read vCPUs and memory from the Compute Engine API (cached per engine).
    """
    now = now or datetime.now(UTC)
    do_apply = pool.mode is Mode.FORECAST_AND_SCALE if apply is None else bool(apply)
    result = CycleResult(pool=pool.name, applied_mode=do_apply)
    try:
        with pool_lock(store, pool.name, wait_seconds=lock_wait_seconds):
            if read_machine_type and pool.vcpus is None:
                spec = engine.machine_type(pool.machine_type)
                pool = pool.with_machine(spec.vcpus, spec.memory_gib)
            state = engine.pool_state(pool)
            forecast = None
            window = timedelta(
                minutes=max(pool.scale_in.stabilization_minutes, pool.policy.planning_interval_minutes)
            )
            if pool.policy.signal is Signal.FORECAST:
                forecast = store.latest_forecasts(pools=[pool.name])
                # the planner's reactive guard and its daily-cycle check read this much observed demand
                window = max(window, timedelta(days=pool.policy.cycle_window_days))
            ids = [series_id(pool.name, r) for r in ("cpu", "memory", "storage", "network")]
            recent = store.demand(ids, start=now - window, end=now + timedelta(seconds=1))
            busy = [i.name for i in state.instances] if busy_hosts is None else list(busy_hosts)
            plan = make_plan(forecast, state, pool, now, busy_instances=busy, recent_demand=recent)
            if busy_hosts is None:
                plan.capped.append("running task instances unknown (Airflow API unreachable): no VM released")
            if forecast is not None and len(forecast) == 0:
                plan.capped.append("no forecast stored for this pool: only min_instances is enforced")
            result.plan = plan
            applier = (lambda action: engine.apply(action, pool)) if do_apply else None
            result.outcome = execute_plan(plan, store, applier, drain=drain)
            # what Compute Engine held when the cycle read it (the next cycle records the outcome)
            capacity = planned_capacity(Plan(plan.plan_id, pool.name, now, plan.mode), state, pool)
            store.record_capacity(
                [
                    {"pool": pool.name, "resource": r, "ts": now, "value": float(capacity[r])}
                    for r in ("cpu", "memory", "storage", "network")
                ]
            )
    except PoolBusy as exc:
        result.skipped = str(exc)
        metrics.emit_allocation(pool.name, {metrics.POOL_LOCKED: 1})
        log.warning("%s", exc)
        return result
    _emit(result)
    return result


def _emit(result: CycleResult) -> None:
    """Emit the pool's allocation metrics.

    Applied, failed and pending actions are not counted here: the feedback cycle counts them once,
    from the ledger (see :mod:`airflow_predictive.runtime.metrics`).
    """
    plan = result.plan
    if plan is None:
        return
    out = result.outcome
    metrics.emit_allocation(
        result.pool,
        {
            metrics.ACTIONS_SKIPPED: len(out.skipped),
            metrics.ACTIONS_DRY_RUN: len(out.dry_run),
            metrics.PLAN_CAPPED: len(plan.capped),
        },
        {
            metrics.POOL_INSTANCES: float(plan.summary.get("instances_after", 0) or 0),
            metrics.POOL_COST_PER_HOUR: float(plan.summary.get("cost_after", 0) or 0),
        },
    )

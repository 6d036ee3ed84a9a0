"""One allocation cycle for one pool: lock, read capacity, read forecasts, plan, record, apply.

Shared by :class:`~airflow_predictive.operators.preemptive_allocate.PreemptiveAllocateOperator` and
``airflow-predictive plan``, so the command a user trials is exactly what the DAG runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.capacity import PoolState
from airflow_predictive.contracts.capacity_provider import CapacityProvider
from airflow_predictive.contracts.demand import parse_series_id, series_id
from airflow_predictive.contracts.plan import ActionStatus, Mode, Plan
from airflow_predictive.contracts.pools import CapacityPool, ForecastSource, Signal
from airflow_predictive.contracts.stores import AllocationStore
from airflow_predictive.contracts.workers import WorkerControl
from airflow_predictive.planning.busy import BusyView, ExtraAliases, RunningTask, busy_view, given_hosts
from airflow_predictive.planning.planner import plan as make_plan
from airflow_predictive.planning.planner import planned_capacity, seasonal_floor_buckets
from airflow_predictive.runtime import metrics
from airflow_predictive.runtime.baseline_forecast import BASELINE_WINDOW, baseline_frame
from airflow_predictive.runtime.ledger import Outcome, PoolBusy, execute_plan, pool_lock
from airflow_predictive.runtime.release import ReleaseGuard, guarded
from airflow_predictive.runtime.service_level_choice import following, in_force, stored_choices

log = logging.getLogger(__name__)

#: What a cycle reads (recent demand) and records (capacity) per pool; a pool without a slots series
#: simply has no slots demand, and is sized by the others.
RESOURCES = ("cpu", "memory", "storage", "network", "slots")
TaskReader = Callable[[], Sequence[RunningTask] | None]


@dataclass
class CycleResult:
    """What a cycle did for one pool.

    :param pool: pool name.
    :param plan: the plan (None when the pool was skipped).
    :param outcome: what was applied, skipped, failed or only recorded.
    :param applied_mode: whether actions were sent to Compute Engine.
    :param skipped: why the pool was skipped ("" when it was not).
    :param error: the pool's Compute Engine, connection or other error ("" when none).
    """

    pool: str
    plan: Plan | None = None
    outcome: Outcome = field(default_factory=Outcome)
    applied_mode: bool = False
    skipped: str = ""
    error: str = ""

    def summary(self) -> dict[str, Any]:
        """Compact, JSON-safe summary for XCom and ``--json`` (no reasons longer than needed, no secrets)."""
        if self.error:
            return {"pool": self.pool, "error": self.error}
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


@dataclass(frozen=True)
class PlanningInputs:
    """What the planner reads from the store, for many pools at once: each pool's newest forecast and
    recent demand.

    :meth:`read` fetches them in two queries for all the pools instead of two per pool: a cycle of 250
    pools spent most of its time on those per-pool round trips (docs/benchmarks.md, ``bench scaleout``).
    Each pool then gets exactly the rows its own queries would have returned.

    :param forecasts: per pool, its series' newest forecast (pools planned from recent demand: absent).
    :param demand: per pool, its recent demand since its own window's start.
    """

    forecasts: Mapping[str, pd.DataFrame]
    demand: Mapping[str, pd.DataFrame]

    @classmethod
    def read(cls, store: AllocationStore, pools: Sequence[CapacityPool], now: datetime) -> PlanningInputs:
        """Read the planning inputs of ``pools`` as of ``now``.

        :param store: the profile store.
        :param pools: the pools to plan.
        :param now: the planning time.
        """
        forecast_pools = [p.name for p in pools if p.policy.signal is Signal.FORECAST]
        issued_pools = [p.name for p in pools if _reads(p) is ForecastSource.ISSUED]
        latest = store.latest_forecasts(pools=issued_pools) if issued_pools else None
        if latest is not None and not latest.empty:
            latest = with_bucket_in_progress(store, latest, pools, now)
        windows = {p.name: _demand_window(p) for p in pools}
        ids = [series_id(p.name, r) for p in pools for r in RESOURCES]
        start = now - max(windows.values(), default=timedelta(0))
        recent = store.demand(ids, start=start, end=now + timedelta(seconds=1))
        forecasts, demand = _by_pool(latest), _by_pool(recent)
        demand = {
            name: _since(demand.get(name, _none(recent)), now - window) for name, window in windows.items()
        }
        for pool in pools:  # the baseline is computed from the demand just read, not stored
            if _reads(pool) is ForecastSource.SEASONAL_NAIVE:
                step = timedelta(minutes=pool.policy.planning_interval_minutes)
                forecasts[pool.name] = baseline_frame(demand[pool.name], now=now, interval=step)
        return cls(
            forecasts={name: forecasts.get(name, _none(latest)) for name in forecast_pools},
            demand=demand,
        )

    def forecast_of(self, pool: CapacityPool) -> pd.DataFrame | None:
        """The pool's newest forecast (None: the pool is planned from recent demand)."""
        return self.forecasts.get(pool.name) if pool.policy.signal is Signal.FORECAST else None

    def demand_of(self, pool: CapacityPool) -> pd.DataFrame:
        """The pool's observed demand over its window, oldest first per series."""
        return self.demand[pool.name]


#: Issues before the newest that may still hold the bucket in progress (leads 1 to 3): a cycle or two
#: the loop missed still leaves the bucket an earlier issue's forecast.
_EARLIER_LEADS = 3


def with_bucket_in_progress(
    store: AllocationStore, latest: pd.DataFrame, pools: Sequence[CapacityPool], now: datetime
) -> pd.DataFrame:
    """The newest forecasts, each with the bucket in progress from the issue before when it lacks it.

    A forecast covers whole buckets from the one after the bucket it was issued in, so a cycle that
    forecasts and plans in the same bucket had no forecast of ``now``: the scale-in hold read only
    later buckets and released capacity that known work starting in this bucket needed (the live
    benchmark, 21:40: a scheduled run's fan-out 70 s away, and 1-2 VMs of each pool released). The
    issue before forecast this bucket at lead 1; the store keeps that lead of every superseded issue.

    :param store: the profile store.
    :param latest: ``store.latest_forecasts`` rows of the pools.
    :param pools: the pools planned (their interval is the buckets' width).
    :param now: the planning time.
    """
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    pool_of = {sid: parse_series_id(sid).pool for sid in latest["series_id"].unique()}
    first_ts = pd.to_datetime(latest["ts"], utc=True).groupby(latest["series_id"]).min()
    lacking: dict[timedelta, tuple[pd.Timestamp, list[str]]] = {}
    steps = {p.name: timedelta(minutes=p.policy.planning_interval_minutes) for p in pools}
    for sid, first in first_ts.items():
        step = steps.get(pool_of[sid])
        if step is None:
            continue
        bucket = pd.Timestamp(now).floor(step)
        if first > bucket:
            lacking.setdefault(step, (bucket, []))[1].append(str(sid))
    earlier = []
    for step, (bucket, ids) in lacking.items():
        rows = store.forecasts(
            ids,
            issued_from=(bucket - _EARLIER_LEADS * step).to_pydatetime(),
            issued_to=bucket.to_pydatetime(),
            ts_in=[bucket.to_pydatetime()],
            step=step,
        )
        if not rows.empty:  # the newest such issue of each series
            earlier.append(rows.sort_values("issued_at").groupby("series_id", sort=False).tail(1))
    if not earlier:
        return latest
    merged = pd.concat([latest, *earlier], ignore_index=True)
    return merged.sort_values(["series_id", "ts"], ignore_index=True)


def _reads(pool: CapacityPool) -> ForecastSource | None:
    """The forecast a pool plans from (None: it is planned from recent demand)."""
    if pool.policy.signal is not Signal.FORECAST:
        return None
    return ForecastSource(pool.policy.forecast)


def _demand_window(pool: CapacityPool) -> timedelta:
    """How much observed demand the planner reads for a pool: its stabilisation window, and for a
    forecast-driven pool the days of its reactive guard's daily-cycle check and of its seasonal floor."""
    window = timedelta(
        minutes=max(pool.scale_in.stabilization_minutes, pool.policy.planning_interval_minutes)
    )
    # The daily-cycle check is off (min_daily_cycle -1) for a pool following its service-level choice:
    # its days of demand would be read for nothing, most of a chunk's read.
    if pool.policy.signal is Signal.FORECAST and pool.policy.min_daily_cycle > -1:
        window = max(window, timedelta(days=pool.policy.cycle_window_days))
    if pool.policy.signal is Signal.FORECAST:  # a seasonal floor reads the same time of its last days
        floor = seasonal_floor_buckets(pool) * timedelta(minutes=pool.policy.planning_interval_minutes)
        window = max(window, floor)
    if _reads(pool) is ForecastSource.SEASONAL_NAIVE:
        window = max(window, BASELINE_WINDOW)
    return window


def _by_pool(frame: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """A store frame's rows per pool, each as the store returns them for that pool alone (order kept)."""
    if frame is None or frame.empty:
        return {}
    pools = {sid: parse_series_id(sid).pool for sid in frame["series_id"].unique()}
    grouped = frame.groupby(frame["series_id"].map(pools), sort=False)
    return {pool: rows.reset_index(drop=True) for pool, rows in grouped}


def _none(frame: pd.DataFrame | None) -> pd.DataFrame:
    """The store's frame with no rows (a pool with nothing stored)."""
    return frame.iloc[0:0] if frame is not None else pd.DataFrame()


def _since(frame: pd.DataFrame, start: datetime) -> pd.DataFrame:
    return frame[frame["ts"] >= pd.Timestamp(start)].reset_index(drop=True)


def as_chosen(store: AllocationStore, pools: Sequence[CapacityPool], *, now: datetime) -> list[CapacityPool]:
    """The pools as the feedback loop's stored service-level choices size them at ``now`` (one read
    for all, and one of demand for the choices made on stuck days: :func:`in_force`).

    Applied before :meth:`PlanningInputs.read`: a choice can switch a pool between the forecast and the
    reactive rule, which changes what its plan reads.
    """
    choices = in_force(store, pools, stored_choices(store), now=now)
    return [following(pool, choices.get(pool.name)) for pool in pools]


def run_cycle(
    pool: CapacityPool,
    store: AllocationStore,
    engine: CapacityProvider,
    *,
    now: datetime | None = None,
    busy_hosts: Iterable[str] | None = (),
    running_tasks: TaskReader | None = None,
    apply: bool | None = None,
    lock_wait_seconds: float = 0.0,
    workers: WorkerControl | None = None,
    instance_hostnames: ExtraAliases | None = None,
    read_machine_type: bool = True,
    record: bool = True,
    inputs: PlanningInputs | None = None,
    observed: Mapping[str, Sequence[float]] | None = None,
) -> CycleResult:
    """Plan (and apply, if asked and allowed) one pool; a failure is recorded for this pool only.

    :param pool: the pool.
    :param store: a ProfileStore (forecasts in, plans and ledger out).
    :param engine: the pool's project and zone on the cloud (a :class:`~airflow_predictive.gce.compute.ComputeEngine`).
    :param now: planning time (default: now, UTC).
    :param busy_hosts: hostnames running Airflow tasks, when ``running_tasks`` is not given: an explicit
        override (``plan --busy-host``) whose hosts that map to no VM of the pool are taken to run
        elsewhere; None = unknown, so no VM is released.
    :param running_tasks: reads the running and queued task instances of every DAG (None: unknown);
        read when planning and again right before each release.
    :param apply: True/False force applying or recording only; None follows the pool's mode.
    :param lock_wait_seconds: how long to wait for another run's lock on this pool.
    :param workers: the pool's workers, cordoned and drained before a release (None: no worker control).
    :param instance_hostnames: the deployment's own names for a VM (``[predictive] instance_hostnames``).
    :param read_machine_type: read vCPUs and memory from the Compute Engine API (cached per engine).
    :param record: record the plan and its actions in the ledger and the capacity read, and emit
        metrics. False is a preview (``airflow-predictive plan`` without ``--record``): it takes no
        lock, writes nothing and applies nothing, so the UI and the DAG never see it.
    :param inputs: the pool's forecast and recent demand, read beforehand for many pools at once
        (:meth:`PlanningInputs.read` of the pools :func:`as_chosen` returns; the capacity is still
        read under the pool's lock). None: the pool follows its stored service-level choice and its
        inputs are read for it alone.
    :param observed: observed demand per resource, oldest first, one value per planning interval,
        instead of the store's demand series: for a reactive rule that polls faster than the store's
        buckets (a KEDA-style queue autoscaler polls every few seconds). None reads the store.
    """
    now = now or datetime.now(UTC)
    do_apply = pool.mode is Mode.FORECAST_AND_SCALE if apply is None else bool(apply)
    if do_apply and not record:
        raise ValueError("a cycle that applies its plan must record it: the ledger is written first")
    if inputs is None:
        [pool] = as_chosen(store, [pool], now=now)
        inputs = PlanningInputs.read(store, [pool], now)
    result = CycleResult(pool=pool.name, applied_mode=do_apply)
    read = running_tasks if running_tasks is not None else given_hosts(busy_hosts)
    lock = pool_lock(store, pool.name, wait_seconds=lock_wait_seconds) if record else _no_lock()
    try:
        with lock as lease:
            if read_machine_type and pool.vcpus is None:
                spec = engine.machine_type(pool.machine_type)
                pool = pool.with_machine(spec.vcpus, spec.memory_gib)
            state = engine.pool_state(pool)

            def view() -> BusyView | None:
                return _busy_view(read, state, pool, instance_hostnames)

            result.plan = plan = _plan(pool, inputs, state, now, view(), observed)
            if not record:
                result.outcome = _preview(plan)
                return result
            guard = ReleaseGuard(
                recheck=view,
                workers=workers,
                drain_timeout=pool.scale_in.drain_timeout_seconds,
                keepalive=lease.renew,
                status_now=engine.instance_status,
            )
            applier = guarded(lambda action: engine.apply(action, pool), guard) if do_apply else None
            result.outcome = execute_plan(plan, store, applier, fence=lease.renew)
            _record_capacity(store, pool, state, now, plan.mode)
    except PoolBusy as exc:
        result.skipped = str(exc)
        metrics.emit_allocation(pool.name, {metrics.POOL_LOCKED: 1})
        log.warning("%s", exc)
        return result
    except Exception as exc:  # this pool's cloud or connection error must not stop the other pools
        result.error = f"{exc.__class__.__name__}: {exc}"
        metrics.emit_allocation(pool.name, {metrics.POOL_ERRORS: 1})
        log.error("pool %s: %s", pool.name, result.error)
        return result
    _emit(result)
    return result


@contextmanager
def _no_lock() -> Iterator[Any]:
    """A preview's stand-in for the pool lease: it sends nothing, so it needs no fence."""
    yield None


def _preview(plan: Plan) -> Outcome:
    """Mark every action ``dry_run`` without writing them anywhere."""
    for action in plan.actions:
        action.status = ActionStatus.DRY_RUN
    return Outcome(dry_run=[a.request_id for a in plan.actions])


def _plan(
    pool: CapacityPool,
    inputs: PlanningInputs,
    state: PoolState,
    now: datetime,
    view: BusyView | None,
    observed: Mapping[str, Sequence[float]] | None = None,
) -> Plan:
    """The planner's plan from the newest forecast, recent demand (or ``observed``) and which VMs are
    busy."""
    forecast = inputs.forecast_of(pool)
    recent: Any = observed if observed is not None else inputs.demand_of(pool)
    every_vm = [i.name for i in state.instances]
    busy = every_vm if view is None or view.blocks_releases else sorted(view.instances)
    plan = make_plan(forecast, state, pool, now, busy_instances=busy, recent_demand=recent)
    if view is None:
        plan.capped.append(
            "running task instances unknown (Airflow API unreachable or partial): no VM released"
        )
    elif view.blocks_releases:
        plan.capped.append(view.reason())
    if forecast is not None and len(forecast) == 0:
        plan.capped.append("no forecast stored for this pool: only min_instances is enforced")
    return plan


def _busy_view(
    read: TaskReader, state: PoolState, pool: CapacityPool, extra: ExtraAliases | None
) -> BusyView | None:
    tasks = read()
    if tasks is None:
        return None
    return busy_view(
        tasks, state.instances, project=pool.project, zone=pool.zone, queue=pool.queue_name, extra=extra
    )


def _record_capacity(
    store: AllocationStore, pool: CapacityPool, state: PoolState, now: datetime, mode: Mode
) -> None:
    """What Compute Engine held when the cycle read it (the next cycle records the outcome)."""
    capacity = planned_capacity(Plan(f"{pool.name}@read", pool.name, now, mode), state, pool)
    store.record_capacity(
        [{"pool": pool.name, "resource": r, "ts": now, "value": float(capacity[r])} for r in RESOURCES]
    )


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
            metrics.RELEASES_CANCELLED: len(out.cancelled),
            metrics.PLAN_CAPPED: len(plan.capped),
        },
        {
            metrics.POOL_INSTANCES: float(plan.summary.get("instances_after", 0) or 0),
            metrics.POOL_COST_PER_HOUR: float(plan.summary.get("cost_after", 0) or 0),
        },
    )

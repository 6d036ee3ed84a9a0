"""PreemptiveAllocateOperator: plan each pool from its newest forecast and apply (or record) the plan."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_predictive import config, stats
from airflow_predictive.airflow_api.client import fetch_running_tasks
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.hooks.airflow_api import AirflowApiHook
from airflow_predictive.links import ForecastPageLink
from airflow_predictive.operators.cycle import cycle_origin
from airflow_predictive.planning.busy import RunningTask, given_hosts

if TYPE_CHECKING:  # the allocation cycle loads pandas: imported when the task runs, not at DAG parse
    from airflow_predictive.runtime.allocation_cycle import CycleResult, TaskReader

log = logging.getLogger(__name__)

BusyHosts = Iterable[str] | Callable[[], Iterable[str]] | None


class PreemptiveAllocateOperator(BaseOperator):
    """Plan capacity for each pool from its newest forecast; apply in ``forecast_and_scale`` mode.

    Returns (XCom) a compact summary per pool: actions, caps, instances and hourly cost before/after.

    :param pools: pool names to allocate (default: every pool in the pools file).
    :param pools_file: pools YAML (default: ``[predictive] pools_file``).
    :param apply: force applying (True) or recording only (False); None follows each pool's mode.
    :param gce_conn_id: GceAllocatorHook connection (default: ``[predictive] gce_conn_id``).
    :param store_conn_id: profile store connection (default: ``[predictive] store_conn_id``).
    :param api_conn_id: Airflow REST API connection used to find hosts running tasks
        (default: ``[predictive] api_conn_id``).
    :param busy_hosts: hostnames running tasks, or a callable returning them; overrides the API lookup.
    :param lock_wait_seconds: how long to wait when another allocator run holds a pool.
    :param drain_celery: before releasing a VM, tell its Celery worker to stop consuming the pool's queue.
    :param emulator_url: talk to this Compute Engine emulator (overrides connection and config).
    :param now: plan as of this ISO time (templated); default: the clock when the task runs.
    """

    template_fields: Sequence[str] = ("pools", "pools_file", "emulator_url", "now")
    operator_extra_links = (ForecastPageLink(),)
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        pools: Sequence[str] | None = None,
        pools_file: str | None = None,
        apply: bool | None = None,
        gce_conn_id: str | None = None,
        store_conn_id: str | None = None,
        api_conn_id: str | None = None,
        busy_hosts: BusyHosts = None,
        lock_wait_seconds: float = 30.0,
        drain_celery: bool = True,
        emulator_url: str | None = None,
        now: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pools = list(pools) if pools is not None else None
        self.pools_file = pools_file
        self.apply = apply
        self.gce_conn_id = gce_conn_id
        self.store_conn_id = store_conn_id
        self.api_conn_id = api_conn_id
        self.busy_hosts = busy_hosts
        self.lock_wait_seconds = lock_wait_seconds
        self.drain_celery = drain_celery
        self.emulator_url = emulator_url
        self.now = now

    @cached_property
    def hook(self):
        # Imported when the task runs: the DAG file imports this module at every parse.
        from airflow_predictive.hooks.gce_allocator import GceAllocatorHook

        return GceAllocatorHook(
            self.gce_conn_id or config.get("gce_conn_id"), emulator_url=self.emulator_url or None
        )

    def _tasks(self) -> TaskReader:
        if self.busy_hosts is None:
            return running_tasks_reader(self.api_conn_id or config.get("api_conn_id"))
        return given_hosts(self.busy_hosts)

    def execute(self, context: Any) -> dict[str, Any]:
        return self.execute_at(cycle_origin(self.now, {}) if self.now else None)

    def execute_at(self, now: datetime | None) -> dict[str, Any]:
        """Plan (and apply) every pool as of ``now``: the task's work, callable outside a task (the demo).

        :param now: the planning time (UTC); ``None``: the clock.
        """
        stats.install()
        # Imported when the task runs: the DAG file imports this module at every parse.
        from airflow_predictive.hooks.profile_store import configured_store
        from airflow_predictive.runtime.learning import report_learning

        pools_file = self.pools_file or str(config.get_path("pools_file"))
        pools = config.load_configured_pools(pools_file)
        names = self.pools or sorted(pools)
        unknown = [n for n in names if n not in pools]
        if unknown:
            raise ValueError(
                f"pool(s) {', '.join(unknown)} not in {pools_file}; known: {', '.join(sorted(pools))}"
            )
        store = configured_store(self.store_conn_id)
        try:
            results = allocate_pools(
                [pools[n] for n in names],
                store,
                self.hook,
                now=now,
                tasks=self._tasks(),
                apply=self.apply,
                lock_wait_seconds=self.lock_wait_seconds,
                drain=self.drain_celery,
            )
            report_learning(store, names, now=now or datetime.now(UTC), interval=config.interval())
        finally:
            store.dispose()
        for result in results:
            for action in result.plan.actions if result.plan else []:
                log.info("%s %s [%s] %s", result.pool, action.kind, action.status, action.reason)
        summaries = {r.pool: r.summary() for r in results}
        failed = {r.pool: r.error or r.outcome.failed for r in results if r.error or r.outcome.failed}
        if failed:
            # recorded per pool (ledger, metrics, the summary); the task fails so the run shows it, and
            # the next cycle converges. The other pools were planned and applied all the same.
            raise RuntimeError(f"allocation failed for pool(s) {', '.join(sorted(failed))}: {failed}")
        return {"pools": summaries}


def pool_chunks(
    pools: Sequence[str] | None = None, *, chunk_size: int | None = None, pools_file: str | None = None
) -> list[list[str]]:
    """Pool names split into chunks for ``.expand(pools=...)``, so that workers share the allocation.

    Every cap the planner enforces (``max_instances``, ``budget_per_hour``, ``max_total_gib``) and the
    allocation lock belong to one pool, so a chunk's plans are those of one task planning every pool.

    :param pools: the pools (default: every pool in the pools file).
    :param chunk_size: pools per chunk (default: ``[predictive] pools_per_chunk``).
    :param pools_file: the pools file (default: ``[predictive] pools_file``).
    """
    size = config.get_int("pools_per_chunk") if chunk_size is None else chunk_size
    if size < 1:
        raise ValueError(f"pools_per_chunk must be at least 1, got {size}")
    if pools is None:
        path = pools_file or str(config.get_path("pools_file"))
        pools = sorted(config.load_configured_pools(path))
    names = list(pools)
    return [names[i : i + size] for i in range(0, len(names), size)]


def allocate_pools(
    pools: Sequence[CapacityPool],
    store: Any,
    hook: Any,
    *,
    now: datetime | None,
    tasks: TaskReader,
    apply: bool | None,
    lock_wait_seconds: float = 0.0,
    drain: bool = True,
    record: bool = True,
) -> list[CycleResult]:
    """One allocation cycle for each pool: the operator's and ``airflow-predictive plan``'s loop.

    :param pools: the pools, in order.
    :param store: the profile store.
    :param hook: a GceAllocatorHook (one engine per project and zone).
    :param now: planning time (None: the clock).
    :param tasks: reads the running and queued task instances (None from it: unknown, nothing released).
    :param apply: force applying or recording only; None follows each pool's mode.
    :param lock_wait_seconds: wait for another run's lock on a pool this long.
    :param drain: cordon and drain a VM's Celery worker before releasing it (under the CeleryExecutor).
    :param record: record plans, actions and capacity in the store (False: a preview, see ``run_cycle``).
    """
    from airflow_predictive.runtime.allocation_cycle import CycleResult, PlanningInputs, as_chosen, run_cycle

    extra = config.instance_hostnames()
    planned = tasks()  # one listing plans every pool; each release re-reads (the protocol's re-check)
    # One read of every pool's forecast and recent demand, not two per pool (see PlanningInputs).
    now = now or datetime.now(UTC)  # one planning time for the reads and every pool's plan
    pools = as_chosen(store, pools, now=now)
    inputs = PlanningInputs.read(store, pools, now)
    results = []
    for pool in pools:
        try:
            engine = hook.get_engine(pool.project, pool.zone)
        except Exception as exc:  # a broken connection of one pool must not stop the others
            results.append(CycleResult(pool=pool.name, error=f"{exc.__class__.__name__}: {exc}"))
            continue
        results.append(
            run_cycle(
                pool,
                store,
                engine,
                now=now,
                running_tasks=_first_then(planned, tasks),
                apply=apply,
                lock_wait_seconds=lock_wait_seconds,
                workers=pool_workers(pool.queue_name) if drain else None,
                instance_hostnames=extra,
                record=record,
                inputs=inputs,
            )
        )
    return results


def _first_then(first: Sequence[RunningTask] | None, then: TaskReader) -> TaskReader:
    """A reader that answers ``first`` once (the cycle's planning read), then reads live."""
    pending = [first]
    return lambda: pending.pop() if pending else then()


def running_tasks_reader(api_conn_id: str) -> TaskReader:
    """Reads running and queued task instances of every DAG from the Airflow REST API at each call.

    A call answers None when the API is unreachable or the user cannot see every DAG: the cycle then
    treats every VM as busy (nothing is released), which is the safe failure.

    :param api_conn_id: AirflowApiHook connection id.
    """

    def read() -> list[RunningTask] | None:
        try:
            with AirflowApiHook(api_conn_id).get_client() as client:
                return fetch_running_tasks(client)
        except Exception as exc:
            log.warning("running task instances unknown (%s): no VM will be released", exc)
            return None

    return read


def pool_workers(queue: str) -> Any:
    """The Celery workers of ``queue`` for the release protocol (None unless the executor is Celery).

    :param queue: the Airflow queue of the pool.
    """
    executor = (config._conf().get("core", "executor", fallback="") if config._conf() else "") or ""
    if "Celery" not in executor:
        return None
    from airflow_predictive.workers.celery import celery_workers

    return celery_workers(queue)

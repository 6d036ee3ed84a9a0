"""PreemptiveAllocateOperator: plan each pool from its newest forecast and apply (or record) the plan."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from airflow_predictive import config, stats
from airflow_predictive.contracts.pools import load_pools
from airflow_predictive.hooks.airflow_api import AirflowApiHook
from airflow_predictive.links import ForecastPageLink
from airflow_predictive.operators.cycle import cycle_origin

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

    def _busy(self) -> list[str] | None:
        if self.busy_hosts is not None:
            hosts = self.busy_hosts() if callable(self.busy_hosts) else self.busy_hosts
            return sorted({str(h) for h in hosts})
        return running_task_hosts(self.api_conn_id or config.get("api_conn_id"))

    def execute(self, context: Any) -> dict[str, Any]:
        return self.execute_at(cycle_origin(self.now, {}) if self.now else None)

    def execute_at(self, now: datetime | None) -> dict[str, Any]:
        """Plan (and apply) every pool as of ``now``: the task's work, callable outside a task (the demo).

        :param now: the planning time (UTC); ``None``: the clock.
        """
        stats.install()
        # Imported when the task runs: the DAG file imports this module at every parse.
        from airflow_predictive.hooks.profile_store import configured_store
        from airflow_predictive.runtime.allocation_cycle import run_cycle

        pools_file = self.pools_file or str(config.get_path("pools_file"))
        pools = load_pools(pools_file, config.sizing_defaults())
        names = self.pools or sorted(pools)
        unknown = [n for n in names if n not in pools]
        if unknown:
            raise ValueError(
                f"pool(s) {', '.join(unknown)} not in {pools_file}; known: {', '.join(sorted(pools))}"
            )
        busy = self._busy()
        store = configured_store(self.store_conn_id)
        results = {}
        try:
            for name in names:
                pool = pools[name]
                engine = self.hook.get_engine(pool.project, pool.zone)
                drain = celery_drain(pool.queue_name) if self.drain_celery else None
                result = run_cycle(
                    pool,
                    store,
                    engine,
                    now=now,
                    busy_hosts=busy,
                    apply=self.apply,
                    lock_wait_seconds=self.lock_wait_seconds,
                    drain=drain,
                )
                for action in result.plan.actions if result.plan else []:
                    log.info("%s %s [%s] %s", name, action.kind, action.status, action.reason)
                results[name] = result.summary()
        finally:
            store.dispose()
        failed = {n: s["outcome"]["errors"] for n, s in results.items() if s.get("outcome", {}).get("failed")}
        if failed:
            # recorded in the ledger; the task fails so the run shows it, and the next cycle converges
            raise RuntimeError(f"allocation actions failed: {failed}")
        return {"pools": results}


def running_task_hosts(api_conn_id: str) -> list[str] | None:
    """Hostnames of running task instances from the Airflow REST API; None when the API is unreachable.

    None makes the planner treat every VM as busy (nothing is released), which is the safe failure.

    :param api_conn_id: AirflowApiHook connection id.
    """
    try:
        with AirflowApiHook(api_conn_id).get_client() as client:
            rows = client.paginate("/dags/~/dagRuns/~/taskInstances", "task_instances", {"state": "running"})
            return sorted({str(r["hostname"]) for r in rows if r.get("hostname")})
    except Exception as exc:
        log.warning("running task instances unknown (%s): no VM will be released this cycle", exc)
        return None


def celery_drain(queue: str) -> Callable[[Any], None] | None:
    """A drain callback that makes the Celery worker on a VM stop consuming ``queue`` (None without Celery).

    :param queue: the Airflow queue of the pool.
    """
    executor = (config._conf().get("core", "executor", fallback="") if config._conf() else "") or ""
    if "Celery" not in executor:
        return None

    def drain(action: Any) -> None:
        from airflow.providers.celery.executors.celery_executor_utils import _get_celery_app

        _get_celery_app().control.cancel_consumer(queue, destination=[f"celery@{action.target}"], reply=False)

    return drain

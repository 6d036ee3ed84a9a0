"""The release protocol's safety rules, each with a test that fails when the rule is removed.

- the busy check maps every hostname form a worker reports (FQDN, short, ``celery@``, internal IP,
  the deployment's own names) to its VM, and a task of the pool's queue on a host that maps to no VM
  blocks every release of the pool (recorded with the plan);
- cordon, drain, re-check, then delete: an unconfirmed cordon, a drain that does not finish, or a task
  found at the re-check cancels the release (ledger ``cancelled``, with why), and the worker consumes again;
- the lease is renewed before each action and judged on the store's clock; a run that lost it sends nothing;
- one pool's Compute Engine or connection error is that pool's only; connection errors are retried.

Compute Engine is the local emulator through the real google-cloud-compute client. The workers here
are a scripted :class:`WorkerControl` (the provider's own interface); the chaos test
(tests/scaleout/test_release_chaos.py) runs the same protocol against real Celery workers.
"""

from __future__ import annotations

import socket

import pytest

from airflow_predictive.contracts.capacity import InstanceState
from airflow_predictive.contracts.plan import Action, ActionCancelled, ActionKind
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.gce.compute import ComputeEngine, ComputeEngineError, RetryPolicy
from airflow_predictive.planning.busy import RunningTask, busy_view
from airflow_predictive.runtime.allocation_cycle import run_cycle
from airflow_predictive.runtime.ledger import Lease, execute_plan, pool_lock
from airflow_predictive.runtime.release import ReleaseGuard
from tests.allocation.conftest import FAST, NOW, PROJECT, ZONE, forecast_frame
from tests.allocation.conftest import make_pool as base_pool

FOUR_TRIES = RetryPolicy(attempts=4, initial_seconds=0.01, max_seconds=0.02)


def make_pool(**overrides) -> CapacityPool:
    return base_pool(**{"scale_in": {"drain_timeout_seconds": 5}, **overrides})


def seed(control, names, project=PROJECT) -> None:
    bodies = [
        {
            "name": name,
            "machineType": f"zones/{ZONE}/machineTypes/n2-standard-8",
            "labels": {"predictive-pool": "etl"},
            "networkInterfaces": [{"network": "global/networks/default"}],
        }
        for name in names
    ]
    control.seed(project=project, zone=ZONE, instances=bodies, ready=True)


def live(engine, pool) -> list[str]:
    return sorted(i.name for i in engine.pool_state(pool).live())


def task(host: str, queue: str = "etl", state: str = "running") -> RunningTask:
    return RunningTask("etl_dag", "load", "run-1", hostname=host, queue=queue, state=state)


def releases(result) -> list[str]:
    return sorted(a.target for a in result.plan.actions if a.kind == ActionKind.RELEASE)


# ------------------------------------------------------------------------------------ busy check


def test_every_hostname_form_a_worker_reports_maps_to_its_vm():
    vms = [InstanceState(f"etl-{k}", internal_ips=(f"10.128.0.{k}",)) for k in range(6)]
    tasks = [
        task("etl-0.us-central1-a.c.demo-project.internal"),  # Compute Engine's FQDN (the default)
        task("ETL-1"),  # short name, any case
        task("celery@etl-2"),  # a Celery node name
        task("10.128.0.3"),  # an internal IP (hostname_callable = socket.gethostbyname...)
        task("etl-4.c.demo-project.internal"),  # global DNS
        task("box-5.corp.example", queue="etl"),  # the deployment's own name, via instance_hostnames
    ]
    view = busy_view(
        tasks,
        vms,
        project=PROJECT,
        zone=ZONE,
        queue="etl",
        extra=lambda i: [f"box-{i.name.split('-')[1]}.corp.example"],
    )
    assert view.instances == {f"etl-{k}" for k in range(6)}
    assert not view.blocks_releases


def test_a_task_of_the_pools_queue_on_an_unknown_host_blocks_releases_others_do_not():
    vms = [InstanceState("etl-0"), InstanceState("etl-1")]
    elsewhere = busy_view([task("ml-7", queue="ml")], vms, project=PROJECT, zone=ZONE, queue="etl")
    assert not elsewhere.blocks_releases  # another pool's task on its own VM
    waiting = busy_view([task("", state="queued")], vms, project=PROJECT, zone=ZONE, queue="etl")
    assert not waiting.blocks_releases  # queued, not on a worker yet: Celery's reserved list covers it
    unknown = busy_view([task("worker-42.corp")], vms, project=PROJECT, zone=ZONE, queue="etl")
    assert unknown.blocks_releases and "worker-42.corp" in unknown.reason()
    nameless = busy_view([task("")], vms, project=PROJECT, zone=ZONE, queue="etl")
    assert nameless.blocks_releases  # running with no host recorded: cannot be placed, so not idle


def test_a_worker_reporting_its_internal_ip_keeps_its_vm(engine, control, store):
    # The reported bug: hostnames that are not VM names let the allocator release a busy VM.
    seed(control, ["etl-a", "etl-b", "etl-c"])
    pool = make_pool()
    ips = {i.name: i.internal_ips[0] for i in engine.pool_state(pool).instances}
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}))
    result = run_cycle(pool, store, engine, now=NOW, running_tasks=lambda: [task(ips["etl-b"])])
    assert releases(result) == ["etl-a", "etl-c"]
    assert live(engine, pool) == ["etl-b"]


def test_an_unmapped_host_blocks_every_release_of_the_pool_and_the_plan_says_why(engine, control, store):
    seed(control, ["etl-a", "etl-b"])
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}))
    result = run_cycle(pool, store, engine, now=NOW, running_tasks=lambda: [task("worker-42.corp")])
    assert releases(result) == []
    assert live(engine, pool) == ["etl-a", "etl-b"]
    (stored,) = store.plans(pool="etl").to_dict("records")
    assert "worker-42.corp" in str(stored["capped"])


def test_unknown_running_tasks_release_nothing(engine, control, store):
    seed(control, ["etl-a", "etl-b"])
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}))
    result = run_cycle(make_pool(), store, engine, now=NOW, running_tasks=lambda: None)
    assert releases(result) == [] and live(engine, make_pool()) == ["etl-a", "etl-b"]


# ------------------------------------------------------------------------ cordon, drain, re-check


class ScriptedWorkers:
    """A WorkerControl whose answers the test sets: which VMs confirm, how many tasks each holds."""

    def __init__(self, *, confirms: bool = True, held: dict[str, list[int | None]] | None = None) -> None:
        self.confirms = confirms
        self.held = held or {}
        self.calls: list[tuple[str, str]] = []

    def cordon(self, instance: str) -> bool:
        self.calls.append(("cordon", instance))
        return self.confirms

    def held_tasks(self, instance: str) -> int | None:
        self.calls.append(("held", instance))
        script = self.held.get(instance, [0])
        return script.pop(0) if len(script) > 1 else script[0]

    def uncordon(self, instance: str) -> bool:
        self.calls.append(("uncordon", instance))
        return True


def release_with(guard: ReleaseGuard, name: str = "etl-a") -> tuple[list[str], str]:
    """Apply one release through ``guard``; (deleted VMs, cancellation reason or "")."""
    deleted: list[str] = []
    action = Action(
        "etl", ActionKind.RELEASE, 1, "test", f"rel-{name}", target=name, details={"status": "RUNNING"}
    )
    try:
        guard.release(action, lambda a: deleted.append(a.target) or {})
    except Exception as exc:
        return deleted, getattr(exc, "reason", str(exc))
    return deleted, ""


def idle():
    return busy_view([], [InstanceState("etl-a")], project=PROJECT, zone=ZONE, queue="etl")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_an_idle_vm_is_cordoned_drained_rechecked_then_deleted():
    workers = ScriptedWorkers(held={"etl-a": [2, 1, 0]})
    clock = FakeClock()
    checks = []
    guard = ReleaseGuard(
        recheck=lambda: checks.append(1) or idle(), workers=workers, clock=clock, sleep=clock.sleep
    )
    deleted, why = release_with(guard)
    assert (deleted, why) == (["etl-a"], "")
    assert [c for c, _ in workers.calls] == ["cordon", "held", "held", "held"] and checks == [1]


def test_a_worker_that_does_not_confirm_the_cordon_keeps_its_vm():
    workers = ScriptedWorkers(confirms=False)
    deleted, why = release_with(ReleaseGuard(recheck=idle, workers=workers))
    assert deleted == [] and "did not confirm" in why


def test_a_drain_that_does_not_finish_in_time_cancels_and_the_worker_consumes_again():
    workers = ScriptedWorkers(held={"etl-a": [1]})
    clock = FakeClock()
    guard = ReleaseGuard(recheck=idle, workers=workers, drain_timeout=30, clock=clock, sleep=clock.sleep)
    deleted, why = release_with(guard)
    assert deleted == [] and "still held 1 task" in why
    assert workers.calls[-1] == ("uncordon", "etl-a")
    assert 30 <= clock.now <= 32


def test_a_worker_that_does_not_say_what_it_holds_keeps_its_vm():
    workers = ScriptedWorkers(held={"etl-a": [None]})
    deleted, why = release_with(ReleaseGuard(recheck=idle, workers=workers))
    assert deleted == [] and "did not say" in why and workers.calls[-1][0] == "uncordon"


def test_a_task_found_at_the_recheck_cancels_the_release_and_uncordons():
    workers = ScriptedWorkers()

    def busy():
        return busy_view([task("etl-a")], [InstanceState("etl-a")], project=PROJECT, zone=ZONE, queue="etl")

    deleted, why = release_with(ReleaseGuard(recheck=busy, workers=workers))
    assert deleted == [] and "started on it" in why and workers.calls[-1] == ("uncordon", "etl-a")
    deleted, why = release_with(ReleaseGuard(recheck=lambda: None, workers=ScriptedWorkers()))
    assert deleted == [] and "could not be read again" in why


def test_a_booting_vm_has_no_worker_to_cordon_but_is_still_rechecked():
    workers = ScriptedWorkers(confirms=False)
    deleted: list[str] = []
    action = Action("etl", ActionKind.RELEASE, 1, "t", "r", target="etl-a", details={"status": "STAGING"})
    ReleaseGuard(recheck=idle, workers=workers).release(action, lambda a: deleted.append(a.target) or {})
    assert deleted == ["etl-a"] and workers.calls == []


def booting_release(name: str = "etl-a") -> Action:
    """A release planned while ``name`` was still booting (the plan's status is STAGING)."""
    return Action(
        "etl", ActionKind.RELEASE, 1, "t", f"rel-{name}", target=name, details={"status": "STAGING"}
    )


def test_a_vm_booting_at_the_plan_but_running_at_its_release_is_cordoned_first(engine, control):
    # By the time a release comes (after other releases' drains), a VM that was booting at the plan may
    # run a worker that took a task: it goes through cordon and drain like any running VM.
    seed(control, ["etl-a"])  # RUNNING now
    deleted: list[str] = []
    silent = ScriptedWorkers(confirms=False)  # its worker is not up yet, or does not answer
    guard = ReleaseGuard(recheck=idle, workers=silent, status_now=engine.instance_status)
    with pytest.raises(ActionCancelled, match="did not confirm"):
        guard.release(booting_release(), lambda a: deleted.append(a.target) or {})
    assert deleted == [] and silent.calls[0] == ("cordon", "etl-a")
    busy = ScriptedWorkers(held={"etl-a": [1, 0]})  # it held a task, which finished in the drain
    guard = ReleaseGuard(recheck=idle, workers=busy, status_now=engine.instance_status, sleep=lambda s: None)
    guard.release(booting_release(), lambda a: deleted.append(a.target) or {})
    assert deleted == ["etl-a"] and [c for c, _ in busy.calls] == ["cordon", "held", "held"]


def test_a_vm_still_booting_at_its_release_is_deleted_without_a_cordon(engine, control):
    control.configure(boot_seconds=60)
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instances=[{"name": "etl-a", "machineType": f"zones/{ZONE}/machineTypes/n2-standard-8"}],
        ready=False,
    )
    assert engine.instance_status("etl-a") in ("PROVISIONING", "STAGING")
    workers = ScriptedWorkers(confirms=False)
    deleted: list[str] = []
    guard = ReleaseGuard(recheck=idle, workers=workers, status_now=engine.instance_status)
    guard.release(booting_release(), lambda a: deleted.append(a.target) or {})
    assert deleted == ["etl-a"] and workers.calls == []
    assert engine.instance_status("etl-gone") is None
    with pytest.raises(ActionCancelled, match="no longer exists"):
        guard.release(booting_release("etl-gone"), lambda a: deleted.append(a.target) or {})


def test_the_cycle_records_a_cancelled_release_and_keeps_the_vm(engine, control, store):
    seed(control, ["etl-a", "etl-b", "etl-c"])
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}))  # one VM is enough
    reads = iter([[]])  # idle when planned; then the first VM to go gets a task before its delete
    landed: list[str] = []

    def running() -> list[RunningTask]:
        planned = next(reads, None)
        if planned is not None:
            return planned
        if not landed:
            landed.append(cycle_releases(store)[0])
        return [task(f"{landed[0]}.us-central1-a.c.demo-project.internal")]

    result = run_cycle(pool, store, engine, now=NOW, running_tasks=running, workers=ScriptedWorkers())
    assert len(releases(result)) == 2
    ledger = store.actions(pool="etl").set_index("target")
    assert ledger.loc[landed[0], "status"] == "cancelled"
    assert "started on it" in ledger.loc[landed[0], "error"]
    (other,) = set(releases(result)) - set(landed)
    assert ledger.loc[other, "status"] == "applied"
    assert landed[0] in live(engine, pool) and other not in live(engine, pool)
    assert result.outcome.as_dict()["cancelled"] == 1 and not result.outcome.failed


def cycle_releases(store) -> list[str]:
    """The VMs the stored plan releases, in the order it sends them."""
    actions = store.actions(pool="etl")
    return list(actions.loc[actions["kind"] == "release", "target"])


# ----------------------------------------------------------------------------------------- lease


def test_a_lease_renews_while_held_and_not_after_another_run_took_it(any_store):
    with pool_lock(any_store, "etl", ttl_seconds=60) as lease:
        assert lease.renew()
        any_store.release_lease(lease.name, lease.owner)  # as if it expired and ...
        assert any_store.try_lease(lease.name, "other-run", 60)  # ... another run took the pool
        assert not lease.renew()
    assert any_store.lease_holder("lock:allocation/etl")[0] == "other-run"  # ours never freed theirs


def test_an_expired_lease_cannot_be_renewed(any_store):
    assert any_store.try_lease("lock:allocation/etl", "run-1", ttl_seconds=-5)  # expired at once
    assert not any_store.renew_lease("lock:allocation/etl", "run-1", 60)


def test_a_run_that_lost_its_lease_sends_nothing_more(engine, control, store):
    seed(control, ["etl-a", "etl-b", "etl-c", "etl-d"])
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}))
    with pool_lock(store, "etl") as lease:
        from airflow_predictive.planning.planner import plan

        p = plan(
            forecast_frame("etl", {"cpu": [1] * 12}), engine.pool_state(pool), pool, NOW, busy_instances=[]
        )
        assert len([a for a in p.actions if a.kind == ActionKind.RELEASE]) == 3
        renewals = iter([True])  # held for the first action only
        outcome = execute_plan(p, store, lambda a: engine.apply(a, pool), fence=lambda: next(renewals, False))
        assert isinstance(lease, Lease)
    assert len(outcome.applied) == 1 and len(outcome.cancelled) == 2
    assert len(live(engine, pool)) == 3
    # the lost run left the ledger alone: the run that took the pool over may write these request ids
    statuses = store.actions(pool="etl").set_index("request_id")["status"]
    assert sorted(statuses[list(outcome.cancelled)]) == ["planned", "planned"]


# ------------------------------------------------------------------------------ failure isolation


def test_one_pools_compute_engine_error_does_not_stop_the_other_pools(emulator_url, control, store):
    from airflow_predictive.operators.preemptive_allocate import allocate_pools

    seed(control, ["etl-a", "etl-b", "etl-c"])
    broken = make_pool(name="broken", project="broken-project")
    control.inject_fault(path_regex="/projects/broken-project/", status=503, count=-1)
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}))

    class Hook:
        def get_engine(self, project, zone):
            return ComputeEngine(project, zone, endpoint=emulator_url, retry=FAST)

    results = allocate_pools(
        [broken, make_pool()], store, Hook(), now=NOW, tasks=lambda: [], apply=None, drain=False
    )
    by_pool = {r.pool: r for r in results}
    assert "HTTP 503" in by_pool["broken"].error and by_pool["broken"].plan is None
    assert len(releases(by_pool["etl"])) == 2 and not by_pool["etl"].error
    assert len(live(ComputeEngine(PROJECT, ZONE, endpoint=emulator_url), make_pool())) == 1
    assert by_pool["broken"].summary() == {"pool": "broken", "error": by_pool["broken"].error}


def test_connection_errors_are_retried_then_end_in_one_clear_message():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pauses: list[float] = []
    engine = ComputeEngine(
        PROJECT, ZONE, endpoint=f"http://127.0.0.1:{port}", retry=FOUR_TRIES, sleep=pauses.append
    )
    with pytest.raises(
        ComputeEngineError, match="cannot reach Compute Engine at http://127.0.0.1:.* after 4 attempts"
    ):
        engine.pool_state(make_pool())
    assert len(pauses) == 3 and engine.calls == 4


def test_a_dropped_connection_mid_cycle_is_retried_and_the_cycle_converges(engine, control, store):
    control.inject_fault(method="POST", path_regex="/instances$", drop_connection=True, count=2)
    store.write_forecasts(forecast_frame("etl", {"cpu": [20] * 12}))  # 24 vCPU: 3 VMs
    calls_before = engine.calls
    result = run_cycle(make_pool(), store, engine, now=NOW, running_tasks=lambda: [])
    assert not result.outcome.failed and not result.error
    assert len(live(engine, make_pool())) == 3
    assert engine.calls - calls_before >= 3 + 2  # the two dropped inserts were sent again


def test_one_listing_of_running_tasks_plans_every_pool(emulator_url, control, store):
    from airflow_predictive.operators.preemptive_allocate import allocate_pools

    reads: list[int] = []

    def tasks() -> list[RunningTask]:
        reads.append(1)
        return []

    class Hook:
        def get_engine(self, project, zone):
            return ComputeEngine(project, zone, endpoint=emulator_url, retry=FAST)

    pools = [make_pool(name=f"etl-{k}") for k in range(3)]
    results = allocate_pools(pools, store, Hook(), now=NOW, tasks=tasks, apply=None, drain=False)
    assert [r.error for r in results] == ["", "", ""]
    assert len(reads) == 1  # no pool released anything, so no re-check read either

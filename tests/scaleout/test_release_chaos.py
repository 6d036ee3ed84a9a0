"""Chaos on real processes: scale-in, preemptions and API faults while Airflow runs tasks on emulated VMs.

A real Airflow (api-server, scheduler, dag-processor; CeleryExecutor on PostgreSQL and Redis) and the
Compute Engine emulator as its own process with ``--workers``: every VM the allocator launches runs a
real ``airflow celery worker`` for the pool's queue. ``chaos_work`` maps 10 tasks of 20 s each. While
they run, at random times (seeded), the allocator's own cycle (``run_cycle``: the DAG's code) is run
with forecasts that scale the pool out and in, also with a planner that is told every VM is idle (so
the release protocol alone must keep busy VMs), a Spot VM running a task is preempted, and the
emulator answers 429, 503 or drops the connection. Then:

- every task instance ends ``success``: no task lost; a preempted worker's task was retried;
- no VM was released while a try ran on it (ledger ``applied`` release times against the tries' spans);
- releases were cancelled because the VM was busy, and the ledger holds every action with its attempt;
- after the chaos, capacity converges: a steady forecast's plan is reached and the next plans nothing.

Every process started here (Airflow components, the emulator and its workers) is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_predictive.contracts.plan import Action, ActionKind, Provisioning
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.gce.compute import ComputeEngine, RetryPolicy
from airflow_predictive.planning.busy import host_forms
from tests.airflow_harness import AirflowDeployment, free_port
from tests.allocation.conftest import forecast_frame
from tests.services import postgres_database, redis_database

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "chaos_work"
PROJECT, ZONE = "chaos-project", "us-central1-a"
BROKER_DB = 5
SEED = 20261202

pytestmark = [pytest.mark.celery, pytest.mark.integration]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    from airflow_predictive_tools.deployment import BIN
    from airflow_predictive_tools.emulator.server import EmulatorControl

    from airflow_predictive.store import ProfileStore

    home = tmp_path_factory.mktemp("chaos")
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(redis_database(BROKER_DB))
        meta_url = stack.enter_context(postgres_database("chaos_meta"))
        store_url = stack.enter_context(postgres_database("chaos_store"))
        env = {
            "PYTHONPATH": str(REPO),
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url.replace("+psycopg2", ""),
            # a worker killed with its VM stops heartbeating: fail its try soon, so Airflow retries it
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            # a task the preempted worker had taken but not started stays queued (its message unacked
            # until Redis's visibility timeout): Airflow re-queues it after this (600 s by default)
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "45",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
        }
        airflow = stack.enter_context(
            AirflowDeployment(
                home / "airflow",
                REPO / "tests" / "scaleout" / "chaos_dags",
                components=("api-server", "scheduler", "dag-processor"),
                executor="CeleryExecutor",
                parallelism=16,
                env=env,
                sql_alchemy_conn=meta_url,
            )
        )
        port = free_port()
        airflow.start_process(
            "gce-emulator",
            [str(BIN / "airflow-predictive"), "gce-emulator", "--port", str(port), "--boot-seconds", "2"]
            + ["--workers", "--worker-log-dir", str(home / "vms")],
        )
        emulator_url = f"http://127.0.0.1:{port}"
        _wait_for_emulator(EmulatorControl(emulator_url), airflow)
        airflow.wait_for_dag(DAG_ID, timeout=180)
        store = ProfileStore(store_url)
        stack.callback(store.dispose)
        yield {
            "airflow": airflow,
            "store": store,
            "control": EmulatorControl(emulator_url),
            "engine": ComputeEngine(
                PROJECT,
                ZONE,
                endpoint=emulator_url,
                retry=RetryPolicy(attempts=8, initial_seconds=0.2, max_seconds=1),
            ),
            "broker": broker,
            "home": home,
        }


def _wait_for_emulator(control, airflow, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            control.call("GET", "health")
            return
        time.sleep(0.5)
    raise AssertionError(f"the emulator did not start\n{airflow.log_tail('gce-emulator')}")


POOL = CapacityPool(
    name="chaos",
    project=PROJECT,
    zone=ZONE,
    machine_type="n2-standard-2",
    min_instances=1,
    max_instances=6,
    slots_per_instance=2,
    thresholds={"storage": 0},
    spot={"mode": "none"},
    mode="forecast_and_scale",
    scale_in={"stabilization_minutes": 0, "drain_timeout_seconds": 4},
)


class Driver:
    """Runs the allocator's cycle for the pool ``chaos`` on a virtual planning clock, with chaos."""

    def __init__(self, chaos: dict, rng: random.Random) -> None:
        from celery import Celery

        from airflow_predictive.airflow_api.client import AirflowApiClient
        from airflow_predictive.workers.celery import CeleryWorkers

        self.chaos = chaos
        self.rng = rng
        airflow = chaos["airflow"]
        self.api = AirflowApiClient(airflow.base_url, username="admin", password=airflow.password)
        self.celery = Celery("chaos-control", broker=chaos["broker"])
        self.workers = CeleryWorkers(self.celery, POOL.queue_name, timeout=2.0)
        self.now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.counts = {"cycles": 0, "blind_scale_ins": 0, "preemptions": 0, "faults": 0, "spot_launched": 0}

    def close(self) -> None:
        self.api.close()
        self.celery.close()

    def running(self):
        from airflow_predictive.airflow_api.client import fetch_running_tasks

        try:
            return fetch_running_tasks(self.api)
        except Exception:
            return None

    def cycle(self, vms: int, *, blind: bool = False):
        """One allocation cycle sized for ``vms`` VMs; ``blind``: the planner is told every VM is idle."""
        from airflow_predictive.runtime.allocation_cycle import run_cycle

        self.now += timedelta(minutes=5)
        cpu = 2.0 * vms / 1.25  # q0.9 = 1.2 x: just under ``vms`` n2-standard-2 VMs
        self.chaos["store"].write_forecasts(forecast_frame(POOL.name, {"cpu": [cpu] * 36}, start=self.now))
        reads = [[]] if blind else []

        def tasks():
            return reads.pop() if reads else self.running()

        self.counts["cycles"] += 1
        self.counts["blind_scale_ins"] += int(blind)
        return run_cycle(
            POOL,
            self.chaos["store"],
            self.chaos["engine"],
            now=self.now,
            running_tasks=tasks,
            workers=self.workers,
        )

    def launch_spot(self) -> str:
        name = f"chaos-spot-{self.counts['spot_launched']}"
        action = Action(
            POOL.name,
            ActionKind.LAUNCH_INSTANCES,
            1,
            "chaos: a Spot VM",
            f"chaos-spot-{self.counts['spot_launched']}",
            provisioning=Provisioning.SPOT,
            details={"names": [name]},
        )
        self.chaos["engine"].apply(action, POOL)
        self.counts["spot_launched"] += 1
        return name

    def preempt_busy_spot(self) -> str | None:
        spots = {
            i.name
            for i in self.chaos["engine"].pool_state(POOL).live()
            if i.provisioning == Provisioning.SPOT
        }
        for t in self.running() or []:
            hit = {f for f in host_forms(t.hostname)} & spots
            if t.state == "running" and hit:
                vm = hit.pop()
                self.chaos["control"].preempt(vm, zone=ZONE, project=PROJECT)
                self.counts["preemptions"] += 1
                return vm
        return None

    def fault(self) -> None:
        kind = self.rng.choice([{"status": 429}, {"status": 503}, {"drop_connection": True}])
        path = self.rng.choice(["/instances$", "/instances/[^/]+$", "/machineTypes/"])
        self.chaos["control"].inject_fault(path_regex=path, count=self.rng.randint(1, 2), **kind)
        self.counts["faults"] += 1


def _run_state(airflow, run_id: str) -> str:
    with airflow.client() as client:
        response = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()["state"]


def _tries(airflow, run_id: str) -> list[dict]:
    tries = []
    with airflow.client() as client:
        response = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        response.raise_for_status()
        for ti in response.json()["task_instances"]:
            url = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/{ti['map_index']}/tries"
            found = client.get(url)
            found.raise_for_status()
            tries += found.json()["task_instances"]
    return tries


def _vm_of(hostname: str, names: set[str]) -> str | None:
    hits = host_forms(hostname) & names
    return hits.pop() if hits else None


def _wait_until(predicate, timeout: float, what: str, airflow) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"{what} not reached in {timeout}s\n{airflow.log_tail('scheduler', 3000)}")


def test_no_task_is_lost_to_scale_in_preemption_or_api_faults(chaos, capsys) -> None:
    airflow, store, control = chaos["airflow"], chaos["store"], chaos["control"]
    rng = random.Random(SEED)
    driver = Driver(chaos, rng)
    try:
        # capacity first: 3 standard VMs from the allocator and a Spot VM, all running workers
        assert not driver.cycle(3).outcome.failed
        driver.launch_spot()
        _wait_until(lambda: len(control.workers()["workers"]) >= 4, 120, "4 workers", airflow)
        run_id = airflow.trigger(DAG_ID)
        started = time.monotonic()
        # the sure parts of the chaos: a busy Spot VM preempted, and a blind scale-in while all run
        _wait_until(lambda: driver.preempt_busy_spot() is not None, 90, "a task on the Spot VM", airflow)
        blind = driver.cycle(1, blind=True)
        # then random chaos at random times until the run ends
        while _run_state(airflow, run_id) not in ("success", "failed") and time.monotonic() - started < 420:
            time.sleep(rng.uniform(2, 6))
            event = rng.choice(["scale_out", "scale_in", "blind", "fault", "fault"])
            if event == "fault":
                driver.fault()
            driver.cycle(
                rng.randint(3, 5) if event == "scale_out" else rng.randint(1, 2), blind=event == "blind"
            )
        state = airflow.wait_for_run(DAG_ID, run_id, timeout=60)
        control.clear_faults()
        # capacity converges to the plan: a steady forecast, then nothing more to do
        steady = driver.cycle(2)
        live = sorted(i.name for i in chaos["engine"].pool_state(POOL).live())
        again = driver.cycle(2)
    finally:
        driver.close()

    tries = _tries(airflow, run_id)
    actions = store.actions(pool=POOL.name)
    fleet = control.workers()
    released = actions[(actions["kind"] == "release") & (actions["status"] == "applied")]
    cancelled = actions[actions["status"] == "cancelled"]
    busy_cancelled = cancelled[
        cancelled["error"].str.contains("started on it|still held|not confirm|blocked")
    ]
    final = {}
    for t in tries:
        final[t["map_index"]] = (
            t
            if t["try_number"] >= final.get(t["map_index"], {"try_number": 0})["try_number"]
            else final[t["map_index"]]
        )
    counts = {
        "tasks": len(final),
        "tries": len(tries),
        "retries": len(tries) - len(final),
        "releases_applied": len(released),
        "releases_cancelled_busy": len(busy_cancelled),
        "preemptions": fleet["killed"].get("preempted", 0),
        "workers_started": fleet["started"],
        **driver.counts,
    }
    with capsys.disabled():  # shown in `make test` too, whose capture hides a passing test's prints
        print(f"\nchaos counts: {json.dumps(counts, sort_keys=True)}")
    summary = [(t["map_index"], t["try_number"], t["state"], t["hostname"]) for t in tries]
    assert state == "success", f"run ended {state}: {summary}\n{airflow.log_tail('scheduler', 3000)}"
    assert len(final) == 10 and all(t["state"] == "success" for t in final.values()), summary

    # no VM was released while a try ran on it
    vm_names = set(released["target"]) | {k["instance"] for k in fleet["kills"]}
    for _, release in released.iterrows():
        at = release["updated_at"].to_pydatetime()
        for t in tries:
            if _vm_of(t["hostname"] or "", vm_names) != release["target"] or not t["start_date"]:
                continue
            start = datetime.fromisoformat(t["start_date"].replace("Z", "+00:00"))
            end = datetime.fromisoformat((t["end_date"] or "9999-01-01T00:00:00Z").replace("Z", "+00:00"))
            assert not start <= at <= end, f"{release['target']} released at {at} while try {t} ran on it"
    # every failed try was on a preempted VM (and retried), never on a released one
    preempted = {k["instance"] for k in fleet["kills"] if k["reason"] == "preempted"}
    for t in tries:
        if t["state"] != "success":
            assert _vm_of(t["hostname"] or "", vm_names) in preempted, (t, summary)
    assert counts["preemptions"] >= 1 and counts["retries"] >= 1, counts
    assert len(blind.plan.actions) and counts["releases_cancelled_busy"] >= 1, counts
    assert counts["releases_applied"] >= 1, counts
    # the ledger holds every attempt: nothing left planned, every call numbered
    assert set(actions["status"]) <= {"applied", "cancelled", "failed"}, actions[["kind", "status", "error"]]
    assert (actions["attempt"] >= 1).all()
    # capacity converged to the steady plan, and the next cycle has nothing to do
    assert len(live) == steady.plan.summary["instances_after"], (live, steady.summary())
    assert [
        a for a in again.plan.actions if a.kind in (ActionKind.LAUNCH_INSTANCES, ActionKind.RELEASE)
    ] == []

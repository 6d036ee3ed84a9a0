"""Emulated VMs that run a real Airflow Celery worker (``ComputeEngineEmulator(workers=...)``).

One emulator for the module boots every VM at once through the real google-cloud-compute client, so
the workers import Airflow in parallel; the tests then talk to them with the Celery app Airflow builds,
over a dedicated Redis index. No mocks: every worker is a real ``airflow celery worker`` process tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_predictive_tools.emulator.guest import kill_session, session_members
from airflow_predictive_tools.emulator.server import (
    ComputeEngineEmulator,
    EmulatorControl,
    WorkerOptions,
    compute_client,
)
from airflow_predictive_tools.emulator.vm_hostname import CALLABLE, ENV_VAR, boot_hostname
from google.cloud import compute_v1

from airflow_predictive.contracts.worker_metadata import metadata_items
from tests.gce.conftest import PROJECT, ZONE, eventually
from tests.services import redis_database

BROKER_DB = 9  # a Redis index of our own, flushed before and after
FAST = {"boot_seconds": 0.3, "stop_seconds": 0.1, "operation_seconds": 0.02, "recreate_seconds": 0.2}
STARTUP = 90  # seconds for a worker to answer: five start at once on two cores, each importing Airflow
GONE = 2  # seconds for a killed VM's processes to be gone


@pytest.fixture(scope="module")
def celery_env(tmp_path_factory) -> Path:
    """Broker and result backend for the workers (they inherit this process's environment)."""
    with redis_database(BROKER_DB) as broker:
        yield from _worker_environment(broker, tmp_path_factory)


def _worker_environment(broker: str, tmp_path_factory) -> Iterator[Path]:
    env = {
        "AIRFLOW__CELERY__BROKER_URL": broker,
        # Redis rather than a database backend: five workers creating the same result tables at once
        # in one SQLite file can fail with "table already exists".
        "AIRFLOW__CELERY__RESULT_BACKEND": broker,
        # VMs without concurrency metadata get Airflow's setting: 1, not 16 processes on two cores.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield tmp_path_factory.mktemp("emulated-workers")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def celery_app(celery_env: Path):
    from airflow.providers.celery.executors.celery_executor_utils import _get_celery_app

    app = _get_celery_app()  # built now, from the broker set above
    yield app
    app.close()


@pytest.fixture(scope="module")
def emulator(celery_env: Path):
    emulator = ComputeEngineEmulator(config=FAST, workers=WorkerOptions(log_dir=celery_env / "vm-logs"))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def control(emulator: ComputeEngineEmulator) -> EmulatorControl:
    return EmulatorControl(emulator.url)


def _vm(
    name: str, queues: list[str], concurrency: int | None = None, **scheduling: str
) -> compute_v1.Instance:
    items = [compute_v1.Items(key=i["key"], value=i["value"]) for i in metadata_items(queues, concurrency)]
    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{ZONE}/machineTypes/e2-standard-2",
        metadata=compute_v1.Metadata(items=items if queues else []),
        scheduling=compute_v1.Scheduling(**scheduling) if scheduling else None,
    )


def _pool_group(emulator: ComputeEngineEmulator) -> None:
    properties = {
        "machineType": "e2-standard-2",
        "metadata": {"items": metadata_items(["q-pool"], 1)},
    }
    templates = compute_client(compute_v1.InstanceTemplatesClient, emulator.url)
    template = compute_v1.InstanceTemplate(
        name="wk-pool-template",
        properties=compute_v1.InstanceProperties.from_json(json.dumps(properties)),
    )
    templates.insert(project=PROJECT, instance_template_resource=template).result(timeout=30)
    groups = compute_client(compute_v1.InstanceGroupManagersClient, emulator.url)
    group = compute_v1.InstanceGroupManager(
        name="wk-pool",
        base_instance_name="wk-pool",
        instance_template="global/instanceTemplates/wk-pool-template",
        target_size=1,
    )
    groups.insert(project=PROJECT, zone=ZONE, instance_group_manager_resource=group).result(timeout=30)


@pytest.fixture(scope="module")
def instances(emulator: ComputeEngineEmulator):
    """The module's VMs, all booted at once; returns the real InstancesClient."""
    client = compute_client(compute_v1.InstancesClient, emulator.url)
    vms = [
        _vm("wk-main", ["q-main"], 2),
        _vm("wk-stop", ["q-stop"]),
        _vm("wk-spot", ["q-spot"], 1, provisioning_model="SPOT"),
        _vm("wk-spot-del", ["q-spot"], 1, provisioning_model="SPOT", instance_termination_action="DELETE"),
        _vm("wk-idle", []),
    ]
    operations = [client.insert(project=PROJECT, zone=ZONE, instance_resource=vm) for vm in vms]
    _pool_group(emulator)
    for operation in operations:
        operation.result(timeout=30)
    return client


def _worker(control: EmulatorControl, instance: str) -> dict[str, Any] | None:
    return next((w for w in control.workers()["workers"] if w["instance"] == instance), None)


def _kill(control: EmulatorControl, instance: str) -> dict[str, Any] | None:
    return next((k for k in control.workers()["kills"] if k["instance"] == instance), None)


def _active_queues(app, instance: str) -> list[str] | None:
    answer = app.control.inspect(destination=[f"celery@{instance}"], timeout=1).active_queues() or {}
    queues = answer.get(f"celery@{instance}")
    return sorted(q["name"] for q in queues) if queues is not None else None


def _max_concurrency(app, instance: str) -> int:
    stats = app.control.inspect(destination=[f"celery@{instance}"], timeout=2).stats() or {}
    return stats[f"celery@{instance}"]["pool"]["max-concurrency"]


def _answers_ping(app, instance: str) -> bool:
    node = f"celery@{instance}"
    return any(node in reply for reply in app.control.ping(destination=[node], timeout=0.5))


def test_hostname_callable_gives_the_vm_name_in_each_form(monkeypatch):
    from airflow.utils.net import get_hostname

    boot = {"project": "p1", "zone": "us-central1-a", "name": "vm-1", "networkIP": "10.128.0.7"}
    expected = {"fqdn": "vm-1.us-central1-a.c.p1.internal", "short": "vm-1", "ip": "10.128.0.7"}
    monkeypatch.setenv("AIRFLOW__CORE__HOSTNAME_CALLABLE", CALLABLE)
    for form, name in expected.items():
        monkeypatch.setenv(ENV_VAR, boot_hostname(form, boot))
        assert get_hostname() == name, form  # what Airflow records as a task instance's hostname


def test_killing_a_vm_reaches_processes_that_left_its_process_group():
    # Airflow runs each task in a process group of its own: killpg of the worker's group misses it.
    code = (
        "import subprocess, time; subprocess.Popen(['sleep', '60'], process_group=0);"
        "print('ready', flush=True); time.sleep(60)"
    )
    vm = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    try:
        assert vm.stdout.readline().strip() == "ready"
        assert len(session_members(vm.pid)) == 2
        kill_session(vm.pid)
        vm.wait(timeout=5)
        eventually(lambda: not session_members(vm.pid), timeout=GONE)
    finally:
        kill_session(vm.pid)
        vm.stdout.close()


def test_bad_worker_options_are_one_clear_error(capsys, tmp_path: Path):
    from airflow_predictive.cli import main

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    for bad, flag in (
        (["--worker-hostname", "short"], "--worker-hostname"),
        (["--worker-log-dir", str(tmp_path)], "--worker-log-dir"),
        (["--workers", "--worker-log-dir", str(not_a_folder)], "--worker-log-dir"),
    ):
        assert main(["gce-emulator", "--port", "0", *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith(f"gce-emulator: {flag}") and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main(["gce-emulator", "--port", "0", "--workers", "--worker-hostname", "dns"])
    assert "--worker-hostname" in capsys.readouterr().err
    with pytest.raises(ValueError, match="hostname form 'dns'"):
        ComputeEngineEmulator(workers={"hostname_form": "dns"})


def test_vm_runs_a_worker_on_the_queues_and_slots_of_its_metadata(instances, control, celery_app):
    eventually(lambda: _answers_ping(celery_app, "wk-main"), timeout=STARTUP, interval=0)
    assert _active_queues(celery_app, "wk-main") == ["q-main"]
    assert _max_concurrency(celery_app, "wk-main") == 2
    worker = _worker(control, "wk-main")
    assert worker is not None
    fqdn = f"wk-main.{ZONE}.c.{PROJECT}.internal"
    assert {
        k: worker[k] for k in ("project", "zone", "queues", "concurrency", "hostname", "celery_hostname")
    } == {
        "project": PROJECT,
        "zone": ZONE,
        "queues": ["q-main"],
        "concurrency": 2,
        "hostname": fqdn,
        "celery_hostname": "celery@wk-main",
    }
    environ = Path(f"/proc/{worker['pid']}/environ").read_bytes().split(b"\0")
    assert f"{ENV_VAR}={fqdn}".encode() in environ
    assert f"AIRFLOW__CORE__HOSTNAME_CALLABLE={CALLABLE}".encode() in environ
    assert "celery@wk-main" in Path(worker["log"]).read_text()


def test_without_concurrency_metadata_the_worker_has_airflows_setting(instances, control, celery_app):
    eventually(lambda: _answers_ping(celery_app, "wk-stop"), timeout=STARTUP, interval=0)
    assert _worker(control, "wk-stop")["concurrency"] is None
    assert _max_concurrency(celery_app, "wk-stop") == 1  # AIRFLOW__CELERY__WORKER_CONCURRENCY


def test_group_members_run_the_worker_their_template_describes(instances, control, celery_app):
    def member() -> dict[str, Any] | None:
        return next((w for w in control.workers()["workers"] if w["instance"].startswith("wk-pool-")), None)

    name = eventually(member, timeout=10)["instance"]
    assert eventually(lambda: _active_queues(celery_app, name), timeout=STARTUP, interval=0) == ["q-pool"]


def test_vm_without_queue_metadata_runs_no_worker(instances, control):
    eventually(lambda: any(s["instance"] == "wk-idle" for s in control.workers()["skipped"]), timeout=10)
    assert _worker(control, "wk-idle") is None


def test_deleting_the_vm_kills_its_worker_at_once(emulator, instances, control, celery_app):
    eventually(lambda: _answers_ping(celery_app, "wk-main"), timeout=STARTUP, interval=0)
    pid = _worker(control, "wk-main")["pid"]
    assert len(session_members(pid)) >= 3  # the init, the worker and its helpers
    emulator.state.configure({"stop_seconds": 30})  # the VM stays STOPPING: the kill must not wait for it
    try:
        instances.delete(project=PROJECT, zone=ZONE, instance="wk-main")
        eventually(lambda: not session_members(pid), timeout=GONE)
    finally:
        emulator.state.configure({"stop_seconds": FAST["stop_seconds"]})
    assert _kill(control, "wk-main")["reason"] == "deleted"
    assert _worker(control, "wk-main") is None


def test_stopping_kills_the_worker_and_starting_boots_a_new_one(instances, control):
    first = eventually(lambda: _worker(control, "wk-stop"), timeout=10)
    instances.stop(project=PROJECT, zone=ZONE, instance="wk-stop").result(timeout=30)
    eventually(lambda: not session_members(first["pid"]), timeout=GONE)
    assert _kill(control, "wk-stop")["reason"] == "stopped"
    instances.start(project=PROJECT, zone=ZONE, instance="wk-stop").result(timeout=30)
    second = eventually(lambda: _worker(control, "wk-stop"), timeout=10)
    assert second["pid"] != first["pid"] and session_members(second["pid"])


def test_a_vm_restarted_between_two_looks_gets_a_new_worker(emulator, instances, control):
    first = eventually(lambda: _worker(control, "wk-stop"), timeout=10)
    state = emulator.state
    # Holding the state's lock, stop and start the VM with no boot or stop time: the fleet only ever
    # sees it RUNNING, before and after; only the boot generation tells the new boot from the old.
    with state._cond:
        state.configure({"boot_seconds": 0, "stop_seconds": 0})
        state.stop_instance(PROJECT, ZONE, "wk-stop")
        state.start_instance(PROJECT, ZONE, "wk-stop")
        assert state.get(f"projects/{PROJECT}/zones/{ZONE}/instances/wk-stop")["status"] == "RUNNING"
        state.configure({k: FAST[k] for k in ("boot_seconds", "stop_seconds")})
    eventually(lambda: not session_members(first["pid"]), timeout=GONE)
    assert [k["reason"] for k in control.workers()["kills"] if k["instance"] == "wk-stop"][-1] == "restarted"
    second = eventually(lambda: _worker(control, "wk-stop"), timeout=10)
    assert second["pid"] != first["pid"]


def test_preempting_a_spot_vm_kills_its_worker(instances, control):
    spots = ("wk-spot", "wk-spot-del")  # the second is deleted by its preemption
    pids = [eventually(lambda name=name: _worker(control, name), timeout=10)["pid"] for name in spots]
    for name in spots:
        control.preempt(name, zone=ZONE, project=PROJECT)
    eventually(lambda: not any(session_members(pid) for pid in pids), timeout=GONE)
    assert [_kill(control, name)["reason"] for name in spots] == ["preempted", "preempted"]
    assert control.workers()["killed"]["preempted"] == 2


def test_closing_the_emulator_kills_every_worker(emulator, instances, control):
    workers = eventually(lambda: control.workers()["workers"], timeout=10)
    pids = [w["pid"] for w in workers]
    assert all(session_members(pid) for pid in pids)
    emulator.stop()
    eventually(lambda: not any(session_members(pid) for pid in pids), timeout=GONE)
    closed = {k["instance"] for k in emulator.fleet.view()["kills"] if k["reason"] == "closed"}
    assert closed == {w["instance"] for w in workers}


def test_workers_die_with_a_sigkilled_emulator(celery_env: Path, celery_app):
    command = [sys.executable, "-m", "airflow_predictive.cli", "gce-emulator", "--port", "0", "--workers"]
    command += ["--boot-seconds", "0.2", "--worker-log-dir", str(celery_env / "cli-logs")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    session = None
    try:
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        control = EmulatorControl(line.split("listening on ", 1)[1].strip().removesuffix("/compute/v1"))
        vm = {
            "name": "wk-cli",
            "machineType": "e2-standard-2",
            "metadata": {"items": metadata_items(["q-cli"], 1)},
        }
        control.seed(project=PROJECT, zone=ZONE, instances=[vm])
        session = eventually(lambda: _worker(control, "wk-cli"), timeout=10)["pid"]
        eventually(lambda: _answers_ping(celery_app, "wk-cli"), timeout=STARTUP, interval=0)
        os.kill(process.pid, signal.SIGKILL)  # no cleanup code of the emulator can run
        process.wait(timeout=10)
        eventually(lambda: not session_members(session), timeout=GONE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if session is not None:
            kill_session(session)
        process.stdout.close()

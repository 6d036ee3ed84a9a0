"""State file persistence, the ``gce-emulator`` command, the catalogue and the filter language."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow_predictive_tools.emulator.filter import FilterError, matches
from airflow_predictive_tools.emulator.machine_types import max_egress_gbps
from airflow_predictive_tools.emulator.server import (
    ComputeEngineEmulator,
    EmulatorControl,
    compute_client,
    running_emulator,
)
from google.cloud import compute_v1

from tests.gce.conftest import FAST, PROJECT, ZONE, eventually


def test_state_file_survives_a_restart(tmp_path: Path):
    state_file = tmp_path / "gce.json"
    with running_emulator(state_file=state_file, config=FAST) as url:
        instances = compute_client(compute_v1.InstancesClient, url)
        vm = compute_v1.Instance(
            name="kept", machine_type=f"zones/{ZONE}/machineTypes/e2-standard-4", labels={"pool": "etl"}
        )
        request = compute_v1.InsertInstanceRequest(
            project=PROJECT, zone=ZONE, instance_resource=vm, request_id="rid-1"
        )
        first = instances.insert(request=request)
        first.result(timeout=20)
        EmulatorControl(url).set_quota("us-central1", "CPUS", 10)
    saved = json.loads(state_file.read_text())
    assert any(path.endswith("/instances/kept") for path in saved["resources"])
    assert not list(tmp_path.glob(".gce.json.*")), "temporary files are renamed into place"
    with running_emulator(state_file=state_file) as url:
        instances = compute_client(compute_v1.InstancesClient, url)
        kept = instances.get(project=PROJECT, zone=ZONE, instance="kept")
        assert (kept.status, dict(kept.labels)) == ("RUNNING", {"pool": "etl"})
        assert instances.insert(request=request).name == first.name
        limits = {
            q.metric: q.limit
            for q in compute_client(compute_v1.RegionsClient, url)
            .get(project=PROJECT, region="us-central1")
            .quotas
        }
        assert limits["CPUS"] == 10


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path):
    state_file = tmp_path / "gce.json"
    state_file.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ComputeEngineEmulator(state_file=state_file)


def test_emulator_refuses_non_loopback_hosts():
    with pytest.raises(ValueError, match="loopback"):
        ComputeEngineEmulator(host="0.0.0.0")


def test_cli_serves_the_api_until_terminated(tmp_path: Path):
    state_file = tmp_path / "cli-state.json"
    command = [
        sys.executable,
        "-m",
        "airflow_predictive.cli",
        "gce-emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    command += ["--state", str(state_file), "--boot-seconds", "0.2", "--quota", "CPUS=16"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (
            process.stderr.read() if process.poll() is not None else line
        )
        url = line.split("listening on ", 1)[1].strip().removesuffix("/compute/v1")
        control = EmulatorControl(url)
        assert control.health()
        control.seed(
            project=PROJECT, zone=ZONE, instances=[{"name": "cli-vm", "machineType": "e2-standard-2"}]
        )
        instances = compute_client(compute_v1.InstancesClient, url)
        assert [i.name for i in instances.list(project=PROJECT, zone=ZONE)] == ["cli-vm"]
        assert control.state()["defaultQuotas"]["CPUS"] == 16
    finally:
        process.terminate()  # by PID
        code = process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()
    assert code == 0
    assert "cli-vm" in state_file.read_text()


def test_cli_rejects_bad_arguments(capsys):
    from airflow_predictive.cli import main

    for bad in (["--host", "0.0.0.0"], ["--quota", "GPUS=1"], ["--quota", "CPUS=lots"], ["--port", "70000"]):
        assert main(["gce-emulator", "--port", "0", *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("gce-emulator: ") and len(err.strip().splitlines()) == 1, err


def test_machine_type_catalogue_through_the_client(gce_emulator_url: str):
    types = compute_client(compute_v1.MachineTypesClient, gce_emulator_url)
    names = {m.name for m in types.list(project=PROJECT, zone=ZONE)}
    expected = {f"e2-standard-{n}" for n in (2, 4, 8, 16, 32)} | {
        "e2-medium",
        "n2-highmem-8",
        "c2-standard-60",
        "n2-standard-32",
    }
    assert expected <= names
    n2 = types.get(project=PROJECT, zone=ZONE, machine_type="n2-highmem-8")
    assert (n2.guest_cpus, n2.memory_mb, n2.is_shared_cpu) == (8, 65536, False)
    request = compute_v1.ListMachineTypesRequest(project=PROJECT, zone=ZONE, filter="guestCpus >= 64")
    assert all(m.guest_cpus >= 64 for m in types.list(request=request))


def test_egress_bandwidth_follows_googles_rule():
    assert max_egress_gbps("e2-standard-4") == 8
    assert max_egress_gbps("e2-standard-16") == 16
    assert max_egress_gbps("e2-standard-32") == 16
    assert max_egress_gbps("e2-medium") == 2
    assert max_egress_gbps("n2-standard-8") == 16
    assert max_egress_gbps("n2-standard-32") == 32
    assert max_egress_gbps("n2-standard-32", tier="TIER_1") == 50
    assert max_egress_gbps("n2-standard-64", tier="TIER_1") == 100
    assert max_egress_gbps("e2-standard-32", tier="TIER_1") == 16
    assert max_egress_gbps("zones/z/machineTypes/n2-custom-6-24576", guest_cpus=6) == 12
    with pytest.raises(ValueError, match="guest_cpus"):
        max_egress_gbps("n2-custom-6-24576")


def test_filter_language():
    vm = {
        "name": "etl-7",
        "status": "RUNNING",
        "labels": {"pool": "etl"},
        "scheduling": {"preemptible": False},
    }
    assert matches(vm, "labels.pool = etl AND status != TERMINATED")
    assert matches(vm, "(labels.pool = ml) OR (name eq 'etl-[0-9]+')")
    assert matches(vm, "NOT labels.team:*")
    assert matches(vm, "scheduling.preemptible = false")
    assert not matches(vm, "labels.pool = ml")
    with pytest.raises(FilterError):
        matches(vm, "(labels.pool = etl")


def test_wait_returns_at_its_deadline_with_the_operation_still_running(gce_emulator, client):
    gce_emulator.state.configure({"boot_seconds": 30, "wait_timeout_seconds": 0.3})
    instances = client(compute_v1.InstancesClient)
    vm = compute_v1.Instance(name="slow", machine_type=f"zones/{ZONE}/machineTypes/e2-standard-2")
    operation = instances.insert(project=PROJECT, zone=ZONE, instance_resource=vm)
    waited = client(compute_v1.ZoneOperationsClient).wait(
        project=PROJECT, zone=ZONE, operation=operation.name
    )
    assert waited.status == compute_v1.Operation.Status.RUNNING
    eventually(lambda: instances.get(project=PROJECT, zone=ZONE, instance="slow").status == "PROVISIONING")


def test_finished_operations_are_pruned_oldest_first(monkeypatch):
    from airflow_predictive_tools.emulator import state as emulator_state

    monkeypatch.setattr(emulator_state, "MAX_OPERATIONS", 3)
    state = emulator_state.ComputeEngineState(config={"operation_seconds": 0})
    for index in range(5):
        state.insert_disk(PROJECT, ZONE, {"name": f"d{index}", "sizeGb": 10}, request_id=f"r{index}")
    assert len(state.list(f"projects/{PROJECT}/zones/{ZONE}/operations", operations=True)) == 3
    assert len(state.list(f"projects/{PROJECT}/zones/{ZONE}/disks")) == 5
    again = state.insert_disk(PROJECT, ZONE, {"name": "d4", "sizeGb": 10}, request_id="r4")
    assert again["targetLink"].endswith("/disks/d4") and "error" not in again

"""GceAllocatorHook connection conventions and PreemptiveAllocateOperator under `airflow dags test`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml
from airflow_predictive_tools.emulator.server import running_emulator

from airflow_predictive.gce.compute import ComputeEngineError
from airflow_predictive.hooks.gce_allocator import GceAllocatorHook
from airflow_predictive.store import ProfileStore
from tests.airflow_harness import airflow_cli
from tests.allocation.conftest import forecast_frame


def test_hook_reads_predictive_gce_extras_and_reaches_the_emulator(monkeypatch):
    with running_emulator() as url:
        extra = {"project": "demo-project", "zone": "us-central1-a", "emulator_url": url}
        monkeypatch.setenv(
            "AIRFLOW_CONN_GCE_TEST", json.dumps({"conn_type": "predictive_gce", "extra": extra})
        )
        hook = GceAllocatorHook("gce_test")
        engine = hook.get_engine()
        assert (engine.project, engine.zone, engine.endpoint) == ("demo-project", "us-central1-a", url)
        assert engine.machine_type("n2-standard-8").vcpus == 8
        assert hook.test_connection()[0]


def test_hook_accepts_google_cloud_platform_conventions_and_never_shows_the_key(monkeypatch, tmp_path):
    secret = "-----BEGIN PRIVATE KEY-----not-a-real-key"
    key = tmp_path / "sa.json"
    key.write_text(json.dumps({"type": "service_account", "private_key": secret}))
    extra = {
        "extra__google_cloud_platform__project": "demo-project",
        "extra__google_cloud_platform__key_path": str(key),
        "zone": "us-central1-a",
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_GCP_TEST", json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
    )
    monkeypatch.delenv("AIRFLOW__PREDICTIVE__EMULATOR_URL", raising=False)
    hook = GceAllocatorHook("gcp_test")
    with pytest.raises(ComputeEngineError) as info:
        hook.get_engine()
    assert str(key) in str(info.value) and secret not in str(info.value)


def test_operator_applies_a_plan_to_the_emulator_under_airflow_dags_test(airflow_db, tmp_path):
    pools_file = tmp_path / "pools.yaml"
    pool = {
        "project": "demo-project",
        "zone": "us-central1-a",
        "machine_type": "n2-standard-8",
        "max_instances": 10,
        "spot": {"mode": "none"},
        "mode": "forecast_and_scale",
    }
    pools_file.write_text(yaml.safe_dump({"pools": {"etl": pool}}))
    store_path = tmp_path / "profile.db"
    store = ProfileStore.sqlite(store_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    store.write_forecasts(forecast_frame("etl", {"cpu": [20] * 24}, start=now))  # q0.9 = 24 vCPU -> 3 VMs
    with running_emulator(config={"boot_seconds": 0.1}) as url:
        env = {
            "AIRFLOW_HOME": str(airflow_db),
            "AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path),
            "AIRFLOW__PREDICTIVE__POOLS_FILE": str(pools_file),
            "AIRFLOW__PREDICTIVE__EMULATOR_URL": url,
        }
        airflow_cli("dags", "test", "allocate_emulator", env=env, timeout=300)
        from airflow_predictive.contracts.pools import load_pools
        from airflow_predictive.gce.compute import ComputeEngine

        etl = load_pools(pools_file)["etl"]
        live = ComputeEngine("demo-project", "us-central1-a", endpoint=url).pool_state(etl).live()
    assert len(live) == 3
    ledger = store.actions(pool="etl")
    assert list(ledger["status"]) == ["applied"] and "forecast at now+3 min" in ledger["reason"].iloc[0]
    store.dispose()

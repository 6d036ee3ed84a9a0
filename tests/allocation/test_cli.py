"""`airflow-predictive plan`: a preview by default whatever the pool's mode (nothing applied, nothing
recorded), --record records a dry run, --apply applies; bad input exits 2; connections are found where
Airflow's CLI finds them and warnings never mix into the JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from airflow_predictive_tools.emulator.server import running_emulator

from airflow_predictive.cli import main
from airflow_predictive.contracts.pools import load_pools
from airflow_predictive.gce.compute import ComputeEngine
from airflow_predictive.store import ProfileStore
from tests.airflow_harness import airflow_cli
from tests.allocation.conftest import forecast_frame


def test_plan_prints_reasons_changes_and_records_nothing_without_apply_and_applies_with_it(
    tmp_path, monkeypatch, capsys
):
    pools_file = tmp_path / "pools.yaml"
    pool = {
        "project": "demo-project",
        "zone": "us-central1-a",
        "machine_type": "n2-standard-8",
        "spot": {"mode": "none"},
        "mode": "forecast_and_scale",
    }
    pools_file.write_text(yaml.safe_dump({"pools": {"etl": pool}}))
    store_path = tmp_path / "profile.db"
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__STORE_PATH", str(store_path))
    store = ProfileStore.sqlite(store_path)
    from datetime import UTC, datetime

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    store.write_forecasts(forecast_frame("etl", {"cpu": [20] * 24}, start=now))
    etl = load_pools(pools_file)["etl"]
    with running_emulator(config={"boot_seconds": 0.1}) as url:
        engine = ComputeEngine(etl.project, etl.zone, endpoint=url)
        args = ["plan", "--pools-file", str(pools_file), "--emulator-url", url, "--busy-host", "none"]
        assert main(args) == 0
        table = capsys.readouterr().out
        assert (
            "PREVIEW (nothing changed, nothing recorded)" in table
            and "launch_instances" in table
            and "forecast at now+3 min" in table
        )
        assert not engine.pool_state(etl).live()
        # Issue #20: the README says plan changes nothing; the UI's ledger must not show a preview.
        assert store.actions(pool="etl").empty and store.plans(pool="etl").empty
        assert store.capacity(pool="etl").empty
        assert main([*args, "--record"]) == 0
        assert "DRY RUN (nothing changed)" in capsys.readouterr().out
        assert set(store.actions(pool="etl")["status"]) == {"dry_run"}
        assert not engine.pool_state(etl).live()
        assert main([*args, "--apply", "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert payload[0]["actions"][0]["status"] == "applied" and payload[0]["outcome"]["applied"] == 1
        assert len(engine.pool_state(etl).live()) == 3
    # within one 5-minute cycle the dry run's ledger row (same request id) becomes the applied one;
    # across a cycle boundary both rows remain, the dry run still marked dry_run
    statuses = list(store.actions(pool="etl")["status"])
    assert statuses.count("applied") == 1 and set(statuses) <= {"dry_run", "applied"}
    store.dispose()


def test_plan_with_an_invalid_pools_file_exits_2_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "pools.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "pools": {
                    "etl": {
                        "project": "demo-project",
                        "zone": "us-central1-a",
                        "machine_type": "n2-standard-8",
                        "min_instances": 9,
                        "max_instances": 3,
                    }
                }
            }
        )
    )
    assert main(["plan", "--pools-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: pools.etl: min_instances (9) > max_instances (3)" in err


def test_plan_finds_a_connection_made_with_airflow_connections_add_and_keeps_stdout_json(tmp_path):
    """Issue #20: `plan` missed metastore connections and printed its warning into `--json` output."""
    bin_dir = Path(sys.executable).parent
    home = tmp_path / "airflow"
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    airflow_cli("db", "migrate", env=env)
    # An API server that is not there: the allocator must try it (found the connection), then say so.
    airflow_cli(
        "connections", "add", "predictive_airflow_api_default", "--conn-type", "predictive_airflow_api",
        "--conn-host", "http://127.0.0.1:9", "--conn-login", "profiler", "--conn-password", "s3cret-value",
        env=env,
    )  # fmt: skip
    pools_file = tmp_path / "pools.yaml"
    pool = {"project": "demo-project", "zone": "us-central1-a", "machine_type": "n2-standard-8"}
    pools_file.write_text(yaml.safe_dump({"pools": {"etl": pool}}))
    with running_emulator(config={"boot_seconds": 0.1}) as url:
        proc = subprocess.run(
            [str(bin_dir / "airflow-predictive"), "plan", "--json", "--pools-file", str(pools_file)]
            + ["--emulator-url", url],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)  # nothing but the result on stdout
    assert payload[0]["pool"] == "etl" and payload[0]["recorded"] is False
    assert "running task instances unknown" in proc.stderr
    assert "is not defined" not in proc.stderr and "127.0.0.1:9" in proc.stderr
    assert "s3cret-value" not in proc.stderr + proc.stdout

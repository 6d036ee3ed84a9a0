"""`airflow-predictive plan`: a dry run by default whatever the pool's mode, --apply applies, bad input exits 2."""

from __future__ import annotations

import json

import yaml
from airflow_predictive_tools.emulator.server import running_emulator

from airflow_predictive.cli import main
from airflow_predictive.contracts.pools import load_pools
from airflow_predictive.gce.compute import ComputeEngine
from airflow_predictive.store import ProfileStore
from tests.allocation.conftest import forecast_frame


def test_plan_prints_reasons_changes_nothing_without_apply_and_applies_with_it(tmp_path, monkeypatch, capsys):
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
            "DRY RUN (nothing changed)" in table
            and "launch_instances" in table
            and "forecast at now+3 min" in table
        )
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

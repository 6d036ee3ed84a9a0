"""The control loop on a real cluster: PostgreSQL metadata and store, CeleryExecutor, two workers.

Starts PostgreSQL and Redis on 127.0.0.1 (tests/services.py), an Airflow (api-server, scheduler,
dag-processor) with CeleryExecutor and two Celery workers, seeds 200 demand series (50 pools) in a
steady state, runs ``predictive_scaling`` once and checks forecasts, plans and ledger, that the
mapped forecast tasks ran on both workers, and that evaluation ran mapped over the same chunks. Every process started here is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow_predictive_tools.bench.scaleout_seed import pool_names, pools_yaml, seed_steady_state

from airflow_predictive.runtime.feedback_cycle import WATERMARK
from tests.airflow_harness import AirflowDeployment, free_port
from tests.services import postgres_database, redis_database

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "predictive_scaling"
SERIES = 200
CHUNK = 40
SCALE_POOLS = ["scale-0000", "scale-0001"]
BROKER_DB = 7

pytestmark = [pytest.mark.celery, pytest.mark.integration]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Seeded store, emulator, Airflow with CeleryExecutor and workers worker-a and worker-b."""
    from airflow_predictive_tools.emulator.server import running_emulator

    from airflow_predictive.store import ProfileStore

    home = tmp_path_factory.mktemp("scaleout")
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(redis_database(BROKER_DB))
        meta_url = stack.enter_context(postgres_database("predictive_meta"))
        store_url = stack.enter_context(postgres_database("predictive_store"))
        emulator_url = stack.enter_context(running_emulator(config={"boot_seconds": 1.0}))

        now = datetime.now(UTC).replace(second=0, microsecond=0)
        end = now - timedelta(minutes=now.minute % 5)
        store = ProfileStore(store_url)
        stack.callback(store.dispose)
        ids = seed_steady_state(store, SERIES, end=end, days=4)
        pools = pool_names(SERIES)
        pools_file = home / "pools.yaml"
        pools_file.write_text(pools_yaml(pools, scale=SCALE_POOLS))

        store_conn = {"conn_type": "predictive_store", "extra": {"sqlalchemy_url": store_url}}
        env = {
            "PYTHONPATH": str(REPO),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.scaleout.worker_name.hostname",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url.replace("+psycopg2", ""),
            "AIRFLOW__PREDICTIVE__STORE_CONN_ID": "predictive_store_default",
            "AIRFLOW_CONN_PREDICTIVE_STORE_DEFAULT": json.dumps(store_conn),
            "AIRFLOW__PREDICTIVE__POOLS_FILE": str(pools_file),
            "AIRFLOW__PREDICTIVE__EMULATOR_URL": emulator_url,
            "AIRFLOW__PREDICTIVE__SERIES_PER_CHUNK": str(CHUNK),
        }
        airflow = stack.enter_context(
            AirflowDeployment(
                home / "airflow",
                REPO / "dags",
                components=("api-server", "scheduler", "dag-processor"),
                executor="CeleryExecutor",
                parallelism=8,
                env=env,
                sql_alchemy_conn=meta_url,
            )
        )
        airflow.env["AIRFLOW_CONN_PREDICTIVE_AIRFLOW_API_DEFAULT"] = airflow.api_connection()
        for name in ("worker-a", "worker-b"):
            airflow.start_component(
                "celery worker",
                "--concurrency",
                "1",
                "--celery-hostname",
                f"{name}@%h",
                name=name,
                env={
                    "PREDICTIVE_WORKER_NAME": name,
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                },
            )
        airflow.wait_for_dag(DAG_ID, timeout=180)
        yield {"airflow": airflow, "store": store, "ids": ids, "pools": pools}


def _first_run(airflow, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    with airflow.client() as client:
        while time.monotonic() < deadline:
            response = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns")
            response.raise_for_status()
            runs = response.json()["dag_runs"]
            if runs:
                return min(runs, key=lambda run: run["run_after"])
            time.sleep(2)
    raise AssertionError(
        f"the scheduler created no {DAG_ID} run in {timeout}s\n{airflow.log_tail('scheduler')}"
    )


def test_control_loop_fans_out_over_two_celery_workers(cluster) -> None:
    airflow, store, ids = cluster["airflow"], cluster["store"], cluster["ids"]
    # The DAG is unpaused at creation, so the scheduler starts the cycle on its own schedule, as in
    # production (max_active_runs=1: a manual trigger would only queue behind it).
    run = _first_run(airflow)
    run_id = run["dag_run_id"]
    started = datetime.fromisoformat((run["queued_at"] or run["run_after"]).replace("Z", "+00:00"))
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=240)
    with airflow.client() as client:
        response = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        response.raise_for_status()
        tis = response.json()["task_instances"]
    summary = {(t["task_id"], t["map_index"]): (t["state"], t["hostname"]) for t in tis}
    logs = "\n".join(airflow.log_tail(n, 3000) for n in ("worker-a", "worker-b", "scheduler"))
    assert state == "success", f"run ended {state}: {summary}\n{logs}"

    # Five mapped forecast tasks (200 series / 40 per chunk), spread over both workers.
    forecast = [t for t in tis if t["task_id"] == "forecast"]
    assert sorted(t["map_index"] for t in forecast) == list(range(SERIES // CHUNK))
    assert all(t["state"] == "success" for t in forecast), summary
    assert {t["hostname"] for t in forecast} == {"worker-a", "worker-b"}, summary

    # Allocation is mapped over chunks of pools ([predictive] pools_per_chunk).
    allocate = [t for t in tis if t["task_id"] == "allocate"]
    assert allocate and all(t["state"] == "success" and t["map_index"] >= 0 for t in allocate), summary

    # Evaluation is mapped over the same chunks (each scores its own series), then closed once.
    evaluate = [t for t in tis if t["task_id"] == "evaluate"]
    assert sorted(t["map_index"] for t in evaluate) == list(range(SERIES // CHUNK))
    assert all(t["state"] == "success" for t in evaluate), summary
    assert summary[("close_evaluation", -1)][0] == "success", summary
    assert store.get_watermark(WATERMARK) is not None  # the close moved the scored window on

    # Every seeded series of the configured pools has one newest forecast, all from this run's origin.
    latest = store.latest_forecasts()
    assert sorted(latest["series_id"].unique()) == sorted(ids)
    per_series = latest.groupby("series_id")["issued_at"].nunique()
    assert (per_series == 1).all()
    assert latest["issued_at"].nunique() == 1
    issued = latest["issued_at"].iloc[0]
    assert started - timedelta(minutes=1) <= issued.to_pydatetime() <= datetime.now(UTC)
    assert len(latest) == len(ids) * 288  # 24 h horizon at 5-minute buckets
    assert latest[["mean", "q0.5", "q0.9", "q0.99"]].notna().all().all()
    assert (latest["q0.99"] >= latest["q0.5"] - 1e-9).all()
    # The warm path ran in the workers: a share of the states was re-estimated this cycle.
    states = store.model_states(ids)
    assert len(states) == len(ids)
    assert any(row["fitted_at"] >= started - timedelta(minutes=1) for row in states.values())

    # One plan per configured pool; no action left half-done in the ledger.
    plans = store.plans(since=started - timedelta(minutes=1))
    assert sorted(plans["pool"].unique()) == sorted(cluster["pools"])
    assert set(plans.loc[plans["pool"].isin(SCALE_POOLS), "mode"]) == {"forecast_and_scale"}
    actions = store.actions(since=started - timedelta(minutes=1))
    assert set(actions["status"]) <= {"applied", "dry_run"}, actions[["pool", "kind", "status", "error"]]
    assert set(actions["plan_id"]) <= set(plans["plan_id"])
    applied = actions[actions["status"] == "applied"]
    assert set(applied["pool"]) <= set(SCALE_POOLS)

"""Issue #21, done when: a scheduled fan-out of 30 one-minute I/O waits gets instances for its slots.

A real api-server and dag-processor parse ``slots_dags``: a daily DAG whose task is mapped 30 wide
over a literal list, each instance sleeping 60 s on queue ``io-pool``. The fan-out is known before the
run from the task's workflow template (``io_fanout``, stage ``wait``, parallelism 30): what a DAG author
writes for a new DAG, which has no history yet. No scheduler runs, so the DAG never runs; ``now`` is
put a few minutes before its next run (read from Airflow, so the test does not depend on the clock).

At that ``now`` the control loop's own path runs: the forecast cycle with known work fetched from the
real ``/predictive/api/upcoming`` endpoint (``forecast_with_known_work`` + ``fetch_upcoming``, as the
DemandForecastOperator does, residual combination, the default 5-minute buckets), then the allocation cycle
(``run_cycle``) through the real google-cloud-compute client against the local Compute Engine
emulator for pool ``io-pool`` (n2-standard-2, 4 slots per instance, ``forecast_and_scale``, default
planning interval). The run's 30 slots need 8 instances; its CPU, memory and network alone fit on one.
A slot bucket holds its peak, so a one-minute fan-out needs its whole width in a five-minute bucket.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from airflow_predictive_tools.emulator.server import running_emulator

from airflow_predictive.airflow_api.client import AirflowApiClient, fetch_upcoming
from airflow_predictive.contracts.capacity import PoolState
from airflow_predictive.contracts.demand import RESOURCES, series_id
from airflow_predictive.contracts.plan import ActionKind
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.forecasting.engine import Forecaster
from airflow_predictive.gce.compute import ComputeEngine, RetryPolicy
from airflow_predictive.planning.planner import plan
from airflow_predictive.runtime.allocation_cycle import run_cycle
from airflow_predictive.runtime.known_work import forecast_with_known_work
from airflow_predictive.store import ProfileStore
from tests.airflow_harness import AirflowDeployment

HERE = Path(__file__).resolve().parent
DAG_ID = "slots_io_fanout"
POOL = "io-pool"
PROJECT, ZONE = "predictive-test", "us-central1-a"
INTERVAL = timedelta(minutes=5)  # the default [predictive] interval_minutes
AHEAD = timedelta(minutes=3)  # the run starts this long after forecasting and planning: the boot lead time
SERIES = [series_id(POOL, r) for r in RESOURCES]

pytestmark = pytest.mark.integration


def next_run_after(dep: AirflowDeployment, timeout: float = 60) -> datetime:
    """The run the scheduler would create next, as the dag-processor recorded it."""
    deadline = time.monotonic() + timeout
    with dep.client() as client:
        while time.monotonic() < deadline:
            value = client.get(f"/api/v2/dags/{DAG_ID}").json().get("next_dagrun_run_after")
            if value:
                return datetime.fromisoformat(value)
            time.sleep(1)
    raise AssertionError(f"{DAG_ID} has no next run after {timeout}s")


def seed_history(store: ProfileStore, now: datetime, *, daily: bool) -> None:
    """Three days of small ad-hoc demand in the pool (5-minute buckets): a 3-hour pattern that repeats
    every day, or flat (no daily cycle: the planner falls back to the reactive rule)."""
    steps = pd.date_range(
        end=pd.Timestamp(now).floor(INTERVAL), periods=3 * 288, freq=INTERVAL, inclusive="left"
    )
    noise = np.random.default_rng(7).random(len(steps))  # no daily cycle: noise around a level
    level = (steps.hour % 3).to_numpy(float) if daily else noise
    values = {"cpu": 0.05 + 0.05 * level, "memory": 0.25 + 0.0 * level, "storage": 0.0 * level}
    values |= {"network": 0.0 * level, "slots": 1.0 + level}
    frames = [
        pd.DataFrame({"series_id": series_id(POOL, r), "ts": steps, "value": v}) for r, v in values.items()
    ]
    store.write_demand(pd.concat(frames, ignore_index=True))


def io_pool() -> CapacityPool:
    return CapacityPool(
        name=POOL,
        project=PROJECT,
        zone=ZONE,
        machine_type="n2-standard-2",
        slots_per_instance=4,
        max_instances=40,
        thresholds={"storage": 0},
        spot={"mode": "none"},
        mode="forecast_and_scale",
    )


@pytest.mark.parametrize("daily", [True, False], ids=["daily-cycle", "no-daily-cycle"])
def test_scheduled_fan_out_gets_instances_for_its_slots_before_it_starts(tmp_path, daily):
    store = ProfileStore.sqlite(tmp_path / "profile.db")
    with AirflowDeployment(
        tmp_path / "airflow",
        HERE / "slots_dags",
        components=("api-server", "dag-processor"),
        parallelism=64,  # [core] parallelism of a Celery deployment (no LocalExecutor forks: no scheduler)
    ) as dep:
        dep.wait_for_dag(DAG_ID, timeout=150)
        run_at = next_run_after(dep)
        now = run_at - AHEAD
        seed_history(store, now, daily=daily)
        with AirflowApiClient(dep.base_url, username="admin", password=dep.password) as client:
            summary = forecast_with_known_work(
                store,
                SERIES,
                now=now,
                forecaster=Forecaster(
                    interval=INTERVAL, horizon=timedelta(hours=2), history_days=3, select_workers=0
                ),
                fetch=lambda at, horizon: fetch_upcoming(client, now=at, horizon=horizon),
                max_selections=0,
            )

    assert summary["combination"] == "residual" and summary["known_work"]["status"] == "ok", summary
    assert summary["known_work"]["upcoming_runs"] == 1, summary["known_work"]
    forecast = store.latest_forecasts(pools=[POOL])
    assert set(forecast["model"]) == {"combined"}
    slots = forecast[forecast["series_id"] == series_id(POOL, "slots")].set_index("ts")
    at_start = pd.Timestamp(run_at).floor(INTERVAL)
    assert slots.loc[at_start, "mean"] >= 30.0  # 30 mapped instances x 1 slot, plus the ad-hoc level
    assert slots.loc[at_start + INTERVAL, "mean"] < 4.0  # the run's minute is over by the next bucket

    with running_emulator(
        config={"boot_seconds": 0.1, "stop_seconds": 0.05, "operation_seconds": 0.01}
    ) as url:
        engine = ComputeEngine(
            PROJECT,
            ZONE,
            endpoint=url,
            retry=RetryPolicy(attempts=8, initial_seconds=0.01, max_seconds=0.05),
            operation_timeout=30,
        )
        pool = io_pool()
        result = run_cycle(pool, store, engine, now=now, busy_hosts=[])
        assert not result.error and not result.outcome.failed, result.summary()
        launched = len(engine.pool_state(pool).live())
        spec = engine.machine_type(pool.machine_type)
    store.dispose()

    (launch,) = [a for a in result.plan.actions if a.kind is ActionKind.LAUNCH_INSTANCES]
    assert launched == launch.amount >= 8, result.summary()  # ceil(>= 30 slots / 4 per instance)
    assert "slots" in launch.reason and launch.resource == "slots", launch.reason
    # known work is provisioned under either rule: the forecast's, or the reactive fallback's
    rule = "forecast" if daily else "reactive fallback"
    assert result.plan.summary["sizing"].startswith(rule), result.plan.summary["sizing"]

    # For contrast: the same forecast and history without the slots series (cpu, memory, network,
    # storage alone) need one n2-standard-2.
    usage_only = forecast[forecast["series_id"] != series_id(POOL, "slots")]
    assert not usage_only.empty
    cpu = forecast[forecast["series_id"] == series_id(POOL, "cpu")].set_index("ts")
    # the run's 30 x 0.05 vCPU for one minute of the bucket (0.3 on average, plus the small ad-hoc
    # level) fit in one VM's vCPUs
    assert 0.3 <= cpu.loc[at_start, "mean"] <= spec.vcpus
    with_machine = pool.with_machine(spec.vcpus, spec.memory_gib)
    alone = plan(usage_only, PoolState(observed_at=now), with_machine, now)
    assert alone.summary["instances_after"] == 1, alone.summary

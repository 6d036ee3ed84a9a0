"""A running DAG's 16-vCPU second stage is planned at least one lead time before its predicted start.

The DAG runs for real (api-server, scheduler, dag-processor, LocalExecutor). While its first stage
runs, the upcoming-work endpoint reports the run in progress; the structural forecast predicts when
the second stage starts (template durations: the DAG has no history) and the real planner, called at
successive planning cycles with that forecast, must provide 16 vCPUs no later than that start minus
the pool's boot lead time. The control loop's own forecast path (the forecast task's fetch of the
endpoint with a token, the residual combination, the store) is run at the same moment and must store
the 16 vCPUs for that pool too.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from airflow_predictive.airflow_api.client import AirflowApiClient, fetch_upcoming
from airflow_predictive.contracts.capacity import PoolState
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.forecasting.engine import Forecaster
from airflow_predictive.forecasting.structural import structural_forecast
from airflow_predictive.planning.planner import plan, planned_capacity
from airflow_predictive.runtime.known_work import forecast_with_known_work
from airflow_predictive.store import ProfileStore
from tests.airflow_harness import AirflowDeployment

HERE = Path(__file__).resolve().parent
DAG_ID = "template_two_stage"
LEAD = timedelta(minutes=5)

pytestmark = pytest.mark.integration


def wait_for_running_stage(dep: AirflowDeployment, run_id: str, task_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    with dep.client() as client:
        while time.monotonic() < deadline:
            try:
                body = client.get(
                    f"/predictive/api/upcoming/{DAG_ID}", params={"horizon_minutes": 180}
                ).json()
            except httpx.TimeoutException:  # a busy 2-core machine: ask again
                continue
            runs = {r["run_id"]: r for r in body["dags"][0]["running"]}
            if runs.get(run_id, {}).get("tasks", {}).get(task_id, {}).get("state") == "running":
                return body
            time.sleep(1)
    raise AssertionError(
        f"{task_id} of {run_id} never seen running; last answer: {body}\n{dep.log_tail('scheduler')}"
    )


def control_loop_forecast(dep: AirflowDeployment, store_path: Path, now: datetime) -> tuple[dict, object]:
    """The forecast task's path for the train pool's cpu: real endpoint, token auth, residual, store."""
    sid = "pool=train-pool/resource=cpu"
    store = ProfileStore.sqlite(store_path)
    steps = pd.date_range(end=pd.Timestamp(now).floor("5min"), periods=3 * 288, freq="5min", inclusive="left")
    store.write_demand(pd.DataFrame({"series_id": sid, "ts": steps, "value": 0.5 + 0.1 * (steps.hour % 3)}))
    with AirflowApiClient(dep.base_url, username="admin", password=dep.password) as client:
        summary = forecast_with_known_work(
            store,
            [sid],
            now=now,
            forecaster=Forecaster(horizon=timedelta(hours=2), select_workers=0),
            fetch=lambda at, horizon: fetch_upcoming(client, now=at, horizon=horizon),
            max_selections=0,
        )
    latest = store.latest_forecasts([sid]).set_index("ts")
    store.dispose()
    return summary, latest


def test_second_stage_capacity_is_planned_one_lead_time_before_it_starts(tmp_path):
    with AirflowDeployment(
        tmp_path / "airflow", HERE / "run_dags", components=("api-server", "scheduler", "dag-processor")
    ) as dep:
        dep.wait_for_dag(DAG_ID, timeout=150)
        run_id = dep.trigger(DAG_ID)
        work = wait_for_running_stage(dep, run_id, "prepare")
        now = datetime.fromisoformat(work["now"])
        forecast = structural_forecast(work, now=now, horizon=timedelta(hours=2))
        stored = control_loop_forecast(dep, tmp_path / "profile.db", now)
        assert dep.wait_for_run(DAG_ID, run_id, timeout=400) == "success"

    (train,) = [i for i in forecast.intervals if i.run == run_id and i.task_id == "train"]
    predicted_start = datetime.fromtimestamp(train.start, now.tzinfo)
    assert forecast.sources[(DAG_ID, "train")] == "template"  # no history yet: the template's numbers
    # prepare started before `now`; its template duration (10m) puts train's start ~10 minutes out.
    assert now + timedelta(minutes=8) <= predicted_start <= now + timedelta(minutes=10, seconds=5)

    summary, latest = stored
    assert summary["combination"] == "residual" and summary["known_work"]["status"] == "ok", summary
    during_train = pd.Timestamp(predicted_start).ceil("5min") + timedelta(minutes=10)
    assert latest.loc[during_train, "mean"] >= 16.0 and set(latest["model"]) == {"combined"}

    pool = CapacityPool(
        name="train-pool",
        project="predictive-test",
        zone="us-central1-a",
        machine_type="n2-standard-4",
        max_instances=10,
        lead_time_minutes={"boot": LEAD.total_seconds() / 60},
    )
    assert pool.machine.vcpus == 4
    total = forecast.total()
    pool_rows = total[total["series_id"].str.startswith("pool=train-pool/")]
    state = PoolState(observed_at=now)
    first_covered = None
    cycle = now
    while cycle <= predicted_start:
        capacity = planned_capacity(plan(pool_rows, state, pool, cycle), state, pool)
        if capacity["cpu"] >= 16:
            first_covered = cycle
            break
        cycle += timedelta(minutes=1)
    assert first_covered is not None, "16 vCPUs never planned before the stage's predicted start"
    assert first_covered <= predicted_start - LEAD, (first_covered, predicted_start)

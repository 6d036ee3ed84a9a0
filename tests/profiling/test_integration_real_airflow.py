"""The profiler against a real Airflow: api-server, scheduler, dag-processor and triggerer on 127.0.0.1.

A workload DAG burns known CPU and memory under LocalExecutor; the worker listener (loaded through the
provider's plugin) samples each task's process tree; the REST collector and the sensor (in poke mode
and deferred to the triggerer) ingest the history. The records must match what the tasks measured
from inside, and every Airflow process started here must be gone afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest

from airflow_predictive.airflow_api.client import AirflowApiClient
from airflow_predictive.runtime.task_history import TaskHistoryCollector
from airflow_predictive.store import ProfileStore
from tests.airflow_harness import AirflowDeployment

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BURN = 8.0


def _wait_for_run(dep: AirflowDeployment, dag_id: str, run_id: str, timeout: float = 420) -> str:
    """Like ``dep.wait_for_run`` but patient with an API server slowed down by a busy 2-core machine.

    420 s is a ceiling, not an expectation: the workload's two 8-s burners run one after the other and
    each task process may take up to 90 s to start (see the duration check), the sensor DAG waits out
    its window (a minute past the trigger) and times out at 240 s. The 90-s request timeout is for an
    API server sharing 2 cores with the other Airflow helpers and the tasks; a timed-out poll is retried.
    """
    deadline = time.monotonic() + timeout
    state = "unknown"
    with httpx.Client(
        base_url=dep.base_url, headers={"Authorization": f"Bearer {dep.token()}"}, timeout=90
    ) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
                response.raise_for_status()
                state = response.json()["state"]
            except httpx.TimeoutException:
                continue
            if state in ("success", "failed"):
                return state
            time.sleep(2)
    raise AssertionError(f"{dag_id}/{run_id} still {state}\n{dep.log_tail('scheduler')}")


def _xcom(dep: AirflowDeployment, dag_id: str, run_id: str, task_id: str) -> dict:
    with httpx.Client(
        base_url=dep.base_url, headers={"Authorization": f"Bearer {dep.token()}"}, timeout=90
    ) as client:
        response = client.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"deserialize": True},
        )
        response.raise_for_status()
    value = response.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


def test_profiler_records_a_real_workload_within_tolerance(tmp_path: Path) -> None:
    store_path = tmp_path / "profile.db"
    dep = AirflowDeployment(
        tmp_path / "home",
        REPO / "tests" / "dags",
        parallelism=4,
        env={
            "AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path),
            "AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL_SECONDS": "1",
            "PREDICTIVE_TEST_BURN_SECONDS": str(BURN),
        },
    )
    # The sensor reads the REST API through an Airflow connection (conn type predictive_airflow_api).
    dep.env["AIRFLOW_CONN_PREDICTIVE_AIRFLOW_API_DEFAULT"] = dep.api_connection()
    pids: list[int] = []
    with dep:
        pids = [proc.pid for proc in dep.processes.values()]
        dep.wait_for_dag("workload_profiler")
        run_id = dep.trigger("workload_profiler")
        assert _wait_for_run(dep, "workload_profiler", run_id) == "success", dep.log_tail("scheduler")
        truth = {
            task: _xcom(dep, "workload_profiler", run_id, task)
            for task in ("burn_cpu", "hold_memory", "burn_in_child")
        }

        store = ProfileStore.sqlite(store_path)
        with AirflowApiClient(
            dep.base_url, username="admin", password=dep.password, page_size=2, timeout=90
        ) as client:
            first = TaskHistoryCollector(client, store, name="test").collect()
            again = TaskHistoryCollector(client, store, name="test").collect()
        # >= rather than ==: the workload's 5 tries (four tasks, flaky twice) are the floor; DAGs are
        # unpaused at creation here, so the scheduled DAGs in tests/dags may add runs of their own.
        assert first.task_runs >= 5, first.as_dict()
        assert again.since is not None  # the second pass starts from the watermark

        dep.wait_for_dag("profiler_sensor")
        sensor_run = dep.trigger("profiler_sensor")
        state = _wait_for_run(dep, "profiler_sensor", sensor_run)
        assert state == "success", dep.log_tail("scheduler") + dep.log_tail("triggerer")
        poked = _xcom(dep, "profiler_sensor", sensor_run, "profile_poke")
        deferred = _xcom(dep, "profiler_sensor", sensor_run, "profile_deferred")

    # Every component (and its children) is stopped.
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    runs = store.task_runs()
    mine = runs[(runs["dag_id"] == "workload_profiler") & (runs["run_id"] == run_id)]
    by_task = {row.task_id: row for row in mine[mine["try_number"] == 1].itertuples()}

    # Retries are separate tries, each stored once.
    flaky = mine[mine["task_id"] == "flaky"].sort_values("try_number")
    assert flaky["try_number"].tolist() == [1, 2]
    assert flaky["state"].tolist()[0] in ("failed", "up_for_retry")
    assert flaky["state"].tolist()[1] == "success"
    assert not runs.duplicated(["dag_id", "run_id", "task_id", "map_index", "try_number"]).any()

    # Durations: the recorded try spans the work the task timed from inside; what it adds is the
    # task process's start-up (parsing the DAG file), slow on a busy 2-core machine.
    # The task SDK stamps start_date before the task's code may run (the supervisor's start call
    # precedes the task process's StartupDetails) and end_date after it returned, with the host clock
    # the task's time.time() reads, so the order is strict: 0.05 s covers only rounding. (It was 1 s,
    # which would have hidden an end_date truncated to whole seconds.) The duration's 0.1 s below is
    # those two, plus the drift of the monotonic clock (wall) against the wall clock over seconds.
    # The upper +90 s is the start-up and finish on a loaded machine: 6dd8adc raised it from +20 s
    # when making this test pass on a 2-core machine with 4 parallel tasks and the Airflow helpers;
    # it is a ceiling against a hung try, not a measurement.
    for task, measured in truth.items():
        row = by_task[task]
        assert row.start_date.timestamp() <= measured["t0"] + 0.05, task
        assert row.end_date.timestamp() >= measured["t1"] - 0.05, task
        assert measured["wall"] - 0.1 <= row.duration <= measured["wall"] + 90, (task, row.duration, measured)

    # Queues and users.
    assert by_task["burn_cpu"].queue == "cpu-bound"
    assert by_task["hold_memory"].queue == "memory-bound"
    dag_runs = store.dag_runs()
    workload_run = dag_runs[
        (dag_runs["dag_id"] == "workload_profiler") & (dag_runs["run_id"] == run_id)
    ].iloc[0]
    assert workload_run["triggered_by"] == "admin"
    assert workload_run["run_type"] == "manual"

    # Resource usage from the worker listener's samples (1-s interval here).
    samples = store.usage_samples()
    samples = samples[samples["run_id"] == run_id].sort_values("ts")

    def sampled_cpu_seconds(task: str) -> float:
        mine = samples[samples["task_id"] == task]
        # Fewer than the ~8 one-second samples an 8-s burn would get on an idle machine: in burn_cpu
        # the sampler thread competes for the GIL with the busy loop, and a reading walks /proc for
        # the process tree, taking the GIL back after each file read, so a reading can fill much
        # of its interval. Three samples still give an integral with a middle, not only the ends.
        assert len(mine) >= 3, task
        seconds = mine["ts"].diff().dt.total_seconds().fillna(1.0)
        return float((mine["cpu_cores"] * seconds).sum())

    for task in ("burn_cpu", "burn_in_child"):  # the child's CPU is seen through the process tree
        real = truth[task]["cpu"]
        # Above: the task process itself adds a little outside the timed burn (pushing XCom,
        # finishing the try), 2.5 s of CPU at most for a process that is already imported.
        # Below: the store keeps no sample's interval, so the helper weighs the first sample as the
        # nominal 1 s; when a slow reading stretched that interval, its CPU is undercounted. A
        # quarter of the burn (2 s of 8) is one such stretched first interval at a full core;
        # 0.2 s keeps a burn that got little CPU on a loaded machine from failing on rounding.
        assert 0.75 * real - 0.2 <= sampled_cpu_seconds(task) <= real + 2.5, (task, real)
    burn = by_task["burn_cpu"]
    # The peak sample is at least the mean of the samples spanning the burn, which reach at most one
    # interval past each end of it (8 s of burn in about 10 s: 0.8 of the burn's rate); 0.5 leaves
    # room for the stretched intervals of slow readings (see the sample count above).
    assert burn.cpu_peak >= 0.5 * truth["burn_cpu"]["cpu"] / truth["burn_cpu"]["wall"]
    # hold_memory's process tree is the 300 MB block (every page touched) on top of what a task
    # process of this DAG holds without it, which burn_cpu measures (the same imports, no block);
    # 100 MB is the difference allowed between two such processes (allocator arenas, XCom). It was
    # 300 + 700, a width with no reason, which a sampler counting the block twice would have passed.
    baseline = by_task["burn_cpu"].rss_peak_mb
    assert 300 <= by_task["hold_memory"].rss_peak_mb <= 300 + baseline + 100, baseline
    assert by_task["burn_cpu"].rss_peak_mb < 300
    assert json.loads(burn.hints)["cpus"] == 1

    # The sensor, in poke mode and deferred, saw a complete window and built demand.
    for summary in (poked, deferred):
        assert summary["complete"] is True
        assert summary["task_runs"] >= 5  # the workload's 5 tries at least (see the collector above)
        assert "admin" in summary["users"]
    demand = store.demand()
    cpu = demand[demand["series_id"] == "pool=cpu-workers/resource=cpu"].dropna()
    # The series holds the CPU the cpu-bound queue used: its integral (1-minute buckets) is the
    # sampled CPU seconds, plus the start-up of each task process before its first sample (counted
    # at the first sample's rate).
    # Above: used + 2 x used + 5 s leaves, for the two tries' start-ups counted at about one core
    # each, roughly their burns' length plus 5 s; a longer start-up would fail it (see +90 s above).
    # Below: the buckets keep every sample (the first one over more than its nominal 1 s), so less
    # than `used` means samples were lost. 0.7 has no derivation behind it and is kept only because
    # a tighter floor has not been run here yet (this test starts Airflow); 1.0 x used is the bound
    # to try.
    used = sampled_cpu_seconds("burn_cpu") + sampled_cpu_seconds("burn_in_child")
    assert 0.7 * used <= float((cpu["value"] * 60).sum()) <= 3 * used + 5, (cpu["value"].sum() * 60, used)
    # The memory series holds what hold_memory held: its integral (GiB-seconds) covers 300 MB over the
    # task's own sleep, and stays under its RSS peak over the whole try. (A per-bucket maximum would
    # depend on where the try falls against the minute boundaries.)
    # Below, 0.7: each segment takes the value of the sample that ends it, so the interval in which
    # the block was freed counts as baseline: up to one (possibly stretched) interval of the 8-s hold
    # is missed; the baseline RSS, not subtracted, makes up part of that. Above, 1.5: the segments
    # run from start_date to the last sample, which the listener's success hook takes after the task
    # SDK stamped end_date (and, on a slow machine, after reporting it to the API server).
    memory = demand[demand["series_id"] == "pool=memory-bound/resource=memory"].dropna()
    gib_seconds = float((memory["value"] * 60).sum())
    held = truth["hold_memory"]["mb"] / 1024 * truth["hold_memory"]["wall"]
    hold = by_task["hold_memory"]
    assert 0.7 * held <= gib_seconds <= 1.5 * hold.rss_peak_mb / 1024 * hold.duration, (gib_seconds, held)
    assert pd.notna(store.get_watermark("profiler:test:updated_at"))
    store.dispose()

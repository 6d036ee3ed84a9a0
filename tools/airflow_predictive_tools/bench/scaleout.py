"""``bench scaleout``: the control loop's wall time under Celery, stage by stage, 1 vs N workers.

One Airflow (api-server, scheduler, dag-processor) with CeleryExecutor on PostgreSQL metadata and a
Redis broker; the profile store in its own PostgreSQL database, seeded in the steady state (demand
history, a model state per series and a day of forecast issues, as a loop that has run for a day
leaves them: :mod:`airflow_predictive_tools.bench.scaleout_seed`), and a Compute Engine emulator. For
each worker count the workers are started (one slot each), and for each series count a DAG made of
the production tasks (profile, forecast and evaluate mapped over chunks, allocate, close) is
triggered ``repeats`` times. Each stage is timed from its task instances (first start to last end),
as the scheduler saw them.

The store's size is measured apart: a simulated day of cycles (288 issues of a 24-hour horizon per
series, written and trimmed as the forecast tasks do) on a sample of series, in rows and bytes per
series per day.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# throwaway_database and _flush stay importable from here (scripts and other benchmarks use them).
from airflow_predictive_tools.deployment import celery_airflow, throwaway_database
from airflow_predictive_tools.deployment import flush_broker as _flush  # noqa: F401

DAG_ID = "predictive_scaleout_bench"

DAG_SOURCE = '''"""Benchmark DAG of ``airflow-predictive bench scaleout``: the control loop on one pool prefix.

The production DAG's tasks (profile -> forecast -> allocate and evaluate side by side ->
close_evaluation; forecast and evaluate mapped over chunks of series, allocate over chunks of pools) with the series, pools file
and cycle time taken from the run's conf, so one deployment can time several series counts.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_predictive.operators.demand_forecast import DemandForecastOperator
from airflow_predictive.operators.forecast_evaluation import (
    CloseFeedbackCycleOperator,
    ForecastEvaluationOperator,
)
from airflow_predictive.operators.preemptive_allocate import PreemptiveAllocateOperator
from airflow_predictive.sensors.behavior_profiler import BehaviorProfilerSensor

NOW = "{{ dag_run.conf['now'] }}"

with DAG(
    dag_id="predictive_scaleout_bench",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
):
    profile = BehaviorProfilerSensor(
        task_id="profile", window=timedelta(hours=1), window_end=NOW, poke_interval=5, timeout=120
    )

    @task
    def chunks(**context) -> list[list[str]]:
        """The series of the benchmark's pool prefix, in chunks of conf["chunk"]."""
        from airflow_predictive.hooks.profile_store import configured_store

        conf = context["dag_run"].conf
        store = configured_store()
        try:
            ids = [i for i in store.series_ids() if i.startswith("pool=" + conf["prefix"] + "-")]
        finally:
            store.dispose()
        size = int(conf["chunk"])
        return [ids[i : i + size] for i in range(0, len(ids), size)]

    @task
    def pool_chunks(**context) -> list[list[str]]:
        """The benchmark's pools, in chunks of [predictive] pools_per_chunk."""
        from airflow_predictive.operators.preemptive_allocate import pool_chunks as chunk_pools

        return chunk_pools(pools_file=context["dag_run"].conf["pools_file"])

    series = chunks()
    forecast = DemandForecastOperator.partial(task_id="forecast", now=NOW, max_selections=0).expand(
        series_ids=series
    )
    allocate = PreemptiveAllocateOperator.partial(
        task_id="allocate", now=NOW, pools_file="{{ dag_run.conf['pools_file'] }}", priority_weight=10
    ).expand(pools=pool_chunks())
    evaluate = ForecastEvaluationOperator.partial(
        task_id="evaluate", now=NOW, trigger_rule="all_done"
    ).expand(series_ids=series)
    close = CloseFeedbackCycleOperator(
        task_id="close_evaluation", now=NOW, forecast_task_id="forecast", trigger_rule="all_done"
    )
    profile >> series
    forecast >> [allocate, evaluate]
    [allocate, evaluate] >> close
'''

# Stages of one cycle and the tasks each spans (first start to last end, as the scheduler saw them).
STAGES = {
    "profile": ("profile",),
    "forecast": ("forecast",),
    "allocate": ("allocate",),
    "evaluate": ("evaluate", "close_evaluation"),
}


class GroupRss:
    """Samples the largest single-process RSS among some process groups' members (the workers)."""

    def __init__(self, pids: list[int], every: float = 0.5) -> None:
        self.pids = pids
        self.every = every
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for pid in self.pids:
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    for proc in [root, *root.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            self.peak_mb = max(self.peak_mb, proc.memory_info().rss / 2**20)
            self._stop.wait(self.every)

    def __enter__(self) -> GroupRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _stage_seconds(tis: list[dict[str, Any]]) -> dict[str, float]:
    """Each stage's wall time: its tasks' first start to last end."""
    out = {}
    for stage, task_ids in STAGES.items():
        ran = [t for t in tis if t["task_id"] in task_ids and t["start_date"] and t["end_date"]]
        if ran:
            span = max(_ts(t["end_date"]) for t in ran) - min(_ts(t["start_date"]) for t in ran)
            out[stage] = span.total_seconds()
    return out


def _seed(store: Any, n: int, *, end: datetime, days: int, home: Path) -> str:
    """Seed ``n`` series in the steady state with a day of forecast issues; return its pools file."""
    from airflow_predictive_tools.bench.scaleout_seed import (
        pool_names,
        pools_yaml,
        seed_forecast_day,
        seed_steady_state,
    )

    ids = seed_steady_state(store, n, end=end, days=days, prefix=f"n{n}")
    seed_forecast_day(store, ids, end=end)
    _analyze(store)
    pools_file = home / f"pools-n{n}.yaml"
    pools_file.write_text(pools_yaml(pool_names(n, prefix=f"n{n}"), scale=[]))
    return str(pools_file)


def _analyze(store: Any) -> None:
    """Refresh PostgreSQL's planner statistics after the bulk load, as autovacuum does in a deployment
    once a tenth of a table has changed. Without them (autovacuum is off on the benchmark machine's
    PostgreSQL) the planner takes a freshly seeded table for small and scans all 1.4 million forecast
    issues for every chunk's read instead of using the key's index."""
    import sqlalchemy as sa

    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))


def _cycle(
    airflow: Any, store: Any, conf: dict[str, Any], end: datetime
) -> tuple[dict[str, float], float, dict[str, int]]:
    """Run one cycle of the benchmark DAG; its stages' seconds, the run's seconds and the mapped tasks
    of forecast (as many as evaluate) and allocate."""
    from airflow_predictive.runtime.feedback_cycle import WATERMARK

    # Every cycle scores the bucket before `end`, as a steady loop's evaluation does.
    store.set_watermark(WATERMARK, (end - timedelta(minutes=5)).isoformat())
    run_id = airflow.trigger(DAG_ID, conf)
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=3600)
    if state != "success":
        raise RuntimeError(
            f"benchmark run {run_id} ({conf}) ended {state}; see the logs under {airflow.home}"
        )
    with airflow.client() as client:
        dag_run = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
        tis = client.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        ).json()["task_instances"]
    run_seconds = (_ts(dag_run["end_date"]) - _ts(dag_run["start_date"])).total_seconds()
    mapped = {task: sum(t["task_id"] == task for t in tis) for task in ("forecast", "allocate")}
    return _stage_seconds(tis), run_seconds, mapped


def _point(
    n: int, workers: int, cycles: list[tuple[dict[str, float], float, dict[str, int]]], rss: float
) -> dict[str, Any]:
    """One (series, workers) point: median stage and run times, throughput per worker slot."""
    stages = {name: statistics.median(c[0].get(name, 0.0) for c in cycles) for name in STAGES}
    loop = statistics.median(c[1] for c in cycles)
    return {
        "series": n,
        "workers": workers,
        "mapped_tasks": cycles[-1][2]["forecast"],
        "allocate_tasks": cycles[-1][2]["allocate"],
        "stage_seconds": {name: round(v, 1) for name, v in stages.items()},
        "forecast_stage_seconds": round(stages["forecast"], 1),
        "forecast_stage_seconds_all": [round(c[0].get("forecast", 0.0), 1) for c in cycles],
        "dag_run_seconds": round(loop, 1),
        "dag_run_seconds_all": [round(c[1], 1) for c in cycles],
        "series_per_second": round(n / stages["forecast"], 1),
        # Per worker slot: what the sizing advice scales by (one slot per worker here).
        "forecast_series_per_second_per_slot": round(n / stages["forecast"] / workers, 1),
        "evaluate_series_per_second_per_slot": round(n / max(stages["evaluate"], 1e-9) / workers, 1),
        "worker_peak_rss_mb": round(rss),
    }


def run(
    series_counts: list[int],
    worker_counts: list[int],
    *,
    home: Path,
    postgres_url: str,
    broker_url: str,
    chunk: int = 200,
    repeats: int = 1,
    days: int = 3,
    size_sample: int = 100,
    min_heartbeat_interval: float | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Run the benchmark; return the JSON-able result.

    :param series_counts: numbers of series per cycle.
    :param worker_counts: numbers of Celery workers (one slot each) to compare.
    :param home: an empty working folder (AIRFLOW_HOME, DAGs folder, logs).
    :param postgres_url: a PostgreSQL superuser URL; throw-away databases are created and dropped.
    :param broker_url: a Redis URL of a dedicated database index (flushed before and after).
    :param chunk: series per mapped forecast and evaluate task.
    :param repeats: cycles per (series, workers) point; the median is reported.
    :param days: days of 5-minute history seeded per series.
    :param size_sample: series of the simulated day the store's size is measured on (0: skip).
    :param min_heartbeat_interval: the workers' ``[workers] min_heartbeat_interval`` (None: Airflow's
        default, 5 s). Airflow's task supervisor can idle that long after a task's process has ended
        (it waits in ``select`` once every socket is closed but the process is not yet reaped).
    :param log: callable taking one progress line (default: print to stderr).
    """
    import sys

    from airflow_predictive.store import ProfileStore

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    home = Path(home).resolve()
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "scaleout_bench.py").write_text(DAG_SOURCE)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    end = now - timedelta(minutes=now.minute % 5)
    result: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "chunk": chunk,
        "repeats": repeats,
        "history_days": days,
        "worker_min_heartbeat_interval": min_heartbeat_interval,
        "note": "every worker has one slot; all workers, the scheduler, the API server and PostgreSQL "
        "share this machine's cores",
        "points": [],
    }
    if size_sample:
        result["store_size"] = _store_size(postgres_url, size_sample, end)
        say(f"store after a simulated day: {json.dumps(result['store_size'])}")
    with contextlib.ExitStack() as stack:
        store_url, airflow = _deployment(stack, home, dags, postgres_url, broker_url)
        store = ProfileStore(store_url)
        stack.callback(store.dispose)
        pools_files, seed_seconds = {}, {}
        for n in series_counts:
            started = time.perf_counter()
            pools_files[n] = _seed(store, n, end=end, days=days, home=home)
            seed_seconds[n] = round(time.perf_counter() - started, 1)
            say(f"seeded {n} series and a day of their forecasts in {seed_seconds[n]} s")
        result["seed_seconds"] = seed_seconds
        airflow.wait_for_dag(DAG_ID, timeout=180)
        for workers in worker_counts:
            with _workers(airflow, workers, min_heartbeat_interval) as procs:
                for n in series_counts:
                    conf = {
                        "prefix": f"n{n}",
                        "chunk": chunk,
                        "now": end.isoformat(),
                        "pools_file": pools_files[n],
                    }
                    with GroupRss([p.pid for p in procs]) as rss:
                        cycles = [_cycle(airflow, store, conf, end) for _ in range(repeats)]
                    point = _point(n, workers, cycles, rss.peak_mb)
                    say(json.dumps(point))
                    result["points"].append(point)
    result["speedup"] = _speedups(result["points"], series_counts, worker_counts)
    return result


def _store_size(postgres_url: str, sample: int, end: datetime) -> dict[str, Any]:
    from airflow_predictive.store import ProfileStore
    from airflow_predictive_tools.bench.scaleout_seed import simulated_day_size

    with throwaway_database(postgres_url, "predictive_bench_size") as url:
        store = ProfileStore(url)
        try:
            return simulated_day_size(
                store, [f"pool=size-{i:04d}/resource=cpu" for i in range(sample)], end=end
            )
        finally:
            store.dispose()


def _deployment(
    stack: contextlib.ExitStack, home: Path, dags: Path, postgres_url: str, broker_url: str
) -> tuple[str, Any]:
    """The throw-away store, the emulator and Airflow with CeleryExecutor (no workers yet)."""
    from airflow_predictive_tools.emulator.server import running_emulator

    emulator_url = stack.enter_context(running_emulator(config={"boot_seconds": 1.0}))
    return celery_airflow(
        stack,
        home / "airflow",
        dags,
        postgres_url=postgres_url,
        broker_url=broker_url,
        db_prefix="predictive_bench",
        emulator_url=emulator_url,
        parallelism=16,
    )


@contextlib.contextmanager
def _workers(airflow: Any, count: int, min_heartbeat_interval: float | None = None) -> Iterator[list[Any]]:
    """``count`` Celery workers of one slot each, stopped by their process groups on exit."""
    from airflow_predictive_tools.deployment import _stop_group, free_port

    env = {}
    if min_heartbeat_interval is not None:
        env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] = f"{min_heartbeat_interval:g}"

    names = [f"bench-worker-{i + 1}" for i in range(count)]
    procs = [
        airflow.start_component(
            "celery worker",
            "--concurrency",
            "1",
            "--celery-hostname",
            f"{name}@%h",
            name=name,
            env={**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
        )
        for name in names
    ]
    time.sleep(10)  # let the workers connect before the first cycle
    try:
        yield procs
    finally:
        for name, proc in zip(names, procs, strict=True):
            _stop_group(proc)
            proc._log_file.close()  # type: ignore[attr-defined]
            del airflow.processes[name]


def _speedups(
    points: list[dict[str, Any]], series_counts: list[int], worker_counts: list[int]
) -> dict[str, float]:
    """Whole-loop speedup of each worker count over the smallest, per series count."""
    by = {(p["series"], p["workers"]): p for p in points}
    base = min(worker_counts)
    return {
        f"{n}:{w}v{base}": round(by[(n, base)]["dag_run_seconds"] / by[(n, w)]["dag_run_seconds"], 2)
        for n in series_counts
        for w in worker_counts
        if w != base
    }

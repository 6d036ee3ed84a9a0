"""``bench scaleout``: forecast-stage wall time of the mapped forecast tasks under Celery, 1 vs N workers.

One Airflow (api-server, scheduler, dag-processor) with CeleryExecutor on PostgreSQL metadata and a
Redis broker; the profile store in its own PostgreSQL database, seeded in the steady state (demand
history and a model state per series, :mod:`airflow_predictive_tools.bench.scaleout_seed`). For each worker count
the workers are started (one slot each), and for each series count a DAG that maps the production
DemandForecastOperator over chunks of the series is triggered ``repeats`` times. The forecast stage
is timed from the task instances (first mapped start to last mapped end), as the scheduler saw it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DAG_ID = "predictive_scaleout_bench"

DAG_SOURCE = '''"""Benchmark DAG of ``airflow-predictive bench scaleout``: the mapped forecast stage only."""

import pendulum
from airflow.sdk import DAG, task

from airflow_predictive.operators.demand_forecast import DemandForecastOperator

with DAG(
    dag_id="predictive_scaleout_bench",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
):

    @task
    def chunks(**context) -> list[list[str]]:
        """The series of the benchmark's pool prefix, in chunks of conf["chunk"]."""
        from airflow_predictive.store import ProfileStore
        from airflow_predictive.hooks.profile_store import configured_store

        conf = context["dag_run"].conf
        store = configured_store()
        try:
            ids = [i for i in store.series_ids() if i.startswith("pool=" + conf["prefix"] + "-")]
        finally:
            store.dispose()
        size = int(conf["chunk"])
        return [ids[i : i + size] for i in range(0, len(ids), size)]

    DemandForecastOperator.partial(
        task_id="forecast", now="{{ dag_run.conf['now'] }}", max_selections=0
    ).expand(series_ids=chunks())
'''


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


@contextlib.contextmanager
def throwaway_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of ``template`` if given), dropped on exit; yields its URL."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _flush(broker_url: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        client.flushdb()
    finally:
        client.close()


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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
    log: Any = None,
) -> dict[str, Any]:
    """Run the benchmark; return the JSON-able result.

    :param series_counts: numbers of series to forecast per cycle.
    :param worker_counts: numbers of Celery workers (one slot each) to compare.
    :param home: an empty working folder (AIRFLOW_HOME, DAGs folder, logs).
    :param postgres_url: a PostgreSQL superuser URL; two throw-away databases are created and dropped.
    :param broker_url: a Redis URL of a dedicated database index (flushed before and after).
    :param chunk: series per mapped forecast task.
    :param repeats: cycles per (series, workers) point; the median is reported.
    :param days: days of 5-minute history seeded per series.
    :param log: callable taking one progress line (default: print to stderr).
    """
    import sys

    from airflow_predictive.store import ProfileStore
    from airflow_predictive_tools.bench.scaleout_seed import seed_steady_state
    from airflow_predictive_tools.deployment import AirflowDeployment, _stop_group, free_port

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
        "note": "every worker has one slot; all workers, the scheduler, the API server and PostgreSQL "
        "share this machine's cores",
        "points": [],
    }
    with contextlib.ExitStack() as stack:
        meta_url = stack.enter_context(throwaway_database(postgres_url, "predictive_bench_meta"))
        store_url = stack.enter_context(throwaway_database(postgres_url, "predictive_bench_store"))
        _flush(broker_url)
        stack.callback(_flush, broker_url)
        store = ProfileStore(store_url)
        stack.callback(store.dispose)
        seed_seconds = {}
        for n in series_counts:
            started = time.perf_counter()
            seed_steady_state(store, n, end=end, days=days, prefix=f"n{n}")
            seed_seconds[n] = round(time.perf_counter() - started, 1)
            say(f"seeded {n} series in {seed_seconds[n]} s")
        result["seed_seconds"] = seed_seconds
        store_conn = {"conn_type": "predictive_store", "extra": {"sqlalchemy_url": store_url}}
        airflow = stack.enter_context(
            AirflowDeployment(
                home / "airflow",
                dags,
                components=("api-server", "scheduler", "dag-processor"),
                executor="CeleryExecutor",
                parallelism=16,
                env={
                    "AIRFLOW__CELERY__BROKER_URL": broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url.replace("+psycopg2", ""),
                    "AIRFLOW__PREDICTIVE__STORE_CONN_ID": "predictive_store_default",
                    "AIRFLOW_CONN_PREDICTIVE_STORE_DEFAULT": json.dumps(store_conn),
                    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
                },
                sql_alchemy_conn=meta_url,
            )
        )
        airflow.wait_for_dag(DAG_ID, timeout=180)
        for workers in worker_counts:
            names = [f"bench-worker-{i + 1}" for i in range(workers)]
            procs = [
                airflow.start_component(
                    "celery worker",
                    "--concurrency",
                    "1",
                    "--celery-hostname",
                    f"{name}@%h",
                    name=name,
                    env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
                )
                for name in names
            ]
            time.sleep(10)  # let the workers connect before the first cycle
            for n in series_counts:
                stages, runs, tasks = [], [], 0
                with GroupRss([p.pid for p in procs]) as rss:
                    for _ in range(repeats):
                        conf = {"prefix": f"n{n}", "chunk": chunk, "now": end.isoformat()}
                        run_id = airflow.trigger(DAG_ID, conf)
                        state = airflow.wait_for_run(DAG_ID, run_id, timeout=3600)
                        if state != "success":
                            raise RuntimeError(
                                f"benchmark run {run_id} ({n} series, {workers} workers) ended {state}; "
                                f"see the logs under {airflow.home}"
                            )
                        with airflow.client() as client:
                            dag_run = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
                            tis = client.get(
                                f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
                                params={"limit": 1000},
                            ).json()["task_instances"]
                        mapped = [t for t in tis if t["task_id"] == "forecast"]
                        tasks = len(mapped)
                        stage = max(_ts(t["end_date"]) for t in mapped) - min(
                            _ts(t["start_date"]) for t in mapped
                        )
                        stages.append(stage.total_seconds())
                        runs.append((_ts(dag_run["end_date"]) - _ts(dag_run["start_date"])).total_seconds())
                point = {
                    "series": n,
                    "workers": workers,
                    "mapped_tasks": tasks,
                    "forecast_stage_seconds": round(statistics.median(stages), 1),
                    "forecast_stage_seconds_all": [round(s, 1) for s in stages],
                    "dag_run_seconds": round(statistics.median(runs), 1),
                    "series_per_second": round(n / statistics.median(stages), 1),
                    "worker_peak_rss_mb": round(rss.peak_mb),
                }
                say(json.dumps(point))
                result["points"].append(point)
            for name, proc in zip(names, procs, strict=True):
                _stop_group(proc)
                proc._log_file.close()  # type: ignore[attr-defined]
                del airflow.processes[name]
    by = {(p["series"], p["workers"]): p for p in result["points"]}
    if worker_counts:
        base = min(worker_counts)
        result["speedup"] = {
            f"{n}:{w}v{base}": round(
                by[(n, base)]["forecast_stage_seconds"] / by[(n, w)]["forecast_stage_seconds"], 2
            )
            for n in series_counts
            for w in worker_counts
            if w != base
        }
    return result

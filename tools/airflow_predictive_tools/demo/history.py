"""Demo history generator: weeks of a realistic organisation's Airflow history, written to the store.

THIS IS A GENERATOR, not observed data: ``make demo`` uses it so the forecaster has weeks to learn
from on a fresh machine. It writes through the same store API as the REST collector and the worker
listener (``upsert_dag_runs``/``upsert_task_runs`` with hints and aggregate usage), so the demand
series come from the same builder as real data (:func:`~airflow_predictive.runtime.profile_refresh.refresh_profile`).

The organisation: four teams whose members trigger workflows in office hours (09-18 UTC on
weekdays) in sessions that follow habits ("after the ad-hoc query, refresh the dashboard"), hourly
ingestion, nightly warehouse and retraining jobs, a daily morning report, month-end reporting spikes,
and a few failures with retries.
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_predictive.runtime.task_history import extend_coverage

DEMO_QUEUES = ("etl", "analytics", "ml", "reporting")


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    operator: str
    cpus: float
    ram_mb: int
    minutes: tuple[float, float]  # duration range
    mapped: int = 0  # >0: a mapped task with this many instances
    disk_mb: int = 512
    net_mbps: float = 0.0


@dataclass(frozen=True)
class DagSpec:
    dag_id: str
    queue: str
    tasks: tuple[TaskSpec, ...]
    produces: str | None = None
    consumes: str | None = None


DAGS = {
    d.dag_id: d
    for d in (
        DagSpec(
            "etl_hourly_ingest",
            "etl",
            (
                TaskSpec("extract", "HttpOperator", 0.5, 512, (1.5, 3), net_mbps=40),
                TaskSpec("transform", "PythonOperator", 1.5, 2048, (3, 7)),
                TaskSpec("load", "SQLExecuteQueryOperator", 0.4, 512, (1, 2), net_mbps=20),
            ),
            produces="warehouse.raw_events",
        ),
        # 30 partner feeds fetched at once, each mostly waiting on the partner's API: almost no CPU, but
        # 30 task slots for several minutes, so the pool is sized by its slots (issue: task slots)
        DagSpec(
            "etl_partner_sync",
            "etl",
            (TaskSpec("fetch_partner_feed", "HttpOperator", 0.05, 256, (5, 8), mapped=30, net_mbps=0.5),),
        ),
        DagSpec(
            "etl_nightly_warehouse",
            "etl",
            (
                TaskSpec("snapshot", "BashOperator", 1.0, 1024, (5, 10), disk_mb=20480),
                TaskSpec("rebuild_partition", "PythonOperator", 2.0, 4096, (20, 40), mapped=6),
                TaskSpec("publish", "PythonOperator", 0.5, 512, (2, 4)),
            ),
            produces="warehouse.curated",
        ),
        DagSpec(
            "analytics_adhoc_query",
            "analytics",
            (
                TaskSpec("run_query", "SQLExecuteQueryOperator", 1.0, 1536, (3, 12), net_mbps=15),
                TaskSpec("export", "PythonOperator", 0.3, 512, (0.5, 2)),
            ),
            consumes="warehouse.curated",
        ),
        DagSpec(
            "analytics_dashboard_refresh",
            "analytics",
            (TaskSpec("refresh_extracts", "PythonOperator", 1.5, 2048, (5, 15)),),
        ),
        DagSpec(
            "ml_feature_build",
            "ml",
            (TaskSpec("build_features", "PythonOperator", 2.0, 6144, (10, 25), mapped=3),),
            produces="ml.features",
        ),
        DagSpec(
            "ml_train",
            "ml",
            (
                TaskSpec("train", "KubernetesPodOperator", 4.0, 8192, (30, 60)),
                TaskSpec("evaluate", "PythonOperator", 1.0, 2048, (3, 8)),
            ),
            consumes="ml.features",
        ),
        DagSpec(
            "ml_nightly_retrain",
            "ml",
            (TaskSpec("retrain", "KubernetesPodOperator", 4.0, 8192, (45, 75)),),
        ),
        DagSpec(
            "reporting_daily",
            "reporting",
            (
                TaskSpec("aggregate", "SQLExecuteQueryOperator", 1.0, 1024, (5, 10)),
                TaskSpec("render_pdf", "PythonOperator", 0.8, 1024, (2, 5)),
            ),
        ),
        DagSpec(
            "reporting_month_end",
            "reporting",
            (
                TaskSpec("close_ledgers", "PythonOperator", 2.0, 3072, (15, 30), mapped=4),
                TaskSpec("consolidate", "PythonOperator", 1.5, 2048, (10, 20)),
            ),
        ),
    )
}

# Teams: users, how many sessions a weekday they start, and their habits (first DAG, what follows).
TEAMS: dict[str, dict[str, Any]] = {
    "data-eng": {
        "users": ("alice", "bob"),
        "sessions": 1.0,
        "first": {"analytics_adhoc_query": 1.0},
        "next": {"analytics_adhoc_query": {"analytics_adhoc_query": 0.3, "<end>": 0.7}},
    },
    "analytics": {
        "users": ("carol", "dave", "erin"),
        "sessions": 3.0,
        "first": {"analytics_adhoc_query": 0.8, "analytics_dashboard_refresh": 0.2},
        "next": {
            "analytics_adhoc_query": {
                "analytics_adhoc_query": 0.35,
                "analytics_dashboard_refresh": 0.45,
                "<end>": 0.2,
            },
            "analytics_dashboard_refresh": {"analytics_adhoc_query": 0.2, "<end>": 0.8},
        },
    },
    "ml": {
        "users": ("frank", "grace"),
        "sessions": 1.5,
        "first": {"ml_feature_build": 1.0},
        "next": {
            "ml_feature_build": {"ml_train": 0.8, "<end>": 0.2},
            "ml_train": {"ml_feature_build": 0.25, "<end>": 0.75},
        },
    },
    "finance": {
        "users": ("heidi",),
        "sessions": 0.5,
        "first": {"reporting_daily": 1.0},
        "next": {"reporting_daily": {"<end>": 1.0}},
    },
}
WORKERS = {"etl": 3, "analytics": 2, "ml": 2, "reporting": 2}


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _is_month_end(day: datetime) -> bool:
    last = calendar.monthrange(day.year, day.month)[1]
    return day.day >= last - 1 or day.day == 1


class _Writer:
    def __init__(self, rng: random.Random, start: datetime, now: datetime) -> None:
        self.rng = rng
        self.start = start
        self.now = now
        self.dag_runs: list[dict[str, Any]] = []
        self.task_runs: list[dict[str, Any]] = []
        self.failures = 0
        self.retries = 0

    def run(self, dag: DagSpec, when: datetime, run_type: str, user: str | None, load: float = 1.0) -> None:
        """One DAG run starting at ``when``: tasks in sequence, mapped tasks in parallel."""
        if not self.start <= when < self.now:
            return
        rng = self.rng
        run_id = f"{run_type}__{when.isoformat()}"
        if run_type == "manual":
            run_id += f"_{user}"
        cursor = when + timedelta(seconds=rng.uniform(2, 10))
        for spec in dag.tasks:
            ends = []
            for map_index in range(spec.mapped) if spec.mapped else [-1]:
                ends.append(self._task(dag, spec, run_id, map_index, cursor, load))
            cursor = max(ends) + timedelta(seconds=rng.uniform(2, 8))
        assets: dict[str, list] = {"consumed": [], "produced": []}
        if dag.produces:
            assets["produced"].append(
                {"name": dag.produces, "uri": dag.produces, "task_id": dag.tasks[-1].task_id}
            )
        if dag.consumes:
            assets["consumed"].append({"name": dag.consumes, "uri": dag.consumes})
        finished = cursor <= self.now
        self.dag_runs.append(
            {
                "dag_id": dag.dag_id,
                "run_id": run_id,
                "run_type": run_type,
                "triggered_by": user,
                "state": "success" if finished else "running",
                "logical_date": when,
                "data_interval_start": when
                - (timedelta(hours=1) if run_type == "scheduled" else timedelta(0)),
                "data_interval_end": when,
                "start_date": when,
                "end_date": cursor if finished else None,
                "assets": assets,
            }
        )

    def _task(
        self, dag: DagSpec, spec: TaskSpec, run_id: str, map_index: int, ready: datetime, load: float
    ) -> datetime:
        rng = self.rng
        # Queue wait grows with load: the sign of under-provisioning the forecaster should prevent.
        queued = ready
        start = queued + timedelta(seconds=rng.lognormvariate(1.5, 0.6) * load)
        tries = 2 if rng.random() < 0.03 else 1
        for try_number in range(1, tries + 1):
            failed = try_number < tries
            minutes = rng.uniform(*spec.minutes) * (0.4 if failed else 1.0)
            end = start + timedelta(minutes=minutes)
            if start >= self.now:
                return end
            running = end > self.now
            cpu_mean = spec.cpus * rng.uniform(0.6, 0.95)
            seconds = minutes * 60
            self.task_runs.append(
                {
                    "dag_id": dag.dag_id,
                    "run_id": run_id,
                    "task_id": spec.task_id,
                    "map_index": map_index,
                    "try_number": try_number,
                    "state": "running" if running else ("up_for_retry" if failed else "success"),
                    "queue": dag.queue,
                    "pool": "default_pool",
                    "pool_slots": 1,
                    "operator": spec.operator,
                    "hostname": f"{dag.queue}-worker-{rng.randrange(WORKERS[dag.queue]) + 1}",
                    "queued_at": queued,
                    "start_date": start,
                    "end_date": None if running else end,
                    "duration": None if running else seconds,
                    "hints": {"cpus": spec.cpus, "ram": spec.ram_mb, "disk": spec.disk_mb, "source": "demo"},
                    "cpu_mean": None if running else cpu_mean,
                    "cpu_peak": None if running else min(spec.cpus * 1.1, cpu_mean * rng.uniform(1.1, 1.5)),
                    "rss_peak_mb": None if running else spec.ram_mb * rng.uniform(0.5, 0.9),
                    "read_bytes": None if running else seconds * rng.uniform(1e6, 2e7),
                    "write_bytes": None
                    if running
                    else min(spec.disk_mb * 2**20 * 0.8, seconds * rng.uniform(5e5, 1e7)),
                    "net_bytes": None
                    if running
                    else seconds * spec.net_mbps * 1e6 / 8 * rng.uniform(0.5, 1.0),
                }
            )
            if failed:
                self.failures += 1
                self.retries += 1
                queued = end + timedelta(minutes=5)  # retry_delay
                start = queued + timedelta(seconds=rng.lognormvariate(1.5, 0.6))
        return end


def generate_history(
    store: Any,
    *,
    days: int = 28,
    now: datetime | None = None,
    seed: int = 7,
    collector_name: str = "default",
) -> dict[str, Any]:
    """Write ``days`` of generated history ending at ``now`` into ``store``; return what was written.

    :param store: the ProfileStore.
    :param days: length of the history (21-28 shows weekly and daily cycles).
    :param now: end of the history (default: now, floored to the minute).
    :param seed: random seed (same seed and ``now``: same history).
    :param collector_name: the coverage the generated history marks as observed.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    start = (now - timedelta(days=days)).replace(minute=0)
    rng = random.Random(seed)
    writer = _Writer(rng, start, now)
    weekend_rng = random.Random(f"{seed}-weekend-partner-syncs")
    day = start.replace(hour=0)
    while day < now:
        weekday = day.weekday() < 5
        for hour in range(24):
            writer.run(DAGS["etl_hourly_ingest"], day + timedelta(hours=hour, minutes=5), "scheduled", None)
            # Every day, weekends too: partners publish daily, and the demo's slot-bound pool must be
            # slot-bound whenever it runs (a weekday-only sync left a Sunday evening's recent days
            # without one, and the demo found etl-workers cpu-bound). Weekend syncs draw from their
            # own stream, so every other run of a seeded history stays as it was.
            if 7 <= hour <= 19:
                main, writer.rng = writer.rng, (writer.rng if weekday else weekend_rng)
                writer.run(
                    DAGS["etl_partner_sync"], day + timedelta(hours=hour, minutes=35), "scheduled", None
                )
                writer.rng = main
        writer.run(DAGS["etl_nightly_warehouse"], day + timedelta(hours=1), "scheduled", None, load=2.0)
        writer.run(DAGS["ml_nightly_retrain"], day + timedelta(hours=2), "scheduled", None)
        if weekday:
            writer.run(DAGS["reporting_daily"], day + timedelta(hours=6), "scheduled", None)
        if _is_month_end(day):
            for hour in range(8, 20, 2):
                writer.run(
                    DAGS["reporting_month_end"], day + timedelta(hours=hour), "scheduled", None, load=3.0
                )
        for team in TEAMS.values():
            for user in team["users"]:
                sessions = team["sessions"] * (1.0 if weekday else 0.1)
                for _ in range(_poisson(rng, sessions)):
                    _session(writer, rng, team, user, day)
        day += timedelta(days=1)
    store.upsert_dag_runs(writer.dag_runs)
    store.upsert_task_runs(writer.task_runs)
    extend_coverage(store, collector_name, start, now)
    return {
        "generated": True,
        "start": start.isoformat(),
        "end": now.isoformat(),
        "days": days,
        "seed": seed,
        "dag_runs": len(writer.dag_runs),
        "task_runs": len(writer.task_runs),
        "users": sorted({u for t in TEAMS.values() for u in t["users"]}),
        "dags": sorted(DAGS),
        "queues": list(DEMO_QUEUES),
        "failed_tries": writer.failures,
        "retries": writer.retries,
    }


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: small means only.
    import math

    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _session(writer: _Writer, rng: random.Random, team: dict[str, Any], user: str, day: datetime) -> None:
    # Office hours 09-18 UTC with a late-morning and an early-afternoon bump.
    hour = min(max(rng.gauss(rng.choice((10.5, 14.5)), 1.5), 9.0), 17.5)
    when = day + timedelta(hours=hour)
    dag_id = _pick(rng, team["first"])
    for _ in range(8):
        writer.run(DAGS[dag_id], when, "manual", user)
        following = _pick(rng, team["next"].get(dag_id, {"<end>": 1.0}))
        if following == "<end>":
            return
        dag_id = following
        when += timedelta(minutes=rng.uniform(8, 45))

"""``bench live``'s seeded past: days of the same DAGs' runs, as a deployment that has run for weeks has.

Generated from the workload's own generator and seed, for each policy's copy of every DAG: scheduled
runs at their cron times, user triggers at seeded Poisson times (``live_workload._user_triggers`` over
the past days, at the run's rate), each task as long as its live try will hold (the template's seconds
times the same seeded factor of the same key, see ``live_workload.DAG_HEADER``) and using what the
task holds (the template's memory, the CPU share it burns). They go into the store through the
product's own API, as the records the profiler (``dag_runs``, ``task_runs``) and the worker listener
(the try's usage aggregates) write; then the product's profiling refresh builds the demand series
and summaries from them, as the profiler would have after each pass. Per-sample usage rows are left
out: without them the demand builder spreads each try's aggregates over the try, and weeks of
5-second samples would take minutes to write.

The past ends ``quiet`` before now: nothing ran in the last hour, so every policy starts from zero
workers, as the benchmark asks, whatever the rule (an autoscaler still holding the last run's workers
would start ahead).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow_predictive_tools.bench import live_workload as lw

#: The seconds between one stage's last task ending and the next stage's tasks starting, and between
#: a task being queued and starting: a worker that is already up (the past had its workers running).
STAGE_GAP_S = 2.0
QUEUE_S = 1.0
OPERATOR = "_PythonDecoratedOperator"  # what the REST API reports for an ``@task``


def length_factor(dag_id: str, run_id: str, task_id: str, map_index: int, seed: int) -> float:
    """The seeded length factor of a task of a run, the same as the live DAG's ``hold`` computes."""
    key = f"{dag_id}|{run_id}|{task_id}|{map_index}|{seed}"
    return 0.8 + 0.4 * int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def past_runs(
    workload: lw.Workload, start: datetime, end: datetime, triggers_per_hour: float
) -> list[tuple[datetime, lw.DagSpec, str, str | None]]:
    """(start, DAG, run id, triggering user) of every run in ``[start, end)``, oldest first.

    :param workload: the live workload (its DAGs, their cron times, its seed).
    :param start: the past's first moment.
    :param end: the past's end (runs start before it).
    :param triggers_per_hour: the user triggers' rate (the live run's).
    """
    runs: list[tuple[datetime, lw.DagSpec, str, str | None]] = []
    for dag in workload.dags:
        if dag.period_minutes is None:
            continue
        minutes = [int(m) for m in lw.cron_minutes(dag, workload.start).split()[0].split(",")]
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            for minute in minutes:
                at = hour + timedelta(minutes=minute)
                if start <= at < end:
                    runs.append((at, dag, f"scheduled__{at.isoformat()}", None))
            hour += timedelta(hours=1)
    adhoc = {d.dag_id: d for d in workload.dags if d.period_minutes is None}
    if adhoc:
        minutes = int((end - start).total_seconds() // 60)
        for trig in lw._user_triggers(start, minutes, workload.seed, triggers_per_hour):
            if trig.dag_id in adhoc:
                runs.append((trig.at, adhoc[trig.dag_id], f"manual__{trig.at.isoformat()}", trig.user))
    return sorted(runs, key=lambda r: (r[0], r[1].dag_id))


def history_records(
    workload: lw.Workload,
    queues: Mapping[str, str],
    *,
    start: datetime,
    end: datetime,
    triggers_per_hour: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``task_runs`` and ``dag_runs`` records of the past, for every policy's DAG copies.

    :param workload: the live workload.
    :param queues: policy -> its queue (the DAG copy ``<dag>__<policy>`` runs there).
    :param start: the past's first moment.
    :param end: the past's end.
    :param triggers_per_hour: the user triggers' rate.
    """
    templates = {t.name: t for t in lw.TEMPLATES}
    task_runs: list[dict[str, Any]] = []
    dag_runs: list[dict[str, Any]] = []
    for at, dag, run_id, user in past_runs(workload, start, end, triggers_per_hour):
        stages = templates[dag.template].stages
        for policy, queue in queues.items():
            t, tasks = at, []
            for stage in stages:
                ends = []
                for map_index in range(stage.width) if stage.width > 1 else (-1,):
                    factor = length_factor(dag.dag_id, run_id, stage.name, map_index, workload.seed)
                    seconds = stage.seconds * factor
                    began = t + timedelta(seconds=QUEUE_S)
                    ends.append(began + timedelta(seconds=seconds))
                    tasks.append(
                        _task_run(f"{dag.dag_id}__{policy}", run_id, stage, map_index, queue, began, seconds)
                    )
                t = max(ends) + timedelta(seconds=STAGE_GAP_S)
            if t > end:
                continue  # the past holds finished runs only: none still running at its end
            task_runs += tasks
            dag_runs.append(
                {
                    "dag_id": f"{dag.dag_id}__{policy}",
                    "run_id": run_id,
                    "run_type": "manual" if user else "scheduled",
                    # Each policy's copies are the history of a deployment of their own: one person
                    # triggering the four copies at one instant would read, to the user model, as a
                    # session of four triggers in a row (with transitions from one copy to another).
                    "triggered_by": f"{user}@{policy}" if user else None,
                    "state": "success",
                    "logical_date": None if user else at,
                    "data_interval_start": None if user else at - timedelta(minutes=dag.period_minutes or 0),
                    "data_interval_end": None if user else at,
                    "start_date": at,
                    "end_date": t,
                    "assets": {"consumed": [], "produced": []},
                }
            )
    return task_runs, dag_runs


def _task_run(
    dag_id: str, run_id: str, stage: lw.StageSpec, map_index: int, queue: str, began: datetime, seconds: float
) -> dict[str, Any]:
    cpu = min(0.05, stage.cpu)  # the share of a core the live task burns (live_workload._dag_block)
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": stage.name,
        "map_index": map_index,
        "try_number": 1,
        "state": "success",
        "queue": queue,
        "pool": "default_pool",
        "pool_slots": 1,
        "operator": OPERATOR,
        "hostname": None,
        "queued_at": began - timedelta(seconds=QUEUE_S),
        "start_date": began,
        "end_date": began + timedelta(seconds=seconds),
        "duration": seconds,
        # the listener's records: the task's resources and its usage aggregates
        "hints": {
            "source": "task.resources",
            "cpus": stage.cpu,
            "ram": stage.memory_mib,
            "disk": 0,
            "gpus": 0,
        },
        "cpu_mean": cpu,
        "cpu_peak": cpu,
        "rss_peak_mb": float(stage.memory_mib),
        "read_bytes": 0.0,
        "write_bytes": 0.0,
        "net_bytes": 0.0,
    }


def seed_history(
    store: Any,
    workload: lw.Workload,
    queues: Mapping[str, str],
    *,
    now: datetime,
    days: float,
    interval: timedelta,
    triggers_per_hour: float,
    quiet: timedelta = timedelta(hours=1),
    batch: int = 5000,
) -> dict[str, Any]:
    """Write ``days`` of past runs ending ``quiet`` before ``now``, then build the demand from them.

    :param store: the ProfileStore.
    :param workload: the live workload.
    :param queues: policy -> queue of the policies the control loop profiles (their pools, too).
    :param now: the seeding time (the profiler has observed everything up to it).
    :param days: how far back the past goes.
    :param interval: the demand buckets' width (the control loop's cadence).
    :param triggers_per_hour: the user triggers' rate.
    :param quiet: the idle time before ``now``.
    :param batch: records per write.
    :returns: counts, for the run's JSON.
    """
    from airflow_predictive.runtime.profile_refresh import refresh_profile
    from airflow_predictive.runtime.task_history import extend_coverage

    end = now - quiet
    start = end - timedelta(days=days)
    task_runs, dag_runs = history_records(
        workload, queues, start=start, end=end, triggers_per_hour=triggers_per_hour
    )
    for chunk in _chunks(dag_runs, batch):
        store.upsert_dag_runs(chunk)
    for chunk in _chunks(task_runs, batch):
        store.upsert_task_runs(chunk)
    # The profiler observed the whole past (its coverage), so the idle times are zero demand, not gaps.
    extend_coverage(store, "default", start, now)
    pools = sorted(set(queues.values()))
    refreshed = refresh_profile(
        store,
        interval=interval,
        start=start,
        end=now,
        queue_pools={q: q for q in pools},
        pools=pools,
        summary_days=int(days) + 1,
        now=now,
    )
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "dag_runs": len(dag_runs),
        "task_runs": len(task_runs),
        "demand_rows": refreshed.get("rows", 0),
    }


def _chunks(records: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]

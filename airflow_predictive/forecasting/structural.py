"""Structural forecast: demand of work Airflow already knows about, stage by stage, in the forecast contract.

Inputs are plain values: the upcoming-work JSON of :mod:`airflow_predictive.plugins.upcoming`
(timetables' next runs, runs in progress with task states, each task's hints and upstream tasks),
task profiles from the store's task runs, and users' trigger histories. Three sources of demand:

a. **scheduled runs not yet started**: every task of every upcoming run;
b. **runs in progress**: the tasks not finished yet, starting when their upstream tasks end;
c. **user-triggered runs**: a first-order Markov model of "which DAG a user triggers after the one
   they just triggered, and how long after" (counts from the profiler's ``users`` summary, delays from
   the store's DAG runs), weighted by the transition probability.

Task start times come from a small list-scheduling simulation that honours Airflow's limits (core
``parallelism``, Airflow pool slots, each DAG's ``max_active_tasks`` and ``max_active_runs``), run twice:
with p50 durations (the ``mean`` and ``q0.5``) and with p90 durations. Upper quantiles use each
task's envelope from its p50 start to its p90 end, so capacity is planned from the earliest plausible
start of a stage until its latest plausible end. A task's duration and usage combine its hints (its
template stage, else its Airflow ``resources`` and a default duration) with its profile, weighted by
evidence: the hints count as ``hint_runs`` runs, so from the first finished try on the measurements
pull the numbers toward what the task really uses (:func:`blend`). Besides usage, every task instance holds its
``pool_slots`` Celery task slots while it runs: known work forecasts the ``slots`` series too.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.contracts.demand import RESOURCES, series_id, validate_pool_name
from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, forecast_columns, quantile_column
from airflow_predictive.profiling.demand_series import bucket_peaks, pool_for_queue

MODEL_NAME = "structural"
DEFAULT_DURATION_S = 300.0
#: Runs' worth of evidence a task's hints count for against its measured runs: after n finished tries
#: the measurements weigh n / (n + 1). A template stage is a typical task of a kind of workflow, not
#: this task: one run of it says as much. (Issue #20: a switch at 3 runs kept 8 vCPU of hints for a
#: task that measured 0.6 cores, then dropped to 0.27.)
HINT_RUNS = 1.0
#: Per resource, what is added before taking logarithms, so a measured zero (no network) pulls a hint
#: down gradually rather than at once; in demand units (vCPU, GiB, GiB, Mbit/s), or seconds.
_LOG_FLOOR = {"cpu": 0.05, "memory": 0.05, "storage": 0.5, "network": 1.0, "duration": 1.0, "instances": 0.0}
SESSION_GAP = timedelta(hours=4)
_GIB = float(2**30)


# --------------------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class TaskProfile:
    """What one task typically takes and uses, learned from its finished tries.

    :param duration_p50_s: median duration.
    :param duration_p90_s: 90th percentile duration.
    :param usage: per resource (demand units), the median usage per task instance.
    :param runs: finished tries the profile is based on.
    :param instances: median task instances per DAG run (a mapped task's fan-out; 1 otherwise).
    :param measured: per resource, the tries whose usage was measured (absent: ``runs``).
    """

    duration_p50_s: float
    duration_p90_s: float
    usage: Mapping[str, float]
    runs: int
    instances: int = 1
    measured: Mapping[str, int] = field(default_factory=dict)


def profiles_from_task_runs(task_runs: pd.DataFrame) -> dict[tuple[str, str], TaskProfile]:
    """Per (dag_id, task_id): duration p50/p90, median usage and fan-out of successful tries.

    A mapped task's instance count is only known at run time (the serialized DAG, hence the
    upcoming-work endpoint, says just "mapped"): its history is where the fan-out is learned.

    :param task_runs: ``ProfileStore.task_runs()`` rows.
    """
    out: dict[tuple[str, str], TaskProfile] = {}
    if task_runs is None or task_runs.empty:
        return out
    done = task_runs[(task_runs["state"] == "success") & task_runs["duration"].notna()]
    for (dag_id, task_id), group in done.groupby(["dag_id", "task_id"], sort=False):
        durations = group["duration"].astype(float)
        usage: dict[str, float] = {}
        measured: dict[str, int] = {}
        for resource, column, scale in (
            ("cpu", "cpu_mean", 1.0),
            ("memory", "rss_peak_mb", 1 / 1024),
            ("storage", "write_bytes", 1 / _GIB),
        ):
            values = group[column].dropna() if column in group else pd.Series(dtype=float)
            if len(values):
                usage[resource] = float(values.median()) * scale
                measured[resource] = len(values)
        if "net_bytes" in group:
            rate = (group["net_bytes"] * 8 / 1e6 / group["duration"].clip(lower=1)).dropna()
            if len(rate):
                usage["network"] = float(rate.median())
                measured["network"] = len(rate)
        instances = 1
        if "map_index" in group and "run_id" in group:
            per_run = group.groupby("run_id")["map_index"].nunique()
            instances = max(1, round(float(per_run.median())))
        out[(dag_id, task_id)] = TaskProfile(
            duration_p50_s=float(durations.quantile(0.5)),
            duration_p90_s=float(durations.quantile(0.9)),
            usage=usage,
            runs=len(group),
            instances=instances,
            measured=measured,
        )
    return out


def blend(hint: float, measured: float, runs: float, *, floor: float, hint_runs: float = HINT_RUNS) -> float:
    """A hint and a measurement combined by how much evidence each is, as a weighted geometric mean.

    Geometric, because hints and use differ by factors (8 vCPU hinted, 0.6 used), and a weighted
    arithmetic mean would keep most of a large hint long after the task showed its real size.

    :param hint: the template's or ``resources``' value.
    :param measured: the median of the task's measured tries.
    :param runs: how many tries measured it (0: the hint alone).
    :param floor: added before the logarithm (see :data:`_LOG_FLOOR`).
    :param hint_runs: runs' worth of evidence the hint counts for.
    """
    if runs <= 0 or measured is None or math.isnan(measured):
        return hint
    weight = runs / (runs + hint_runs)
    if floor <= 0 and min(hint, measured) <= 0:
        return max(hint, measured) if weight < 0.5 else measured
    mixed = (1 - weight) * math.log(hint + floor) + weight * math.log(measured + floor)
    return max(0.0, math.exp(mixed) - floor)


@dataclass(frozen=True)
class TaskModel:
    """One task as the simulation sees it: duration p50/p90, usage per instance, placement, limits.

    :param task_id: task id.
    :param upstream: upstream task ids.
    :param pool: capacity pool (demand series pool).
    :param airflow_pool: Airflow pool (slot limit).
    :param pool_slots: slots per instance.
    :param instances: task instances (mapped tasks: the stage's parallelism).
    :param p50: median duration (s).
    :param p90: 90th percentile duration (s).
    :param usage: demand per instance per resource.
    :param source: where the numbers came from: profile, template, resources or default.
    """

    task_id: str
    upstream: tuple[str, ...]
    pool: str
    airflow_pool: str
    pool_slots: int
    instances: int
    p50: float
    p90: float
    usage: Mapping[str, float]
    source: str


def task_model(
    dag_id: str,
    hints: Mapping[str, Any],
    profiles: Mapping[tuple[str, str], TaskProfile],
    *,
    queue_pools: Mapping[str, str] | None = None,
    hint_runs: float = HINT_RUNS,
    default_duration_s: float = DEFAULT_DURATION_S,
) -> TaskModel:
    """Combine a task's hints (template or resources) with its profile, weighted by evidence.

    :param dag_id: the DAG.
    :param hints: one task of the upcoming-work JSON (``task_hints``).
    :param profiles: task profiles by (dag_id, task_id).
    :param queue_pools: ``{queue: capacity pool}`` from the pools configuration.
    :param hint_runs: runs' worth of evidence the hints count for (see :func:`blend`).
    :param default_duration_s: duration of a task with neither profile nor template.
    """
    queue = hints.get("queue") or "default"
    # The pools configuration decides where a queue runs; the template's capacity pool is the fallback.
    pool = (queue_pools or {}).get(queue) or hints.get("capacity_pool") or queue
    hinted = {
        "cpu": float(hints.get("cpu", 1.0)),
        "memory": float(hints.get("memory_gib", 0.5)),
        "storage": float(hints.get("storage_gib", 0.0)),
        "network": float(hints.get("network_mbps", 0.0)),
    }
    template_duration = hints.get("duration_s")
    p50 = p90 = float(template_duration or default_duration_s)
    source = hints.get("source", "default")
    instances = max(1, int(hints.get("parallelism") or 1))
    profile = profiles.get((dag_id, hints["task_id"]))
    if profile is not None and profile.runs > 0:
        p50, p90, instances = _with_profile(profile, hinted, p50, p90, instances, hint_runs)
        source = "profile"  # the measurements weigh at least as much as the hints from the first try
    return TaskModel(
        task_id=hints["task_id"],
        upstream=tuple(hints.get("upstream") or ()),
        pool=validate_pool_name(_pool_name(pool)),
        airflow_pool=hints.get("pool") or "default_pool",
        pool_slots=int(hints.get("pool_slots") or 1),
        instances=instances,
        p50=max(p50, 1.0),
        p90=max(p90, p50, 1.0),
        usage=hinted,
        source=source,
    )


def _with_profile(
    profile: TaskProfile, usage: dict[str, float], p50: float, p90: float, instances: int, hint_runs: float
) -> tuple[float, float, int]:
    """Blend the profile into the hinted ``usage`` (in place), durations and fan-out."""

    def mix(key: str, hint: float, measured: float, runs: float = profile.runs) -> float:
        return blend(hint, measured, runs, floor=_LOG_FLOOR[key], hint_runs=hint_runs)

    for resource, value in profile.usage.items():
        usage[resource] = mix(
            resource, usage.get(resource, 0.0), value, profile.measured.get(resource, profile.runs)
        )
    measured_p90 = max(profile.duration_p90_s, profile.duration_p50_s)
    return (
        mix("duration", p50, profile.duration_p50_s),
        mix("duration", p90, measured_p90),
        max(1, round(mix("instances", instances, profile.instances))),
    )


def _pool_name(name: str) -> str:

    return pool_for_queue(name)


# ----------------------------------------------------------------------------------------- simulation


@dataclass
class _Run:
    key: str
    dag_id: str
    origin: str  # "scheduled" (upcoming or in-progress scheduled), "adhoc" (manual in progress), "markov"
    start: float  # epoch seconds the run may start
    tasks: dict[str, TaskModel]
    state: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # in-progress task states
    weight: float = 1.0

    @property
    def uid(self) -> str:
        # Run ids are unique per DAG only ("scheduled__2026-03-10T06:00:00+00:00" in many DAGs).
        return f"{self.dag_id}/{self.key}"


@dataclass(frozen=True)
class Interval:
    """One task instance's predicted occupancy.

    :param dag_id: DAG.
    :param run: run key.
    :param task_id: task.
    :param origin: scheduled, adhoc or markov.
    :param start: start (epoch s).
    :param end: end (epoch s).
    :param pool: capacity pool.
    :param usage: demand per resource.
    :param weight: probability the run happens (Markov runs < 1).
    :param slots: Celery task slots the instance holds while it runs (its ``pool_slots``).
    """

    dag_id: str
    run: str
    task_id: str
    origin: str
    start: float
    end: float
    pool: str
    usage: Mapping[str, float]
    weight: float = 1.0
    slots: float = 0.0


@dataclass(frozen=True)
class Limits:
    """Airflow's concurrency limits the simulation honours.

    :param parallelism: ``[core] parallelism``.
    :param pools: Airflow pool slots by pool name.
    :param max_active_tasks: per DAG.
    :param max_active_runs: per DAG.
    """

    parallelism: int = 32
    pools: Mapping[str, int] = field(default_factory=dict)
    max_active_tasks: Mapping[str, int] = field(default_factory=dict)
    max_active_runs: Mapping[str, int] = field(default_factory=dict)


def simulate(runs: Sequence[_Run], limits: Limits, now: float, *, quantile: str) -> list[Interval]:
    """List-schedule every task instance of ``runs`` from ``now`` under Airflow's limits.

    :param runs: runs with their tasks and (for runs in progress) task states.
    :param limits: Airflow limits.
    :param now: epoch seconds.
    :param quantile: ``p50`` or ``p90``: which duration each task takes.
    """
    counter = 0
    events: list[tuple[float, int, str, Any]] = []  # (time, seq, kind, payload)

    def push(t: float, kind: str, payload: Any) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (t, counter, kind, payload))

    running_tasks = 0
    dag_tasks: dict[str, int] = defaultdict(int)
    pool_used: dict[str, int] = defaultdict(int)
    active_runs: dict[str, set[str]] = defaultdict(set)
    waiting_runs: dict[str, list[_Run]] = defaultdict(list)
    remaining: dict[str, dict[str, int]] = {}  # run -> task -> unfinished instances
    finished: dict[str, set[str]] = {}
    ready: list[tuple[float, int, _Run, TaskModel]] = []
    out: list[Interval] = []

    def duration(task: TaskModel) -> float:
        return task.p50 if quantile == "p50" else task.p90

    def occupy(run: _Run, task: TaskModel, start: float, end: float) -> None:
        nonlocal running_tasks
        running_tasks += 1
        dag_tasks[run.dag_id] += 1
        pool_used[task.airflow_pool] += task.pool_slots
        out.append(
            Interval(
                run.dag_id,
                run.key,
                task.task_id,
                run.origin,
                start,
                end,
                task.pool,
                task.usage,
                run.weight,
                float(task.pool_slots),
            )
        )
        push(end, "end", (run, task))

    def make_ready(run: _Run, t: float) -> None:
        done = finished[run.uid]
        for task in run.tasks.values():
            if task.task_id in done or task.task_id in started[run.uid]:
                continue
            if all(u in done or u not in run.tasks for u in task.upstream):
                started[run.uid].add(task.task_id)
                for _ in range(remaining[run.uid][task.task_id]):
                    ready.append((t, len(ready), run, task))

    started: dict[str, set[str]] = defaultdict(set)

    def activate(run: _Run, t: float) -> None:
        active_runs[run.dag_id].add(run.uid)
        remaining[run.uid] = {tid: task.instances for tid, task in run.tasks.items()}
        finished[run.uid] = set()
        for tid, info in run.state.items():
            if tid not in run.tasks:
                continue
            state = info.get("state")
            task = run.tasks[tid]
            if state == "done":
                finished[run.uid].add(tid)
                remaining[run.uid][tid] = 0
            elif state == "running":
                began = _epoch(info.get("start_date")) or t
                elapsed = max(t - began, 0.0)
                # Already past its typical duration: expect it to end within a tenth of it more.
                end = t + max(duration(task) - elapsed, 0.1 * duration(task))
                started[run.uid].add(tid)
                for _ in range(task.instances):
                    occupy(run, task, t, end)
        if not run.tasks or len(finished[run.uid]) == len(run.tasks):
            active_runs[run.dag_id].discard(run.uid)
            return
        make_ready(run, t)

    for run in sorted(runs, key=lambda r: r.start):
        if run.state:  # in progress: active now, counted against max_active_runs
            activate(run, now)
        else:
            push(max(run.start, now), "arrive", run)

    def try_start(t: float) -> None:
        ready.sort(key=lambda item: (item[0], item[1]))
        keep = []
        for item in ready:
            _, _, run, task = item
            pool_cap = limits.pools.get(task.airflow_pool, math.inf)
            if (
                running_tasks < limits.parallelism
                and dag_tasks[run.dag_id] < limits.max_active_tasks.get(run.dag_id, 16)
                and pool_used[task.airflow_pool] + task.pool_slots <= max(pool_cap, task.pool_slots)
            ):
                occupy(run, task, t, t + duration(task))
            else:
                keep.append(item)
        ready[:] = keep

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            run = payload
            if len(active_runs[run.dag_id]) < limits.max_active_runs.get(run.dag_id, 16):
                activate(run, t)
            else:
                waiting_runs[run.dag_id].append(run)
        else:
            run, task = payload
            running_tasks -= 1
            dag_tasks[run.dag_id] -= 1
            pool_used[task.airflow_pool] -= task.pool_slots
            remaining[run.uid][task.task_id] -= 1
            if remaining[run.uid][task.task_id] == 0:
                finished[run.uid].add(task.task_id)
                if len(finished[run.uid]) == len(run.tasks):
                    active_runs[run.dag_id].discard(run.uid)
                    if waiting_runs[run.dag_id]:
                        activate(waiting_runs[run.dag_id].pop(0), t)
                else:
                    make_ready(run, t)
        # Start whatever fits once every event at this instant is processed.
        if not events or events[0][0] > t:
            try_start(t)
    return out


def _epoch(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return stamp.timestamp()


# ---------------------------------------------------------------------------------------- user model


@dataclass(frozen=True)
class Transition:
    """What a user triggers after ``after``: probability and typical delay.

    :param after: the DAG just triggered.
    :param dag_id: the DAG triggered next.
    :param probability: share of ``after`` triggers followed by ``dag_id`` within a session.
    :param delay_s: median delay between the two triggers.
    """

    after: str
    dag_id: str
    probability: float
    delay_s: float


def user_transitions(
    dag_runs: pd.DataFrame,
    users: Mapping[str, Any] | None = None,
    session_gap: timedelta = SESSION_GAP,
) -> dict[str, dict[str, list[Transition]]]:
    """Per user, per DAG: the next DAGs the user triggers, with probability and median delay.

    Counts come from the profiler's ``users`` summary when given (``transitions``), else from
    ``dag_runs``; delays always from ``dag_runs`` (consecutive manual triggers within a session).

    :param dag_runs: ``ProfileStore.dag_runs()`` rows (``triggered_by``, ``start_date``, ``dag_id``).
    :param users: ``ProfileStore.summaries("users")``.
    :param session_gap: a longer pause ends a session.
    """
    delays: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    if dag_runs is not None and not dag_runs.empty:
        manual = dag_runs[dag_runs["triggered_by"].notna() & dag_runs["start_date"].notna()]
        for user, group in manual.sort_values("start_date").groupby("triggered_by"):
            dags, starts = group["dag_id"].tolist(), pd.to_datetime(group["start_date"], utc=True).tolist()
            for i in range(1, len(dags)):
                gap = (starts[i] - starts[i - 1]).total_seconds()
                if gap <= session_gap.total_seconds():
                    delays[(user, dags[i - 1], dags[i])].append(gap)
                    row = counts[user][dags[i - 1]]
                    row[dags[i]] = row.get(dags[i], 0) + 1
                else:
                    row = counts[user][dags[i - 1]]
                    row["<end>"] = row.get("<end>", 0) + 1
    for user, payload in (users or {}).items():
        if isinstance(payload, Mapping) and payload.get("transitions"):
            counts[user] = {a: dict(b) for a, b in payload["transitions"].items()}
    out: dict[str, dict[str, list[Transition]]] = {}
    for user, table in counts.items():
        for after, nexts in table.items():
            total = sum(nexts.values())
            for dag_id, count in nexts.items():
                if dag_id == "<end>" or not total:
                    continue
                gaps = delays.get((user, after, dag_id)) or [900.0]
                out.setdefault(user, {}).setdefault(after, []).append(
                    Transition(after, dag_id, count / total, float(np.median(gaps)))
                )
    return out


def last_triggers(
    dag_runs: pd.DataFrame, now: datetime, session_gap: timedelta = SESSION_GAP
) -> dict[str, tuple[str, float]]:
    """Per user with an open session at ``now``: the DAG they triggered last and when (epoch s).

    :param dag_runs: ``ProfileStore.dag_runs()`` rows.
    :param now: the forecast time.
    :param session_gap: a longer pause ends a session.
    """
    if dag_runs is None or dag_runs.empty:
        return {}
    manual = dag_runs[dag_runs["triggered_by"].notna() & dag_runs["start_date"].notna()].copy()
    manual["start_date"] = pd.to_datetime(manual["start_date"], utc=True)
    manual = manual[manual["start_date"] <= pd.Timestamp(now)]
    out = {}
    for user, group in manual.groupby("triggered_by"):
        row = group.sort_values("start_date").iloc[-1]
        if pd.Timestamp(now) - row["start_date"] <= session_gap:
            out[user] = (row["dag_id"], row["start_date"].timestamp())
    return out


# ------------------------------------------------------------------------------------------ forecast


@dataclass
class StructuralForecast:
    """The structural forecast by origin, each a frame in the forecast contract.

    :param scheduled: demand of scheduled runs (upcoming, and in progress).
    :param adhoc: demand of manually triggered runs in progress and of Markov-predicted triggers.
    :param intervals: the p50 task intervals (for the UI and tests: which stage starts when).
    :param sources: per (dag_id, task_id), where its numbers came from.
    """

    scheduled: pd.DataFrame
    adhoc: pd.DataFrame
    intervals: list[Interval]
    sources: dict[tuple[str, str], str]

    def total(self) -> pd.DataFrame:
        """Scheduled plus ad-hoc demand in one frame (the structural forecast on its own)."""
        return add_frames(self.scheduled, self.adhoc, model=MODEL_NAME)


def structural_forecast(
    upcoming: Mapping[str, Any],
    *,
    now: datetime,
    horizon: timedelta,
    interval: timedelta = timedelta(minutes=5),
    profiles: Mapping[tuple[str, str], TaskProfile] | None = None,
    dag_runs: pd.DataFrame | None = None,
    users: Mapping[str, Any] | None = None,
    queue_pools: Mapping[str, str] | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    hint_runs: float = HINT_RUNS,
    pools: Sequence[str] | None = None,
) -> StructuralForecast:
    """Forecast the demand of known future work, per capacity pool and resource, in the forecast contract.

    :param upcoming: the upcoming-work JSON (``GET /predictive/api/upcoming``).
    :param now: forecast time.
    :param horizon: how far ahead.
    :param interval: bucket width (the demand series' interval).
    :param profiles: task profiles (:func:`profiles_from_task_runs`).
    :param dag_runs: the store's DAG runs (for the user Markov model); None disables it.
    :param users: the profiler's ``users`` summary (transition counts).
    :param queue_pools: ``{queue: capacity pool}``.
    :param quantiles: quantile levels of the frame.
    :param hint_runs: runs' worth of evidence a task's hints count for (see :func:`blend`).
    :param pools: always emit these pools' series (zeros when no known work), so a pool's forecast exists.
    """
    profiles = profiles or {}
    now = now.astimezone(UTC)
    t_now = now.timestamp()
    dags = {d["dag_id"]: d for d in upcoming.get("dags", [])}
    models: dict[str, dict[str, TaskModel]] = {}
    sources: dict[tuple[str, str], str] = {}
    for dag_id, dag in dags.items():
        models[dag_id] = {}
        for hints in dag.get("tasks", []):
            model = task_model(dag_id, hints, profiles, queue_pools=queue_pools, hint_runs=hint_runs)
            models[dag_id][model.task_id] = model
            sources[(dag_id, model.task_id)] = model.source
    raw_limits = upcoming.get("limits") or {}
    limits = Limits(
        parallelism=int(raw_limits.get("parallelism") or 32),
        pools={
            k: int(v) for k, v in (raw_limits.get("pools") or {}).items() if v is not None and int(v) >= 0
        },
        max_active_tasks={d: int(x.get("max_active_tasks") or 16) for d, x in dags.items()},
        max_active_runs={d: int(x.get("max_active_runs") or 16) for d, x in dags.items()},
    )
    end = t_now + horizon.total_seconds()
    runs: list[_Run] = []
    for dag_id, dag in dags.items():
        for run in dag.get("running", []):
            origin = "scheduled" if "scheduled" in str(run.get("run_type", "")) else "adhoc"
            runs.append(_Run(run["run_id"], dag_id, origin, t_now, models[dag_id], run.get("tasks") or {}))
            if not runs[-1].state:  # queued run with no task instances yet: starts now
                runs[-1].state = {}
        for i, run in enumerate(dag.get("upcoming", [])):
            start = _epoch(run["run_after"])
            if start is not None and start <= end:
                runs.append(_Run(f"upcoming-{i}", dag_id, "scheduled", start, models[dag_id]))
    markov = _markov_runs(dag_runs, users, models, now, end) if dag_runs is not None else []
    p50 = simulate(runs, limits, t_now, quantile="p50")
    p90 = simulate(runs, limits, t_now, quantile="p90")
    # Predicted triggers are possibilities, not work: they do not take slots from known work.
    unlimited = Limits(parallelism=10**9)
    p50 += simulate(markov, unlimited, t_now, quantile="p50")
    p90 += simulate(markov, unlimited, t_now, quantile="p90")
    grid = _grid(now, horizon, interval)
    pool_names = sorted({i.pool for i in p50} | set(pools or ()))
    frames = {
        origin: _to_frame(
            [i for i in p50 if (i.origin == "scheduled") == (origin == "scheduled")],
            [i for i in p90 if (i.origin == "scheduled") == (origin == "scheduled")],
            grid,
            interval,
            pool_names,
            quantiles,
            now,
        )
        for origin in ("scheduled", "adhoc")
    }
    return StructuralForecast(frames["scheduled"], frames["adhoc"], p50, sources)


def _markov_runs(
    dag_runs: pd.DataFrame,
    users: Mapping[str, Any] | None,
    models: Mapping[str, Mapping[str, TaskModel]],
    now: datetime,
    end: float,
) -> list[_Run]:
    transitions = user_transitions(dag_runs, users)
    runs = []
    for user, (dag_id, at) in last_triggers(dag_runs, now).items():
        for step in transitions.get(user, {}).get(dag_id, []):
            start = at + step.delay_s
            # A next trigger whose typical delay has passed did not come when the user's habit said:
            # it is no work at ``now``. Moved to ``now``, every open session's overdue step landed in
            # the same bucket at full weight (the live benchmark's first cycle after a week of seeded
            # history planned 39 slots of them, its pool's ceiling).
            if start < now.timestamp():
                continue
            if step.dag_id in models and start <= end:
                runs.append(
                    _Run(
                        f"markov-{user}-{step.dag_id}",
                        step.dag_id,
                        "markov",
                        start,
                        dict(models[step.dag_id]),
                        weight=step.probability,
                    )
                )
    return runs


def _grid(now: datetime, horizon: timedelta, interval: timedelta) -> np.ndarray:
    step = interval.total_seconds()
    first = math.floor(now.timestamp() / step) * step
    count = max(1, math.ceil((now.timestamp() + horizon.total_seconds() - first) / step))
    return first + step * np.arange(count)


def _accumulate(
    intervals: Sequence[Interval], grid: np.ndarray, step: float, pools: Sequence[str], weighted: str
) -> dict[tuple[str, str], np.ndarray]:
    """Time-weighted demand per bucket (a task using 2 vCPU for half a bucket adds 1.0).

    Besides usage, every task instance holds its ``pool_slots`` Celery slots while it runs (a mapped
    task: each of its instances), so known work forecasts the ``slots`` series too: as the bucket's
    peak, like the observed series (:func:`~airflow_predictive.profiling.demand_series.bucket_peaks`).
    """
    out = {(p, r): np.zeros(len(grid)) for p in pools for r in RESOURCES}
    held: list[tuple[int, float, float, float]] = []
    for item in intervals:
        # For a quantile, a predicted run counts fully when it happens with probability above 1 - level.
        weight = item.weight if weighted == "mean" else float(item.weight >= 1.0 - float(weighted))
        if weight == 0.0 or item.end <= grid[0]:
            continue
        lo = np.clip(item.start, grid, grid + step)
        hi = np.clip(item.end, grid, grid + step)
        share = (hi - lo) / step
        for resource, value in item.usage.items():
            if value:
                out[(item.pool, resource)] += share * value * weight
        if item.slots:
            held.append((pools.index(item.pool), item.start, item.end, item.slots * weight))
    if held:
        index, start, end, value = (np.array(column, dtype=float) for column in zip(*held, strict=True))
        peaks = bucket_peaks(index.astype(int), start, end, value, grid[0], step, len(grid), len(pools))
        for i, pool in enumerate(pools):
            out[(pool, "slots")] = peaks[i]
    return out


def _to_frame(
    p50: Sequence[Interval],
    p90: Sequence[Interval],
    grid: np.ndarray,
    interval: timedelta,
    pools: Sequence[str],
    quantiles: Sequence[float],
    now: datetime,
) -> pd.DataFrame:
    step = interval.total_seconds()
    by_task_p90 = {(i.dag_id, i.run, i.task_id): i for i in p90}
    # Envelope: from the earliest plausible start (p50 schedule) to the latest plausible end (p90).
    envelope = [
        Interval(**{**i.__dict__, "end": max(i.end, by_task_p90.get((i.dag_id, i.run, i.task_id), i).end)})
        for i in p50
    ]
    mean = _accumulate(p50, grid, step, pools, "mean")
    columns: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for level in quantiles:
        median = _accumulate(p50, grid, step, pools, str(level))
        if level <= 0.5:
            columns[quantile_column(level)] = median
        else:
            upper = _accumulate(envelope, grid, step, pools, str(level))
            columns[quantile_column(level)] = {k: np.maximum(v, median[k]) for k, v in upper.items()}
    # Quantiles never decrease with the level.
    previous = None
    for level in sorted(quantiles):
        column = quantile_column(level)
        if previous is not None:
            columns[column] = {k: np.maximum(v, previous[k]) for k, v in columns[column].items()}
        previous = columns[column]
    rows = []
    ts = pd.to_datetime(grid, unit="s", utc=True)
    for key in mean:
        frame = pd.DataFrame({"series_id": series_id(*key), "ts": ts, "mean": mean[key]})
        for column, values in columns.items():
            frame[column] = values[key]
        rows.append(frame)
    if not rows:
        return pd.DataFrame(columns=forecast_columns(tuple(quantiles)))
    frame = pd.concat(rows, ignore_index=True)
    frame["model"] = MODEL_NAME
    frame["fallback"] = ""
    frame["issued_at"] = pd.Timestamp(now)
    return frame[forecast_columns(tuple(quantiles))]


def add_frames(*frames: pd.DataFrame, model: str) -> pd.DataFrame:
    """Sum forecast frames per (series_id, ts): means add, and so do quantiles (comonotone, conservative).

    :param frames: frames in the forecast contract.
    :param model: model name of the result.
    """
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=forecast_columns())
    value_columns = [c for c in frames[0].columns if c == "mean" or c.startswith("q")]
    combined = pd.concat([f[["series_id", "ts", *value_columns]] for f in frames], ignore_index=True)
    out = combined.groupby(["series_id", "ts"], as_index=False)[value_columns].sum()
    out["model"] = model
    out["fallback"] = ""
    out["issued_at"] = max(pd.Timestamp(f["issued_at"].iloc[0]) for f in frames)
    return out

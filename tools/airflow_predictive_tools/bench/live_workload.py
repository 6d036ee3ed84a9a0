"""The live benchmark's workload: workflow templates, DAGs bound to them, and who triggers what when.

Pure: from a seed, a start time and a length, the same workload for every policy. Each policy gets its
own copy of every DAG (``<dag>__<policy>``), bound to the policy's queue, so the policies run side by
side on one Airflow and see the same runs at the same times (see ``live.py`` for why side by side).

- **Scheduled** DAGs (cron, staggered from the start, several runs an hour) and **user-triggered**
  ones (the demo organisation's people, at seeded random times).
- Stages of different sizes with a mapped fan-out; every task holds memory and a little CPU for
  tens of seconds to a few minutes (``LiveTask``); its length varies by a seeded factor that is the
  same for the same task of the same run in every policy's copy.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from airflow_predictive_tools.demo.history import TEAMS


@dataclass(frozen=True)
class StageSpec:
    """One stage of a workflow template.

    :param name: stage (and task) name.
    :param seconds: typical duration.
    :param width: parallel task instances (a mapped fan-out when above 1).
    :param cpu: vCPUs each task holds (what the template says; the task burns a share of it).
    :param memory_mib: memory each task holds.
    """

    name: str
    seconds: int
    width: int = 1
    cpu: float = 0.25
    memory_mib: int = 128


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    description: str
    stages: tuple[StageSpec, ...]


TEMPLATES = (
    TemplateSpec(
        "live_etl",
        "Extract, transform in a fan-out of four, load.",
        (StageSpec("extract", 45), StageSpec("transform", 90, width=4), StageSpec("load", 30)),
    ),
    TemplateSpec(
        "live_report",
        "Two queries side by side, then a long render.",
        (StageSpec("query", 60, width=2), StageSpec("render", 120, memory_mib=192)),
    ),
    # the test suite's short version: the same shape, seconds long
    TemplateSpec(
        "live_short",
        "Extract, then a fan-out of two.",
        (StageSpec("extract", 15), StageSpec("transform", 15, width=2)),
    ),
)
_BY_NAME = {t.name: t for t in TEMPLATES}


@dataclass(frozen=True)
class DagSpec:
    """A workload DAG: its template and, when scheduled, its period and first run after the start.

    :param dag_id: the DAG id before the policy suffix.
    :param template: the workflow template its tasks are bound to.
    :param period_minutes: minutes between scheduled runs (a divisor of 60); None: triggered by users.
    :param offset_minutes: first scheduled run, minutes after the workload starts.
    """

    dag_id: str
    template: str
    period_minutes: int | None = None
    offset_minutes: int = 0


@dataclass(frozen=True)
class Trigger:
    """A user triggers a DAG at ``at`` (every policy's copy, with the same run id)."""

    at: datetime
    dag_id: str
    user: str
    run_id: str


@dataclass
class Workload:
    """What runs: DAGs, the user triggers, and when it starts and ends."""

    start: datetime
    minutes: int
    seed: int
    dags: list[DagSpec]
    triggers: list[Trigger] = field(default_factory=list)

    def scheduled_runs(self) -> list[tuple[datetime, str]]:
        """(run time, dag id) of every scheduled run inside the workload's window."""
        end = self.start + timedelta(minutes=self.minutes)
        out = []
        for dag in self.dags:
            if dag.period_minutes is None:
                continue
            at = self.start + timedelta(minutes=dag.offset_minutes)
            while at < end:
                out.append((at, dag.dag_id))
                at += timedelta(minutes=dag.period_minutes)
        return sorted(out)

    def peak_tasks(self) -> int:
        """Most tasks running at once if every run starts on time and every stage takes its typical
        duration: what ``static`` is sized for."""
        events: list[tuple[float, int]] = []
        starts = [(at, d) for at, d in self.scheduled_runs()] + [(t.at, t.dag_id) for t in self.triggers]
        by_id = {d.dag_id: d for d in self.dags}
        for at, dag_id in starts:
            t = at.timestamp()
            for stage in _BY_NAME[by_id[dag_id].template].stages:
                events += [(t, stage.width), (t + stage.seconds, -stage.width)]
                t += stage.seconds
        level = peak = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            level += delta
            peak = max(peak, level)
        return peak


#: The full benchmark's DAGs: three scheduled ETLs and reports, staggered; two that people trigger.
FULL_DAGS = (
    DagSpec("orders_etl", "live_etl", period_minutes=15, offset_minutes=1),
    DagSpec("events_etl", "live_etl", period_minutes=20, offset_minutes=6),
    DagSpec("kpi_report", "live_report", period_minutes=30, offset_minutes=11),
    DagSpec("adhoc_query", "live_report"),
    DagSpec("adhoc_etl", "live_etl"),
)
#: The short version (the default test suite): one scheduled DAG, its first run right at the start.
SHORT_DAGS = (DagSpec("orders_etl", "live_short", period_minutes=30, offset_minutes=0),)


def build_workload(
    start: datetime, minutes: int, seed: int, *, short: bool = False, triggers_per_hour: float = 12.0
) -> Workload:
    """The workload of a run: same seed, same runs at the same offsets from ``start``.

    :param start: when the workload starts (aligned to a minute).
    :param minutes: its length.
    :param seed: random seed of the user triggers.
    :param short: one scheduled DAG and no user triggers (the test suite's version).
    :param triggers_per_hour: mean rate of user triggers over all users.
    """
    if start.second or start.microsecond:
        raise ValueError(f"the workload start {start.isoformat()} must be on a whole minute")
    dags = list(SHORT_DAGS if short else FULL_DAGS)
    workload = Workload(start=start, minutes=minutes, seed=seed, dags=dags)
    if not short:
        workload.triggers = _user_triggers(start, minutes, seed, triggers_per_hour)
    return workload


def _user_triggers(start: datetime, minutes: int, seed: int, per_hour: float) -> list[Trigger]:
    """Poisson arrivals (seeded) of the demo organisation's people triggering the ad-hoc DAGs."""
    rng = random.Random(seed)
    users = sorted(u for team in TEAMS.values() for u in team["users"])
    adhoc = ["adhoc_query", "adhoc_etl"]
    out: list[Trigger] = []
    t = rng.expovariate(per_hour / 60.0)
    # stop early enough that a triggered run can still finish inside the drain the run allows
    while t < minutes - 2:
        user = rng.choice(users)
        dag_id = rng.choice(adhoc)
        out.append(
            Trigger(start + timedelta(seconds=round(t * 60)), dag_id, user, f"user__{user}__{len(out):03d}")
        )
        t += rng.expovariate(per_hour / 60.0)
    return out


def cron_minutes(dag: DagSpec, start: datetime) -> str:
    """The cron expression of a scheduled DAG: its runs every ``period`` minutes from ``start + offset``."""
    if dag.period_minutes is None or 60 % dag.period_minutes:
        raise ValueError(f"{dag.dag_id}: the period must divide 60 minutes, got {dag.period_minutes}")
    first = (start.minute + dag.offset_minutes) % 60
    minutes = sorted({(first + k * dag.period_minutes) % 60 for k in range(60 // dag.period_minutes)})
    return f"{','.join(str(m) for m in minutes)} * * * *"


def template_yaml(template: TemplateSpec) -> str:
    """The workflow template as the provider's YAML (queue given per DAG copy, not here)."""
    lines = [f"name: {template.name}", f"description: {template.description}", "stages:"]
    for s in template.stages:
        lines += [
            f"  - name: {s.name}",
            f"    cpu: {s.cpu}",
            f"    memory: {s.memory_mib}MiB",
            f"    duration: {s.seconds}s",
        ]
        if s.width > 1:
            lines.append(f"    parallelism: {s.width}")
    return "\n".join(lines) + "\n"


DAG_HEADER = '''"""Workload DAGs of ``airflow-predictive bench live`` (generated): one copy per policy and queue."""

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import DAG, get_current_context, task

from airflow_predictive.templates import stage_kwargs

TEMPLATES = Path({templates!r})
START = datetime.fromisoformat({start!r})
END = datetime.fromisoformat({end!r})


def hold(seconds: int, memory_mib: int, cpu_share: float) -> None:
    """Hold memory_mib of memory and burn cpu_share of one core for about seconds (seeded per run)."""
    ctx = get_current_context()
    ti = ctx["ti"]
    key = f"{{ti.dag_id.split('__')[0]}}|{{ti.run_id}}|{{ti.task_id}}|{{ti.map_index}}|{seed}"
    factor = 0.8 + 0.4 * int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    ballast = bytearray(memory_mib * 2**20)  # noqa: F841 - held for the task's life
    end = time.monotonic() + seconds * factor
    while time.monotonic() < end:
        busy_until = time.monotonic() + 0.1 * cpu_share
        while time.monotonic() < busy_until:
            pass
        time.sleep(0.1 * (1 - cpu_share))
'''


def dag_source(
    workload: Workload, policies: list[str], templates_folder: str, queue_of: dict[str, str]
) -> str:
    """One Python file defining every workload DAG for every policy.

    :param workload: the workload.
    :param policies: the policies (one DAG copy each).
    :param templates_folder: folder of the generated templates.
    :param queue_of: policy -> the queue its pool serves.
    """
    out = [
        DAG_HEADER.format(
            templates=templates_folder,
            start=workload.start.isoformat(),
            end=(workload.start + timedelta(minutes=workload.minutes, seconds=-1)).isoformat(),
            seed=workload.seed,
        )
    ]
    for policy in policies:
        for dag in workload.dags:
            out.append(_dag_block(dag, policy, queue_of[policy], workload.start))
    return "\n".join(out)


def _dag_block(dag: DagSpec, policy: str, queue: str, start: datetime) -> str:
    template = _BY_NAME[dag.template]
    schedule = repr(cron_minutes(dag, start)) if dag.period_minutes else "None"
    # Scheduled copies run inside the workload's window only: none before it, none during the drain.
    lines = [
        "",
        "with DAG(",
        f"    dag_id={dag.dag_id + '__' + policy!r},",
        f"    schedule={schedule},",
        "    start_date=START,",
        "    end_date=END,",
        "    catchup=False,",
        "    max_active_runs=4,",
        "    max_active_tasks=32,",
        f"    tags=['live-bench', {policy!r}],",
        "):",
    ]
    previous = None
    for stage in template.stages:
        share = min(0.05, stage.cpu)  # a little real CPU: 2 cores run every policy's tasks at once
        fn = f"{dag.dag_id}_{policy.replace('-', '_')}_{stage.name}"  # a variant's dash is no identifier
        lines += [
            f"    @task(task_id={stage.name!r}, **stage_kwargs({template.name!r}, {stage.name!r}, "
            f"queue={queue!r}, templates_folder=TEMPLATES))",
            f"    def {fn}(part: int = 0) -> None:",
            f"        hold({stage.seconds}, {stage.memory_mib}, {share})",
            "",
        ]
        call = f"{fn}.expand(part=list(range({stage.width})))" if stage.width > 1 else f"{fn}()"
        lines.append(f"    {stage.name} = {call}")
        if previous:
            lines.append(f"    {previous} >> {stage.name}")
        previous = stage.name
    return "\n".join(lines) + "\n"


def first_stage(dag: DagSpec) -> str:
    """The task id of a DAG's first stage."""
    return _BY_NAME[dag.template].stages[0].name


def static_instances(workload: Workload, slots_per_instance: int) -> int:
    """Workers ``static`` holds: enough for the workload's nominal peak of tasks."""
    return max(1, math.ceil(workload.peak_tasks() / slots_per_instance))

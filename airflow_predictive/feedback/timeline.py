"""A DAG's upcoming runs as a timeline of stages, each with the capacity it is expected to hold.

Input is one DAG entry of the upcoming-work JSON (``plugins.upcoming.describe_dag``: ``upcoming`` runs
and ``tasks`` with pool, stage and resource hints); output is plain bars a chart draws. Pure: the
DAG tab and its tests build the same bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pandas as pd

#: A stage whose tasks give no duration (no template duration, never measured) is drawn this long and
#: marked "assumed": a bar of zero width would hide the stage, and a long one would run into the next
#: run of a DAG every few minutes (the control loop's own).
ASSUMED_DURATION = timedelta(minutes=1)
CAPACITY_KEYS = ("cpu", "memory_gib", "storage_gib", "network_mbps", "slots")


def stages(
    tasks: Sequence[Mapping[str, Any]], measured: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """The DAG's stages in run order, each with its offset from the run's start, duration and capacity.

    A stage is a template stage (tasks bound to the same stage run together) or, for a task without
    one, the task itself. A stage starts when every stage upstream of it has ended; its tasks run side
    by side, so its capacity is their sum (times each task's parallelism) and its duration their longest.

    :param tasks: the ``tasks`` of a DAG entry (``task_id``, ``upstream``, ``stage``, ``capacity_pool``,
        ``cpu``, ``memory_gib``, ``storage_gib``, ``network_mbps``, ``pool_slots``, ``parallelism``,
        ``duration_s``).
    :param measured: ``{task_id: seconds}`` the profiler measured (median), for tasks whose template
        gives no duration.
    """
    of_task = {t["task_id"]: t.get("stage") or t["task_id"] for t in tasks}
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        grouped.setdefault(of_task[task["task_id"]], []).append(task)
    upstream = {
        name: {of_task[u] for t in members for u in t.get("upstream", ()) if u in of_task} - {name}
        for name, members in grouped.items()
    }
    ends: dict[str, timedelta] = {}
    out = []
    for name in _run_order(upstream):
        start = max((ends[u] for u in upstream[name]), default=timedelta(0))
        duration, assumed = _duration(grouped[name], measured or {})
        ends[name] = start + duration
        out.append(
            {
                "stage": name,
                "pools": sorted({t.get("capacity_pool") or "" for t in grouped[name]} - {""}),
                "tasks": [t["task_id"] for t in grouped[name]],
                "offset": start,
                "duration": duration,
                "assumed_duration": assumed,
                **_capacity(grouped[name]),
            }
        )
    return out


def _run_order(upstream: Mapping[str, set[str]]) -> list[str]:
    # Kahn's order, ties by name so the chart's rows do not move between page loads.
    done: list[str] = []
    left = dict(upstream)
    while left:
        ready = sorted(n for n, ups in left.items() if ups <= set(done)) or sorted(left)[:1]
        done.extend(ready)
        for name in ready:
            left.pop(name)
    return done


def _duration(members: Sequence[Mapping[str, Any]], measured: Mapping[str, float]) -> tuple[timedelta, bool]:
    known = [float(t.get("duration_s") or measured.get(t["task_id"]) or 0) for t in members]
    known = [k for k in known if k > 0]
    if not known:
        return ASSUMED_DURATION, True
    return timedelta(seconds=max(known)), False


def _capacity(members: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    def total(key: str) -> float:
        return round(sum(float(t.get(key) or 0) * int(t.get("parallelism") or 1) for t in members), 3)

    return {
        "cpu": total("cpu"),
        "memory_gib": total("memory_gib"),
        "storage_gib": total("storage_gib"),
        "network_mbps": total("network_mbps"),
        "slots": total("pool_slots"),
    }


def bars(dag: Mapping[str, Any], measured: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """One bar per (upcoming run, stage): when it starts and ends, and the capacity it holds.

    :param dag: a DAG entry of the upcoming-work JSON (``upcoming`` runs, ``tasks``).
    :param measured: ``{task_id: seconds}`` measured durations (see :func:`stages`).
    """
    plan = stages(dag.get("tasks", []), measured)
    out = []
    for run in dag.get("upcoming", []):
        start = pd.Timestamp(run["run_after"])
        for stage in plan:
            begin = start + stage["offset"]
            out.append(
                {
                    "run_after": run["run_after"],
                    "stage": stage["stage"],
                    "start": begin.isoformat(),
                    "end": (begin + stage["duration"]).isoformat(),
                    "assumed_duration": stage["assumed_duration"],
                    "pools": stage["pools"],
                    **{key: stage[key] for key in CAPACITY_KEYS},
                }
            )
    return out


def interval_differs(runs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any run's data interval has a length (a cron trigger's runs have none: start = end).

    :param runs: the ``upcoming`` runs of a DAG entry.
    """
    return any(r.get("data_interval_start") != r.get("data_interval_end") for r in runs)


def measured_durations(application: Mapping[str, Any], dag_id: str) -> dict[str, float]:
    """``{task_id: median seconds}`` of one DAG from the profiler's ``application`` summary.

    :param application: the ``application`` behaviour summary (keys ``<dag_id>.<task_id>``).
    :param dag_id: the DAG.
    """
    return {
        str(v["task_id"]): float(v["duration_p50_s"])
        for v in application.values()
        if isinstance(v, Mapping) and v.get("dag_id") == dag_id and v.get("duration_p50_s")
    }

"""Behaviour summaries: what the profiler learned, as small JSON payloads kept in the store for the UI.

Four kinds (``ProfileStore.put_summaries(kind, {key: payload})``):

- ``application``: per DAG/task (key ``dag_id.task_id``): operator, runs per day, failure rate,
  duration p50/p90, CPU (cores) p50/p95, memory (RSS MB) p50/p95.
- ``data_access``: per DAG/task: mean bytes read/written, network bytes, assets consumed/produced.
- ``timing``: per pool (key ``pool:<name>``) and per user (``user:<name>``) an hour-of-week activity
  profile (168 values, Monday 00h UTC first, mean starts per week) and peak hours; per DAG
  (``dag:<id>``) the typical workflow duration.
- ``users``: per triggering user: which DAGs they trigger and at which hours, and what usually follows
  (``transitions``: counts of "DAG a then DAG b" within a session), the input of the Markov model on the
  forecasting side.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.profiling.demand_series import pool_for_queue

SESSION_GAP = timedelta(hours=4)


def _q(values: pd.Series, q: float) -> float | None:
    values = values.dropna()
    return round(float(np.quantile(values, q)), 4) if len(values) else None


def _weeks(times: pd.Series) -> float:
    times = times.dropna()
    if times.empty:
        return 1.0
    return max((times.max() - times.min()).total_seconds() / (7 * 86400), 1.0)


def hour_of_week(times: pd.Series) -> list[float]:
    """Mean events per hour-of-week slot (Monday 00:00 UTC = slot 0) over the observed weeks."""
    times = pd.to_datetime(times.dropna(), utc=True)
    counts = np.bincount((times.dt.day_of_week * 24 + times.dt.hour).to_numpy(int), minlength=168)
    return [round(float(c), 3) for c in counts / _weeks(times)]


def _peak_hours(profile: list[float], top: int = 3) -> list[int]:
    by_hour = np.asarray(profile).reshape(7, 24).sum(axis=0)
    return [int(h) for h in np.argsort(-by_hour, kind="stable")[:top] if by_hour[h] > 0]


def application_usage(task_runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per DAG/task: frequency, duration and CPU/memory percentiles.

    :param task_runs: ``ProfileStore.task_runs()`` rows.
    """
    out: dict[str, dict[str, Any]] = {}
    if task_runs.empty:
        return out
    days = max((task_runs["start_date"].max() - task_runs["start_date"].min()).total_seconds() / 86400, 1.0)
    for (dag_id, task_id), group in task_runs.groupby(["dag_id", "task_id"], sort=True):
        finished = group[group["end_date"].notna()]
        operators = group["operator"].dropna()
        out[f"{dag_id}.{task_id}"] = {
            "dag_id": dag_id,
            "task_id": task_id,
            "operator": operators.mode().iloc[0] if len(operators) else None,
            "tries": int(len(group)),
            "runs_per_day": round(len(group) / days, 3),
            "failure_rate": round(float((group["state"] == "failed").mean()), 4),
            "retries": int((group["try_number"] > 1).sum()),
            "duration_p50_s": _q(finished["duration"], 0.5),
            "duration_p90_s": _q(finished["duration"], 0.9),
            "cpu_p50": _q(group["cpu_mean"], 0.5),
            "cpu_p95": _q(group["cpu_peak"].fillna(group["cpu_mean"]), 0.95),
            "rss_mb_p50": _q(group["rss_peak_mb"], 0.5),
            "rss_mb_p95": _q(group["rss_peak_mb"], 0.95),
        }
    return out


def _assets(raw: Any) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(raw, str) or not raw:
        return {"consumed": [], "produced": []}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"consumed": [], "produced": []}
    return value if isinstance(value, dict) else {"consumed": [], "produced": []}


def data_access(task_runs: pd.DataFrame, dag_runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per DAG/task: bytes read/written, network bytes, and the assets its runs consumed/produced.

    :param task_runs: ``ProfileStore.task_runs()`` rows.
    :param dag_runs: ``ProfileStore.dag_runs()`` rows (``assets`` JSON).
    """
    produced: dict[tuple[str, str], Counter] = defaultdict(Counter)
    consumed: dict[str, Counter] = defaultdict(Counter)
    for row in dag_runs.itertuples(index=False):
        assets = _assets(getattr(row, "assets", None))
        for event in assets.get("produced", []):
            produced[(row.dag_id, event.get("task_id"))][event.get("name") or event.get("uri")] += 1
        for event in assets.get("consumed", []):
            consumed[row.dag_id][event.get("name") or event.get("uri")] += 1
    out: dict[str, dict[str, Any]] = {}
    if task_runs.empty:
        return out
    for (dag_id, task_id), group in task_runs.groupby(["dag_id", "task_id"], sort=True):

        def mean(column: str, group: pd.DataFrame = group) -> float | None:
            values = group[column].dropna()
            return round(float(values.mean()), 1) if len(values) else None

        out[f"{dag_id}.{task_id}"] = {
            "dag_id": dag_id,
            "task_id": task_id,
            "read_bytes_mean": mean("read_bytes"),
            "write_bytes_mean": mean("write_bytes"),
            "net_bytes_mean": mean("net_bytes"),
            "assets_consumed": dict(consumed.get(dag_id, {})),
            "assets_produced": dict(produced.get((dag_id, task_id), {})),
        }
    return out


def timing(
    task_runs: pd.DataFrame, dag_runs: pd.DataFrame, queue_pools: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Hour-of-week profiles per pool and per user, peak hours, typical workflow durations.

    :param task_runs: ``ProfileStore.task_runs()`` rows.
    :param dag_runs: ``ProfileStore.dag_runs()`` rows.
    :param queue_pools: ``{queue: pool}``.
    """
    out: dict[str, dict[str, Any]] = {}
    if not task_runs.empty:
        pools = task_runs["queue"].map(lambda q: pool_for_queue(q, queue_pools))
        for pool, group in task_runs.groupby(pools, sort=True):
            profile = hour_of_week(group["start_date"])
            out[f"pool:{pool}"] = {
                "pool": pool,
                "hour_of_week": profile,
                "peak_hours_utc": _peak_hours(profile),
            }
    if not dag_runs.empty:
        manual = dag_runs[dag_runs["triggered_by"].notna()]
        for user, group in manual.groupby("triggered_by", sort=True):
            profile = hour_of_week(group["start_date"])
            out[f"user:{user}"] = {
                "user": user,
                "hour_of_week": profile,
                "peak_hours_utc": _peak_hours(profile),
            }
        done = dag_runs[dag_runs["end_date"].notna() & dag_runs["start_date"].notna()]
        for dag_id, group in done.groupby("dag_id", sort=True):
            seconds = (group["end_date"] - group["start_date"]).dt.total_seconds()
            out[f"dag:{dag_id}"] = {
                "dag_id": dag_id,
                "runs": int(len(group)),
                "duration_p50_s": _q(seconds, 0.5),
                "duration_p90_s": _q(seconds, 0.9),
                "start_hours_utc": _peak_hours(hour_of_week(group["start_date"])),
            }
    return out


def user_behaviour(dag_runs: pd.DataFrame, session_gap: timedelta = SESSION_GAP) -> dict[str, dict[str, Any]]:
    """Per triggering user: DAGs triggered, hours, and transition counts "a then b" within a session.

    :param dag_runs: ``ProfileStore.dag_runs()`` rows.
    :param session_gap: a longer pause between two triggers starts a new session (no transition).
    """
    out: dict[str, dict[str, Any]] = {}
    if dag_runs.empty:
        return out
    manual = dag_runs[dag_runs["triggered_by"].notna() & dag_runs["start_date"].notna()]
    for user, group in manual.sort_values("start_date").groupby("triggered_by", sort=True):
        dags = group["dag_id"].tolist()
        starts = group["start_date"].tolist()
        transitions: dict[str, Counter] = defaultdict(Counter)
        for i in range(1, len(dags)):
            if starts[i] - starts[i - 1] <= session_gap:
                transitions[dags[i - 1]][dags[i]] += 1
            else:
                transitions[dags[i - 1]]["<end>"] += 1
        if dags:
            transitions[dags[-1]]["<end>"] += 1
        hours = Counter(int(h) for h in pd.to_datetime(group["start_date"], utc=True).dt.hour)
        out[user] = {
            "user": user,
            "runs": int(len(group)),
            "dags": dict(Counter(dags).most_common()),
            "hours_utc": {str(h): c for h, c in sorted(hours.items())},
            "weekday_share": round(
                float((pd.to_datetime(group["start_date"], utc=True).dt.day_of_week < 5).mean()), 3
            ),
            "transitions": {a: dict(b) for a, b in sorted(transitions.items())},
        }
    return out


def compute_summaries(
    task_runs: pd.DataFrame, dag_runs: pd.DataFrame, queue_pools: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """All four kinds, ``{kind: {key: payload}}``.

    :param task_runs: ``ProfileStore.task_runs()`` rows.
    :param dag_runs: ``ProfileStore.dag_runs()`` rows.
    :param queue_pools: ``{queue: pool}``.
    """
    if "start_date" in task_runs:
        # Tries that never started (still queued) have no duration or usage: they are not runs yet.
        task_runs = task_runs[task_runs["start_date"].notna()]
    return {
        "application": application_usage(task_runs),
        "data_access": data_access(task_runs, dag_runs),
        "timing": timing(task_runs, dag_runs, queue_pools),
        "users": user_behaviour(dag_runs),
    }

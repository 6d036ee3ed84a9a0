"""Normalise REST API v2 payloads into ProfileStore records, counting what is skipped and why.

Pages may lack fields, carry unknown states, or describe runs that are still running: each item becomes
one record or one counted skip reason, never an exception.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# States after which a try will not change again (its end_date and duration are final).
# ``up_for_retry`` is a try that failed and will be retried as a NEW try: this try is over.
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed", "up_for_retry"})


@dataclass
class Ingest:
    """What one pass turned into records, and what it skipped (reason -> count)."""

    task_runs: list[dict[str, Any]] = field(default_factory=list)
    dag_runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    adjusted: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def adjust(self, reason: str) -> None:
        self.adjusted[reason] += 1


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO-8601 timestamp from the API to aware UTC (``None`` when absent or malformed)."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def task_run_record(item: dict[str, Any], ingest: Ingest, *, server_now: datetime | None = None) -> None:
    """Turn one task instance (or task-instance try) answer into a ``task_runs`` record.

    :param item: one element of ``task_instances`` (or of a ``/tries`` answer).
    :param ingest: collects the record or the skip reason.
    :param server_now: the API server's clock, to clip start dates skewed into the future.
    """
    dag_id, task_id = item.get("dag_id"), item.get("task_id")
    run_id = item.get("dag_run_id") or item.get("run_id")
    if not (isinstance(dag_id, str) and isinstance(task_id, str) and isinstance(run_id, str)):
        ingest.skip("task instance without dag_id/run_id/task_id")
        return
    state = item.get("state")
    if state is not None and not isinstance(state, str):
        ingest.skip("task instance with a malformed state")
        return
    start, end = parse_time(item.get("start_date")), parse_time(item.get("end_date"))
    queued = parse_time(item.get("queued_when") or item.get("queued_dttm"))
    if start is None:
        _never_started(item, ingest, dag_id, run_id, task_id, state, queued, end, server_now)
        return
    if server_now is not None and start > server_now:
        # Worker clock ahead of the API server: keep the run, at the server's "now".
        ingest.adjust("clock skew: start in the future, clipped to server time")
        start = server_now
    if end is not None and end < start:
        ingest.adjust("clock skew: end before start, clipped to start")
        end = start
    if queued is not None and queued > start:
        queued = start
    duration = _float(item.get("duration"))
    if duration is None and end is not None:
        duration = (end - start).total_seconds()
    if state in FINISHED_STATES and end is None:
        ingest.skip("finished task instance without end_date")
        return
    if state not in FINISHED_STATES:
        end, duration = None, None  # still running: its end is unknown, not zero
    ingest.task_runs.append(
        _record(item, dag_id, run_id, task_id, state or "running", queued, start, end, duration)
    )


def _record(
    item: dict[str, Any],
    dag_id: str,
    run_id: str,
    task_id: str,
    state: str | None,
    queued: datetime | None,
    start: datetime | None,
    end: datetime | None,
    duration: float | None,
) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": _int(item.get("map_index"), -1),
        "try_number": max(_int(item.get("try_number"), 1) or 1, 1),
        "state": state,
        "queue": item.get("queue") if isinstance(item.get("queue"), str) else None,
        "pool": item.get("pool") if isinstance(item.get("pool"), str) else None,
        "pool_slots": _int(item.get("pool_slots")),
        "operator": item.get("operator") if isinstance(item.get("operator"), str) else None,
        "hostname": item.get("hostname") or None,
        "queued_at": queued,
        "start_date": start,
        "end_date": end,
        "duration": duration,
    }


def _never_started(
    item: dict[str, Any],
    ingest: Ingest,
    dag_id: str,
    run_id: str,
    task_id: str,
    state: str | None,
    queued: datetime | None,
    end: datetime | None,
    server_now: datetime | None,
) -> None:
    """A try with no start: kept when it was queued, as demand waiting for a worker (no start, no end).

    A queued try is what a pool at zero workers must scale out for (Airflow's KEDA rule counts queued
    tasks too); when it starts, the next pass's upsert (same key) replaces it. A try that finished
    without starting after it was queued (failed by ``task_queued_timeout``) is kept as well, so that
    it replaces the queued record an earlier pass stored: it waited until its end. Other tries without
    a start (never queued, or scheduled) are skipped.
    """
    if queued is None or (state != "queued" and state not in FINISHED_STATES):
        ingest.skip("task instance never started")
        return
    if server_now is not None and queued > server_now:
        ingest.adjust("clock skew: queued in the future, clipped to server time")
        queued = server_now
    if state == "queued":
        end = None  # still waiting: it counts until now
    elif end is not None and end < queued:
        end = queued
    ingest.task_runs.append(_record(item, dag_id, run_id, task_id, state, queued, None, end, None))


def dag_run_record(
    item: dict[str, Any], ingest: Ingest, assets: dict[str, list[dict[str, Any]]] | None = None
) -> None:
    """Turn one DAG run answer into a ``dag_runs`` record.

    :param item: one element of ``dag_runs``.
    :param ingest: collects the record or the skip reason.
    :param assets: ``{"consumed": [...], "produced": [...]}`` asset events of this run, if known.
    """
    dag_id, run_id = item.get("dag_id"), item.get("dag_run_id") or item.get("run_id")
    if not (isinstance(dag_id, str) and isinstance(run_id, str)):
        ingest.skip("dag run without dag_id/run_id")
        return
    user = item.get("triggering_user_name")
    ingest.dag_runs.append(
        {
            "dag_id": dag_id,
            "run_id": run_id,
            "run_type": item.get("run_type") if isinstance(item.get("run_type"), str) else None,
            "triggered_by": user if isinstance(user, str) and user else None,
            "state": item.get("state") if isinstance(item.get("state"), str) else None,
            "logical_date": parse_time(item.get("logical_date")),
            "data_interval_start": parse_time(item.get("data_interval_start")),
            "data_interval_end": parse_time(item.get("data_interval_end")),
            "start_date": parse_time(item.get("start_date")) or parse_time(item.get("queued_at")),
            "end_date": parse_time(item.get("end_date")),
            "assets": assets or {"consumed": [], "produced": []},
        }
    )

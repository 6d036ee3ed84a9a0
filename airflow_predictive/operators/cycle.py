"""What every control-loop operator agrees on: the moment a cycle stands for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def cycle_origin(now: str | None, context: Any) -> datetime:
    """The cycle's "now" in UTC: an explicit ISO ``now``, else the run's ``run_after``, else the clock.

    Forecast and evaluation of one DAG run must share it, or the evaluation scores the wrong buckets.

    :param now: ISO timestamp override (templated operator argument), or ``None``.
    :param context: the task context (may be empty outside a DAG run).
    """
    if now:
        origin = datetime.fromisoformat(str(now))
    else:
        dag_run = context.get("dag_run") if context else None
        origin = getattr(dag_run, "run_after", None) or datetime.now(UTC)
    return origin.replace(tzinfo=UTC) if origin.tzinfo is None else origin.astimezone(UTC)

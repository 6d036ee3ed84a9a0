"""How the forecast page presents stored numbers: pure functions of plain values, no I/O.

Each answers one complaint a reader had about the page (issue #20): pools nobody configured first,
charts spanning a day of mostly nothing, near-zero series drawn in micro-units as a sawtooth, behaviour
as raw arrays, reasons as paragraphs, a DAG's upcoming runs as 144 table rows with microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

#: The smallest top of a chart's y axis per resource. Below it a near-zero series (a few KiB of
#: storage) would fill the chart's height and plotly would label it in micro-units (``3µ``).
UNIT_FLOOR: dict[str, float] = {"cpu": 1.0, "memory": 1.0, "storage": 1.0, "network": 10.0, "slots": 1.0}
#: What a value is rounded to before drawing: finer differences are measurement noise, and drawn they
#: turn a flat series into a sawtooth.
RESOLUTION: dict[str, float] = {"cpu": 0.01, "memory": 0.01, "storage": 0.01, "network": 0.1, "slots": 0.1}
#: How far the chart's window reaches on each side of now: the forecast horizon shown, within these.
WINDOW_MIN = timedelta(hours=1)
WINDOW_MAX = timedelta(hours=6)
#: A reason's one-line summary is cut to this many characters (the whole reason is one click away).
SUMMARY_CHARS = 90
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def order_pools(pools: Sequence[dict[str, Any]], configured: Collection[str] | None) -> list[dict[str, Any]]:
    """Configured pools first (in the order given), then the others folded.

    A pool the store knows but the pools file does not (``default``, the control loop's own queue) has
    nothing to plan: it is listed, folded, after the pools an operator set up. With no pools file at
    all (``configured`` is None) nothing is folded: the page cannot tell which pools matter.

    :param pools: ``collect()`` pool entries (each with a ``pool`` name).
    :param configured: names of the pools in the pools file, or None when there is no pools file.
    """
    if configured is None:
        return [p | {"configured": True, "folded": False} for p in pools]
    rank = {name: i for i, name in enumerate(configured)}
    ordered = sorted(pools, key=lambda p: (p["pool"] not in rank, rank.get(p["pool"], 0), p["pool"]))
    return [p | {"configured": p["pool"] in rank, "folded": p["pool"] not in rank} for p in ordered]


def time_window(now: datetime, forecast_end: datetime | None) -> tuple[datetime, datetime]:
    """The chart's initial x range: centred on now, as far back as the forecast reaches ahead.

    :param now: the page's now.
    :param forecast_end: the last forecast bucket (None: no forecast, the minimum window).
    """
    ahead = (forecast_end - now) if forecast_end is not None else WINDOW_MIN
    half = min(max(ahead, WINDOW_MIN), WINDOW_MAX)
    return now - half, now + half


def rounded(resource: str, values: Iterable[float | None]) -> list[float | None]:
    """``values`` rounded to the resource's :data:`RESOLUTION` (gaps stay None).

    :param resource: cpu, memory, storage, network or slots.
    :param values: numbers or None.
    """
    step = RESOLUTION.get(resource, 0.01)
    digits = max(0, -int(np.floor(np.log10(step))))
    return [None if v is None or pd.isna(v) else round(round(v / step) * step, digits) for v in values]


def axis_top(resource: str, *series: Iterable[float | None]) -> float:
    """The y axis top: 10% above the largest value drawn, never below the resource's floor.

    :param resource: cpu, memory, storage, network or slots.
    :param series: every series drawn on the chart.
    """
    values = [v for s in series for v in s if v is not None and not pd.isna(v)]
    top = max(values) * 1.1 if values else 0.0
    return max(top, UNIT_FLOOR.get(resource, 1.0))


def reason_summary(reason: str) -> str:
    """One line for a planner reason: what was done, and on which basis (forecast or reactive).

    The planner writes ``<rule>: <demand vs capacity ...>: <what it did>``; the last clause says what
    was done, the first says why (a forecast, a reactive fallback, a cap).

    :param reason: the action's full reason.
    """
    text = " ".join((reason or "").split())
    if not text:
        return ""
    clauses = [c for c in re.split(r":\s+", text) if c]
    what = clauses[-1]
    basis = _basis(clauses[0]) if len(clauses) > 1 else ""
    line = f"{what} ({basis})" if basis and basis not in what else what
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1].rstrip() + "…"


def _basis(first: str) -> str:
    # The rule's name without its numbers ("forecast (cpu daily-cycle ...)" -> "forecast").
    return first.split(" (", 1)[0].strip()


def hour_of_week_grid(profile: Sequence[float]) -> list[list[float]] | None:
    """A 168-value hour-of-week profile (Monday 00h UTC first) as 7 rows (days) of 24 hours.

    :param profile: the summary's ``hour_of_week`` values; anything but 168 numbers gives None.
    """
    if len(profile) != 168 or not all(isinstance(v, int | float) for v in profile):
        return None
    return [list(map(float, profile[day * 24 : (day + 1) * 24])) for day in range(7)]


def queue_wait(payload: dict[str, Any], now: datetime, span: timedelta = timedelta(days=1)) -> dict[str, Any]:
    """Measured queue wait of a pool over the last ``span``: p50 and p95 per try when the summary has
    them (``queue_wait``, written by the profile refresh), else of the buckets' mean waits.

    :param payload: the pool's ``queue_pressure`` summary (``ts``, ``wait_mean_s``, ``wait_max_s``,
        ``queued_tasks``, one value per bucket; ``queue_wait``: per-try stats of the last hour and day).
    :param now: the end of the span.
    :param span: how far back "recent" reaches.
    """
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(payload.get("ts") or [], utc=True, format="ISO8601"),
            "mean": pd.to_numeric(pd.Series(payload.get("wait_mean_s") or [], dtype=object)),
            "max": pd.to_numeric(pd.Series(payload.get("wait_max_s") or [], dtype=object)),
        }
    )
    recent = frame[(frame["ts"] > pd.Timestamp(now - span)) & (frame["ts"] <= pd.Timestamp(now))]
    waits = recent["mean"].dropna()
    per_try = (payload.get("queue_wait") or {}).get("24h") or {}
    if per_try.get("tasks"):
        p50, p95 = per_try["wait_p50_s"], per_try["wait_p95_s"]
    else:
        p50 = float(waits.quantile(0.5)) if len(waits) else None
        p95 = float(waits.quantile(0.95)) if len(waits) else None
    return {
        "p50_s": None if p50 is None else round(p50, 1),
        "p95_s": None if p95 is None else round(p95, 1),
        "tasks": per_try.get("tasks"),
        "waited_long_share": per_try.get("waited_long_share"),
        "buckets": int(len(waits)),
        "ts": [t.isoformat() for t in recent["ts"]],
        "mean_s": [None if pd.isna(v) else float(v) for v in recent["mean"]],
        "max_s": [None if pd.isna(v) else float(v) for v in recent["max"]],
    }


def minute(value: str | datetime | None) -> str:
    """A time to the minute in UTC (``2026-12-02 14:30``): seconds and microseconds are noise here.

    :param value: an ISO 8601 string or a datetime (None gives "–").
    """
    if value is None or value == "":
        return "–"
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M")

"""What a pool's control loop has learned so far, from what the store holds (pure: frames in, dict out).

A new pool goes through phases the page should name instead of leaving a reader to guess from empty or
flat charts: no closed demand bucket yet; under 1.5 days of demand (the forecast falls back to the
recent level, ``short_history:recent_level``, and the planner to the reactive rule, which needs 1.5
days to see a daily cycle); under a week (daily cycle, no weekly pattern yet); learned.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.demand import parse_series_id
from airflow_predictive.contracts.forecast import MIN_CYCLE_DAYS, MIN_HISTORY_DAYS

#: Demand history the daily-cycle check needs (the planner's).
DAILY_CYCLE_DAYS = MIN_CYCLE_DAYS
#: A week of history shows the weekly pattern (weekday vs weekend).
WEEKLY_DAYS = 7.0
#: How far back the page reads demand to measure history (beyond it, "8+ days" says enough).
LOOKBACK = timedelta(days=8)


def history_days(demand: pd.DataFrame, interval: timedelta) -> dict[str, float]:
    """Days of observed (non-gap) demand per resource: first observed bucket to the end of the last.

    :param demand: one pool's demand rows (``series_id, ts, value``).
    :param interval: the bucket width.
    """
    if demand.empty:
        return {}
    seen = demand.dropna(subset=["value"])
    out = {}
    for series, rows in seen.groupby("series_id"):
        span = rows["ts"].max() - rows["ts"].min() + pd.Timedelta(interval)
        out[parse_series_id(str(series)).resource] = round(span / pd.Timedelta(days=1), 2)
    return out


def newest_plan_summary(plans: pd.DataFrame) -> dict[str, Any]:
    """The newest plan's summary (rule in force, binding resource, quantile) of one pool's plans.

    :param plans: ``store.plans(pool=...)`` rows, oldest first.
    """
    for raw in reversed(plans["summary"].tolist() if not plans.empty else []):
        summary = json.loads(raw) if isinstance(raw, str) and raw.startswith("{") else raw
        if isinstance(summary, dict):
            return summary
    return {}


def _model(forecast: pd.DataFrame) -> tuple[str, str]:
    if forecast.empty:
        return "", ""
    models = forecast.drop_duplicates("series_id")
    fallbacks = sorted({str(f) for f in models["fallback"] if f})
    return ", ".join(sorted({str(m) for m in models["model"]})), ", ".join(fallbacks)


def phase(days: float | None) -> tuple[str, str]:
    """The learning phase for ``days`` of history, and what the control loop waits for.

    :param days: the longest history of the pool's resources (None: no closed bucket yet).
    """
    if days is None:
        return "cold start", "the first closed demand bucket (the profiler writes one per interval)"
    if days < DAILY_CYCLE_DAYS:
        left = DAILY_CYCLE_DAYS - days
        return (
            "short history",
            f"{DAILY_CYCLE_DAYS:g} days of demand to see a daily cycle ({left * 24:.0f} h left); until "
            f"then plans follow the reactive rule (forecasts the recent level until {MIN_HISTORY_DAYS:g} "
            "days); known work is provisioned under either rule",
        )
    if days < WEEKLY_DAYS:
        return (
            "daily cycle",
            f"{WEEKLY_DAYS:g} days to see the weekly pattern ({WEEKLY_DAYS - days:.1f} days left)",
        )
    return "learned", ""


def learning_state(
    demand: pd.DataFrame,
    forecast: pd.DataFrame,
    plans: pd.DataFrame,
    *,
    interval: timedelta,
    now: datetime,
    service_level: str | None = None,
) -> dict[str, Any]:
    """A pool's learning state: history per resource, model, rule in force, service level, phase.

    :param demand: the pool's demand rows over :data:`LOOKBACK` before ``now``.
    :param forecast: the pool's newest forecast rows.
    :param plans: the pool's plans, oldest first.
    :param interval: the demand bucket width.
    :param now: the page's now (the summary says "as of").
    :param service_level: the pool's configured service level (its queue-wait target); None: the
        pool sets none, so the page says so and shows the rule in force.
    """
    days = history_days(demand, interval)
    longest = max(days.values()) if days else None
    name, waits = phase(longest)
    model, fallback = _model(forecast)
    summary = newest_plan_summary(plans)
    rule = summary.get("sizing") or summary.get("policy") or ("not recorded" if not plans.empty else "")
    return {
        "as_of": now.isoformat(),
        "history_days": days,
        "history_capped": bool(longest and longest >= LOOKBACK / timedelta(days=1) - 0.01),
        "phase": name,
        "waiting_for": waits,
        "model": model,
        "fallback": fallback,
        "rule": rule or "no plan yet",
        "binding": summary.get("binding") or "",
        "quantile": summary.get("quantile"),
        "service_level": service_level or "none set (capacity follows the rule in force)",
    }


def choice_text(choice: dict[str, Any] | None) -> str:
    """The pool's service-level choice in one line: the candidate, its replayed unmet and capacity
    against the reactive counterfactual's (the stored ``service_level_choice`` summary; "" when none).

    :param choice: the stored choice of one pool.
    """
    if not choice:
        return ""
    scores = {s["candidate"]: s for s in choice.get("scores", [])}
    chosen, reactive = scores.get(choice["candidate"]), scores.get("reactive")
    text = f"{choice['candidate']} (chosen {str(choice.get('chosen_at', ''))[:16].replace('T', ' ')} UTC"
    if chosen and reactive:
        ratio = chosen["capacity_hours"] / reactive["capacity_hours"] if reactive["capacity_hours"] else 0.0
        text += (
            f"; replayed unmet {chosen['unmet_pct']:.3g}% vs reactive {reactive['unmet_pct']:.3g}%, "
            f"{ratio:.2f}x reactive's capacity-hours"
        )
        if chosen.get("wait_p95_s") is not None and reactive.get("wait_p95_s") is not None:
            text += f"; replayed queue wait p95 {chosen['wait_p95_s']:.0f} s vs reactive {reactive['wait_p95_s']:.0f} s"
            if chosen.get("wait_pickup_s", 0.0) >= 0.5:
                text += f" (each with {chosen['wait_pickup_s']:.0f} s of Airflow's pickup, measured)"
    if choice.get("resource", "cpu") != "cpu":
        text += f"; replayed on {choice['resource']}"
    if choice.get("stuck_value") is not None and choice["candidate"] != "reactive":
        # the plans' reasons say when demand left it and the pool fell back to the reactive rule
        text += f"; replayed days stuck at {choice['stuck_value']:.6g}: holds while demand stays there"
    return text + ("" if choice.get("met", True) else "; no candidate met the level") + ")"

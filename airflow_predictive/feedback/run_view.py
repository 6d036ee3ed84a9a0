"""What one control-loop run did: the forecasts it issued, the plans it made and their actions.

The extra links of the control loop's tasks point at a run; the page at that link should show that
run, not the pools' pages. A run is found in the store by its time window (plans and forecasts carry
when they were made, not which run made them) and by plan ids that name it (the UI test's seed does).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.stores import ForecastReader, LedgerReader

#: Without the run's own start and end (not in Airflow's metadata database), a run is taken to last
#: this long from the time in its run id: one control-loop cycle does profile, forecast and allocate.
DEFAULT_RUN_SPAN = timedelta(minutes=30)
_RUN_ID_TIME = re.compile(r"__(?P<when>\d{4}-\d{2}-\d{2}T[0-9:.+\-]+)")


def window_from_run_id(run_id: str, span: timedelta = DEFAULT_RUN_SPAN) -> tuple[datetime, datetime] | None:
    """The time a run id names (``scheduled__2026-11-27T11:55:00+00:00``) and ``span`` after it.

    :param run_id: an Airflow run id.
    :param span: how long the run is taken to last.
    """
    match = _RUN_ID_TIME.search(run_id)
    if not match:
        return None
    try:
        start = pd.Timestamp(match["when"])
    except ValueError:
        return None
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return start.to_pydatetime(), (start + span).to_pydatetime()


def collect_run(
    store: Any,
    *,
    dag_id: str,
    run_id: str,
    start: datetime | None,
    end: datetime | None,
    task_id: str | None = None,
) -> dict[str, Any]:
    """The forecasts issued, plans made and actions recorded by one control-loop run.

    :param store: the ProfileStore (a :class:`ForecastReader` and :class:`LedgerReader`).
    :param dag_id: the run's DAG.
    :param run_id: the run.
    :param start: when the run started; None: unknown (only plans whose id names the run are its own).
    :param end: when it ended (now, while it runs).
    :param task_id: the task whose extra link opened the page.
    """
    plans = _run_plans(store, run_id, start, end)
    actions = _run_actions(store, plans)
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "forecasts": forecast_rows(store, start, end) if start and end else [],
        "plans": [plan_row(p) for p in plans.to_dict("records")],
        "actions": actions,
    }


def _run_plans(
    store: LedgerReader, run_id: str, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    plans = store.plans(since=start - timedelta(days=1) if start else None)
    if plans.empty:
        return plans
    # "<pool>:<run_id>" or "<pool>@<run_id>": a plan id that names the run after its pool
    named = plans["plan_id"].str.endswith(f":{run_id}") | plans["plan_id"].str.endswith(f"@{run_id}")
    if start is None or end is None:
        return plans[named]
    inside = (plans["created_at"] >= pd.Timestamp(start)) & (plans["created_at"] <= pd.Timestamp(end))
    return plans[inside | named]


def _run_actions(store: LedgerReader, plans: pd.DataFrame) -> list[dict[str, Any]]:
    frames = [store.actions(plan_id=plan_id) for plan_id in plans["plan_id"]] if not plans.empty else []
    frames = [f for f in frames if not f.empty]
    if not frames:
        return []
    mine = pd.concat(frames).sort_values("created_at")
    return [
        {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in row.items() if k != "details"}
        for row in mine.to_dict("records")
    ]


def plan_row(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan as the run view lists it: pool, rule, binding resource, instances and cost before and after.

    :param plan: one ``store.plans()`` record.
    """
    raw = plan.get("summary")
    summary = json.loads(raw) if isinstance(raw, str) and raw.startswith("{") else (raw or {})
    return {
        "plan_id": plan["plan_id"],
        "pool": plan["pool"],
        "created_at": pd.Timestamp(plan["created_at"]).isoformat(),
        "mode": plan["mode"],
        "rule": summary.get("sizing") or summary.get("policy") or "",
        "binding": summary.get("binding") or "",
        "instances_before": summary.get("instances_before"),
        "instances_after": summary.get("instances_after"),
        "cost_before": summary.get("cost_before"),
        "cost_after": summary.get("cost_after"),
    }


def forecast_rows(store: ForecastReader, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per series, the forecast issued in ``[start, end]``: model, buckets, next and peak values.

    :param store: the ProfileStore.
    :param start: the run's start.
    :param end: the run's end.
    """
    frame = store.forecasts(issued_from=start, issued_to=end)
    if frame.empty:
        return []
    upper = max((c for c in frame.columns if c.startswith("q")), key=lambda c: float(c[1:]), default="mean")
    out = []
    for (series, issued), rows in frame.sort_values("ts").groupby(["series_id", "issued_at"], sort=True):
        out.append(
            {
                "series_id": series,
                "issued_at": pd.Timestamp(issued).isoformat(),
                "model": str(rows["model"].iloc[0]),
                "fallback": str(rows["fallback"].iloc[0] or ""),
                "buckets": int(len(rows)),
                "first_ts": pd.Timestamp(rows["ts"].iloc[0]).isoformat(),
                "last_ts": pd.Timestamp(rows["ts"].iloc[-1]).isoformat(),
                "next_mean": round(float(rows["mean"].iloc[0]), 3),
                "peak_upper": round(float(rows[upper].max()), 3),
                "upper": upper,
            }
        )
    return out

"""A store holding one day of demand, a forecast, provisioned capacity, a plan with actions and evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from airflow_predictive.contracts.plan import Action, ActionKind, ActionStatus, Mode, Plan, Provisioning
from airflow_predictive.feedback import evaluation

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POOL = "etl-workers"
SERIES = f"pool={POOL}/resource=cpu"
RUN_ID = "scheduled__2026-11-27T11:55:00+00:00"
MEANS = [round(10 + 2 * np.sin(i / 6), 3) for i in range(24)]


def seed(store, now: datetime = NOW) -> dict:
    """Fill ``store`` and return the numbers a page must show."""
    ts = pd.date_range(now - timedelta(hours=12), now, freq="5min", inclusive="left")
    values = 8 + 3 * np.sin(np.arange(len(ts)) / 12)
    store.write_demand(pd.DataFrame({"series_id": SERIES, "ts": ts, "value": values}))
    future = pd.date_range(now, periods=len(MEANS), freq="5min")
    frame = pd.DataFrame({"series_id": SERIES, "ts": future, "mean": MEANS})
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):
        frame[f"q{level:g}"] = frame["mean"] + 4 * level
    frame["model"] = "ARIMA(1,0,1)"
    frame["fallback"] = ""
    frame["issued_at"] = now
    store.write_forecasts(frame)
    store.record_capacity(
        [
            {
                "pool": POOL,
                "resource": "cpu",
                "ts": t,
                "value": 12.0 if t < now - timedelta(hours=1) else 16.0,
            }
            for t in ts
        ]
    )
    actions = [
        Action(
            pool=POOL,
            kind=ActionKind.RESIZE_GROUP,
            amount=4.0,
            resource="cpu",
            reason="q0.95 of next 30 min exceeds capacity by 3.2 vCPU",
            request_id="req-grow-1",
            provisioning=Provisioning.SPOT,
            target="etl-mig",
        ),
        Action(
            pool=POOL,
            kind=ActionKind.RELEASE,
            amount=2.0,
            resource="cpu",
            reason="idle for 45 min above q0.95",
            request_id="req-release-1",
            target="etl-mig",
        ),
    ]
    plan = Plan(
        plan_id=f"{POOL}:{RUN_ID}",
        pool=POOL,
        created_at=now - timedelta(hours=1),
        mode=Mode.FORECAST_AND_SCALE,
        actions=actions,
        summary={"quantile": 0.95},
    )
    store.record_plan(plan)
    store.update_action("req-grow-1", ActionStatus.APPLIED)
    store.update_action("req-release-1", ActionStatus.FAILED, error="quota exceeded in zone")
    store.write_evaluations(
        pd.DataFrame(
            [
                (SERIES, now - timedelta(hours=2), evaluation.ALL_HORIZONS, evaluation.MASE, 0.82),
                (
                    SERIES,
                    now - timedelta(hours=2),
                    evaluation.ALL_HORIZONS,
                    evaluation.coverage_metric(0.95),
                    0.93,
                ),
                (SERIES, now - timedelta(hours=2), evaluation.ALL_HORIZONS, evaluation.UNMET_DEMAND, 1.5),
                (SERIES, now - timedelta(hours=2), evaluation.ALL_HORIZONS, evaluation.IDLE_CAPACITY, 20.25),
            ],
            columns=["series_id", "window_end", "horizon_minutes", "metric", "value"],
        )
    )
    store.put_summaries("timing", {POOL: {"peak_hours": [9, 10, 14]}})
    store.put_summaries("users", {"alice": {"runs": 42, "top_dags": ["ui_demo"]}})
    return {"means": MEANS, "reasons": [a.reason for a in actions], "mase": 0.82, "coverage": 0.93}

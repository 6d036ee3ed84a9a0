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
SLOTS = f"pool={POOL}/resource=slots"
#: A pool nobody configured (the control loop's own queue) whose storage is a few KiB: folded, floored.
UNCONFIGURED = "pool=default/resource=storage"
MEANS = [round(10 + 2 * np.sin(i / 6), 3) for i in range(24)]
#: The forecast the seeded control-loop run issued an hour before now (what its run view shows).
RUN_MEAN = 9.0
#: The pools file of the browser test: only etl-workers is configured.
POOLS_YAML = f"""pools:
  {POOL}:
    project: demo-project
    zone: us-central1-a
    machine_type: n2-standard-8
    slots_per_instance: 8
"""


def run_id_at(now: datetime) -> str:
    """The control-loop run that planned an hour before ``now`` (its id names when it was due)."""
    return f"scheduled__{(now - timedelta(hours=1, minutes=5)).isoformat()}"


RUN_ID = run_id_at(NOW)


def seed(store, now: datetime = NOW) -> dict:
    """Fill ``store`` and return the numbers a page must show."""
    run_id = run_id_at(now)
    ts = pd.date_range(now - timedelta(hours=12), now, freq="5min", inclusive="left")
    values = 8 + 3 * np.sin(np.arange(len(ts)) / 12)
    store.write_demand(pd.DataFrame({"series_id": SERIES, "ts": ts, "value": values}))
    store.write_demand(pd.DataFrame({"series_id": SLOTS, "ts": ts, "value": 6.0}))
    store.write_demand(
        pd.DataFrame({"series_id": UNCONFIGURED, "ts": ts, "value": 3e-6 * (1 + np.arange(len(ts)) % 3)})
    )
    _seed_run_forecast(store, now - timedelta(hours=1))
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
        + [{"pool": POOL, "resource": "slots", "ts": t, "value": 16.0} for t in ts]
    )
    actions = [
        Action(
            pool=POOL,
            kind=ActionKind.RESIZE_GROUP,
            amount=4.0,
            resource="cpu",
            reason=f"{RULE}: cpu q0.95 of next 30 min exceeds capacity by 3.2 vCPU: resize etl-mig 3 -> 4",
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
        plan_id=f"{POOL}:{run_id}",
        pool=POOL,
        created_at=now - timedelta(hours=1),
        mode=Mode.FORECAST_AND_SCALE,
        actions=actions,
        summary={"quantile": 0.95, "sizing": RULE, "binding": "slots", "instances_after": 2},
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
    profile = [float(i % 24 in (9, 10, 14)) for i in range(168)]
    store.put_summaries(
        "timing", {f"pool:{POOL}": {"pool": POOL, "hour_of_week": profile, "peak_hours": [9, 10, 14]}}
    )
    store.put_summaries("users", {"alice": {"runs": 42, "top_dags": ["ui_demo"]}})
    store.put_summaries(
        "queue_pressure",
        {
            POOL: {
                "ts": [t.isoformat() for t in ts],
                "wait_mean_s": [30.0] * len(ts),
                "wait_max_s": [90.0] * len(ts),
            }
        },
    )
    return {
        "means": MEANS,
        "reasons": [a.reason for a in actions],
        "mase": 0.82,
        "coverage": 0.93,
        "run_id": run_id,
        "now": now,
        "summaries": [a.reason if ": " not in a.reason else GROW_SUMMARY for a in actions],
    }


#: The one line the ledger shows for the grow action's reason (the rest opens on a click).
GROW_SUMMARY = "resize etl-mig 3 -> 4 (forecast)"


#: The rule the seeded plan was sized by (the pool's learning state shows it as the rule in force).
RULE = "forecast (cpu daily-cycle autocorrelation 0.74 >= 0.3)"


#: The run's forecast is of a series with no demand, so nothing scores it: the feedback tests that share
#: this seed count the scores and alerts of SERIES alone.
RUN_SERIES = f"pool={POOL}/resource=network"


def _seed_run_forecast(store, issued: datetime) -> None:
    frame = pd.DataFrame({"series_id": RUN_SERIES, "ts": pd.date_range(issued, periods=12, freq="5min")})
    frame["mean"], frame["model"], frame["fallback"], frame["issued_at"] = RUN_MEAN, "ETS", "", issued
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):
        frame[f"q{level:g}"] = RUN_MEAN + level
    store.write_forecasts(frame)

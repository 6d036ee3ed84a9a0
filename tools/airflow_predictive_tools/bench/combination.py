"""Backtest of the combination: a real trace with a synthetic schedule of DAG runs on top.

``combination_backtest(trace)`` adds the demand of scheduled DAG runs (a 6-hourly two-stage training
DAG whose second stage is heavy, and an hourly ETL task; durations and start delays jittered) to a
real demand trace, then replays the total through the backtest room's replay (same fleet, same
metrics, same production planner) under two policies:

- ``predictive``: the production auto-ARIMA forecaster on total demand (the backtest's policy);
- ``combined``: the same forecaster fitted on the residual (total minus the scheduled runs' measured
  demand), plus the structural forecast of the scheduled runs (upcoming runs and the remaining stages
  of runs in progress, durations profiled from the warm-up history), merged by
  :func:`airflow_predictive.forecasting.combine.combine`.

Each policy is swept over its forecast quantile, and unmet demand is compared at equal
capacity-hours by interpolating along each policy's (capacity-hours, unmet) frontier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.forecasting.combine import combine
from airflow_predictive.forecasting.structural import profiles_from_task_runs, structural_forecast
from airflow_predictive.simulation.backtest import BacktestOptions, context_for, replay_and_score
from airflow_predictive.simulation.policies import POOL_NAME, SERIES_ID, PredictivePolicy, pool_prices

QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class SyntheticStage:
    """One stage of a synthetic DAG: nominal duration and usage as a share of the trace's peak."""

    task_id: str
    duration_s: float
    share: float


@dataclass(frozen=True)
class SyntheticDag:
    """A synthetic scheduled DAG: a chain of stages run every ``every`` from ``offset``."""

    dag_id: str
    every: timedelta
    offset: timedelta
    stages: tuple[SyntheticStage, ...]


DEFAULT_SCHEDULE = (
    SyntheticDag(
        "train_6h",
        timedelta(hours=6),
        timedelta(0),
        (SyntheticStage("prepare", 1800, 0.15), SyntheticStage("train", 3600, 0.6)),
    ),
    SyntheticDag(
        "etl_hourly", timedelta(hours=1), timedelta(minutes=30), (SyntheticStage("load", 900, 0.2),)
    ),
)


def synthetic_runs(
    index: pd.DatetimeIndex, peak: float, schedule=DEFAULT_SCHEDULE, seed: int = 7
) -> pd.DataFrame:
    """Task runs of the synthetic schedule over the trace: one row per task (start, end, usage).

    :param index: the trace's bucket starts.
    :param peak: the trace's 99th percentile (stage usage is a share of it).
    :param schedule: the synthetic DAGs.
    :param seed: random seed of the jitter.
    """
    rng = np.random.default_rng(seed)
    rows = []
    first, last = index[0], index[-1]
    for dag in schedule:
        run_after = first.floor("D") + dag.offset
        while run_after <= last:
            if run_after >= first:
                start = run_after + pd.Timedelta(seconds=float(rng.uniform(0, 60)))
                for stage in dag.stages:
                    duration = stage.duration_s * float(rng.lognormal(0.0, 0.25))
                    end = start + pd.Timedelta(seconds=duration)
                    rows.append(
                        {
                            "dag_id": dag.dag_id,
                            "run_id": f"scheduled__{run_after.isoformat()}",
                            "run_after": run_after,
                            "task_id": stage.task_id,
                            "start": start,
                            "end": end,
                            "duration": duration,
                            "usage": stage.share * peak,
                            "state": "success",
                        }
                    )
                    start = end
            run_after += dag.every
    return pd.DataFrame(rows)


def bucket_demand(runs: pd.DataFrame, index: pd.DatetimeIndex, interval_s: int) -> np.ndarray:
    """Time-weighted demand per bucket (the demand-series convention).

    :param runs: :func:`synthetic_runs` rows.
    :param index: bucket starts.
    :param interval_s: bucket width.
    """
    grid = index.asi8 / 1e9
    out = np.zeros(len(grid))
    for start, end, usage in zip(runs["start"], runs["end"], runs["usage"], strict=True):
        lo = np.clip(start.timestamp(), grid, grid + interval_s)
        hi = np.clip(end.timestamp(), grid, grid + interval_s)
        out += (hi - lo) / interval_s * usage
    return out


def upcoming_work(runs: pd.DataFrame, schedule, now: pd.Timestamp, horizon: timedelta) -> dict[str, Any]:
    """What the API server would report at ``now``: upcoming runs and runs in progress, per DAG.

    :param runs: :func:`synthetic_runs` rows (the future is read only for run_after times).
    :param schedule: the synthetic DAGs.
    :param now: the decision time.
    :param horizon: how far ahead.
    """
    dags = []
    for dag in schedule:
        mine = runs[runs["dag_id"] == dag.dag_id]
        tasks = []
        previous: list[str] = []
        for stage in dag.stages:
            usage = float(mine.loc[mine["task_id"] == stage.task_id, "usage"].iloc[0]) if len(mine) else 0.0
            tasks.append(
                {
                    "task_id": stage.task_id,
                    "upstream": previous,
                    "queue": POOL_NAME,
                    "pool": "default_pool",
                    "pool_slots": 1,
                    "source": "template",
                    "cpu": usage,
                    "memory_gib": 0.0,
                    "storage_gib": 0.0,
                    "network_mbps": 0.0,
                    "duration_s": stage.duration_s,
                    "parallelism": 1,
                }
            )
            previous = [stage.task_id]
        upcoming = sorted(
            {t for t in mine["run_after"] if now <= t <= now + horizon and not _started(mine, t, now)}
        )
        running = []
        for run_id, group in mine[mine["run_after"] < now + horizon].groupby("run_id"):
            if group["start"].min() < now < group["end"].max():
                states = {}
                for row in group.itertuples():
                    if row.end <= now:
                        states[row.task_id] = {"state": "done"}
                    elif row.start <= now:
                        states[row.task_id] = {"state": "running", "start_date": row.start.isoformat()}
                running.append({"run_id": run_id, "run_type": "scheduled", "tasks": states})
        dags.append(
            {
                "dag_id": dag.dag_id,
                "max_active_runs": 16,
                "max_active_tasks": 16,
                "upcoming": [{"run_after": t.isoformat()} for t in upcoming],
                "running": running,
                "tasks": tasks,
            }
        )
    return {"limits": {"parallelism": 10**6, "pools": {}}, "dags": dags}


def _started(runs: pd.DataFrame, run_after: pd.Timestamp, now: pd.Timestamp) -> bool:
    return bool((runs.loc[runs["run_after"] == run_after, "start"] < now).any())


class CombinedPolicy(PredictivePolicy):
    """The production forecaster on residual demand + the structural forecast of scheduled runs.

    The statistical half is the ``predictive`` policy itself (order selection once, warm path every
    step, hourly refits) replayed on the residual trace; the planner still sees total demand.
    """

    name = "combined"

    def __init__(self, **knobs: Any) -> None:
        # The knobs are the predictive policy's (quantile, target utilisation, ...), passed through.
        super().__init__(**knobs)
        self.runs: pd.DataFrame | None = None
        self.schedule = DEFAULT_SCHEDULE
        self.residual: np.ndarray | None = None
        self.profiles: dict = {}
        self.statistical: PredictivePolicy | None = None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "combination": "residual", "structural": "structural_forecast"}

    def prepare(self, context) -> None:
        fresh = self.context is not context or self.statistical is None
        super(PredictivePolicy, self).prepare(context)  # the planner's pool and history: total demand
        if not fresh:
            return
        self.statistical = PredictivePolicy()
        self.statistical.prepare(replace(context, demand=self.residual))
        self._share_statistical()
        warmup = self.runs[self.runs["end"] < context.index[context.start]]
        self.profiles = profiles_from_task_runs(warmup.assign(cpu_mean=warmup["usage"]))

    def _share_statistical(self) -> None:
        # settings() reports the statistical half's model and forecast paths as the predictive policy's.
        for name in ("forecaster", "states", "refit_steps", "models"):
            setattr(self, name, getattr(self.statistical, name))

    def forecast_at(self, step: int) -> Any:
        from airflow_predictive.planning.planner import ForecastView

        residual = _frame_of(self.statistical.forecast_at(step), self.context.index[step])
        now = self.context.index[step]
        horizon = timedelta(seconds=self.horizon_steps() * self.context.interval_s)
        work = upcoming_work(self.runs, self.schedule, now, horizon)
        structural = structural_forecast(
            work,
            now=now.to_pydatetime(),
            horizon=horizon,
            interval=timedelta(seconds=self.context.interval_s),
            profiles=self.profiles,
            pools=[POOL_NAME],
        )
        return ForecastView.from_frame(combine(residual, structural, method="residual"), POOL_NAME)

    def _variant(self, **knobs: Any) -> CombinedPolicy:
        variant = CombinedPolicy(**knobs)
        for name in ("runs", "schedule", "residual", "profiles", "statistical"):
            setattr(variant, name, getattr(self, name))
        variant._share_statistical()
        return variant


def _frame_of(view: Any, issued_at: pd.Timestamp) -> pd.DataFrame:
    """The pool's cpu forecast of a ForecastView as a forecast frame (what ``combine`` takes)."""
    from airflow_predictive.forecasting.engine import MODEL_NAME

    ts, columns = view.series["cpu"]
    frame = pd.DataFrame({"series_id": SERIES_ID, "ts": pd.to_datetime(ts, utc=True), **columns})
    return frame.assign(model=MODEL_NAME, fallback="", issued_at=issued_at)


def _interp(x: float, xs: list[float], ys: list[float]) -> float | None:
    order = np.argsort(xs)
    xs_sorted, ys_sorted = np.asarray(xs)[order], np.asarray(ys)[order]
    if x < xs_sorted[0] or x > xs_sorted[-1]:
        return None
    return float(np.interp(x, xs_sorted, ys_sorted))


def dominance(pred: list[dict[str, Any]], comb: list[dict[str, Any]]) -> dict[str, Any]:
    """Which predictive points a combined point beats outright (no more capacity-hours, less unmet).

    Interpolating at equal capacity-hours needs overlapping ranges; when the combined frontier lies
    entirely to the left (fewer hours), domination is the comparison that remains.

    :param pred: predictive frontier points.
    :param comb: combined frontier points.
    """
    beaten = [
        p["quantile"]
        for p in pred
        if any(c["capacity_hours"] <= p["capacity_hours"] and c["unmet_pct"] < p["unmet_pct"] for c in comb)
    ]
    equal = [
        c for c in _equal_hours(pred, comb) if c["combined_unmet_pct_at_equal_capacity_hours"] is not None
    ]
    return {
        "predictive_quantiles_beaten_outright": beaten,
        "combined_beats_predictive": bool(beaten or equal)
        and all(c["combined_unmet_pct_at_equal_capacity_hours"] < c["predictive_unmet_pct"] for c in equal),
    }


def _equal_hours(pred: list[dict[str, Any]], comb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for point in pred:
        at = _interp(
            point["capacity_hours"], [p["capacity_hours"] for p in comb], [p["unmet_pct"] for p in comb]
        )
        out.append(
            {
                "predictive_quantile": point["quantile"],
                "capacity_hours": point["capacity_hours"],
                "predictive_unmet_pct": point["unmet_pct"],
                "combined_unmet_pct_at_equal_capacity_hours": None if at is None else round(at, 4),
            }
        )
    return out


def combination_backtest(trace: pd.Series, options: BacktestOptions | None = None) -> dict[str, Any]:
    """Replay ``trace`` + a synthetic schedule under ``predictive`` and ``combined``; compare unmet demand.

    :param trace: a trace from :func:`airflow_predictive.simulation.traces.load_trace`.
    :param options: backtest options (boot delay, history, peak instances...).
    """
    options = (options or BacktestOptions()).validated()
    interval_s = int(trace.attrs.get("interval_s") or np.median(np.diff(trace.index.asi8)) // 10**9)
    base_context = context_for(trace, options)
    peak = float(np.percentile(trace.to_numpy(dtype=float), 99))
    runs = synthetic_runs(base_context.index, peak)
    scheduled = bucket_demand(runs, base_context.index, interval_s)
    total = pd.Series(
        base_context.demand + scheduled, index=base_context.index, name=f"{trace.name}+schedule"
    )
    total.attrs.update(trace.attrs, interval_s=interval_s)
    context = context_for(total, options)
    price_standard, price_spot = pool_prices(options.machine_type)
    scored = context.demand[context.start :]

    predictive = PredictivePolicy()
    combined = CombinedPolicy()
    combined.runs, combined.residual = runs, base_context.demand
    result: dict[str, Any] = {
        "trace": str(trace.name),
        "interval_s": interval_s,
        "scored_steps": int(len(scored)),
        "scheduled_share_of_demand": round(
            float(scheduled[context.start :].sum() / max(scored.sum(), 1e-9)), 4
        ),
        "synthetic_schedule": [
            {"dag_id": d.dag_id, "every": str(d.every), "stages": [s.__dict__ for s in d.stages]}
            for d in DEFAULT_SCHEDULE
        ],
        "boot_delay": options.boot_delay,
        "policies": {},
    }
    for policy in (predictive, combined):
        points = []
        policy.prepare(context)
        for level in QUANTILES:
            variant = policy.with_knob(quantile=level)
            _, m = replay_and_score(variant, context, prices=(price_standard, price_spot))
            points.append(
                {
                    "quantile": level,
                    "capacity_hours": round(m.capacity_hours, 3),
                    "unmet_pct": round(m.unmet_pct, 4),
                }
            )
        result["policies"][policy.name] = points
    pred, comb = result["policies"]["predictive"], result["policies"]["combined"]
    result["at_equal_capacity_hours"] = _equal_hours(pred, comb)
    result.update(dominance(pred, comb))
    result["generated_at"] = datetime.now(UTC).isoformat()
    if not math.isfinite(result["scheduled_share_of_demand"]):
        result["scheduled_share_of_demand"] = None
    return result

"""The backtest: replay a demand trace under each policy and score what each would have cost and missed.

``backtest_trace(series, options)`` returns the JSON contract of ``airflow-predictive backtest``
(one object per trace) plus a private ``_series`` entry with per-step capacity for the HTML report.
One "instance" serves the trace's 99th percentile / ``peak_instances``; the first ``history`` of the
trace is warm-up (forecaster history, never scored).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.contracts.demand import series_id as make_series_id
from airflow_predictive.contracts.pools import ServiceLevel
from airflow_predictive.simulation import metrics
from airflow_predictive.simulation.choice import product_policy
from airflow_predictive.simulation.policies import pool_prices, sweep_knobs
from airflow_predictive.simulation.replay import (
    REPLAYED_RESOURCES,
    Policy,
    ReplayContext,
    ReplayResult,
    replay,
)
from airflow_predictive.simulation.traces import TraceError, duration, load_trace, load_traces, parse_interval

ALL_POLICIES: tuple[str, ...] = ("reactive", "seasonal", "predictive", "oracle")


@dataclass(frozen=True)
class BacktestOptions:
    """Simulation parameters shared by every policy of one backtest.

    :param peak_instances: one instance serves the trace's 99th percentile divided by this.
    :param boot_delay: a scale-out decided at ``t`` serves from ``t + boot_delay``.
    :param history: warm-up at the start of the trace (forecaster history, not scored).
    :param max_instances: the pool's maximum size.
    :param policies: policies to run, among ``reactive``, ``seasonal``, ``predictive``, ``oracle``.
    :param sweep: also trace each policy's (capacity-hours, unmet) frontier over its main knob.
    :param machine_type: Compute Engine machine type whose standard and spot prices give ``cost``.
    :param sizing_defaults: the deployment's ``[predictive]`` sizing defaults (``None``: documented ones).
    :param instance_capacity: demand one instance serves, in the trace's units (for a ``slots`` trace,
        the slots per instance); ``None``: the trace's 99th percentile / ``peak_instances``.
    :param resource: what the trace's demand is (``cpu``, ``memory`` or ``slots``: task slots, planned
        full, ``instance_capacity`` the slots of each worker).
    :param service_level: the simulated pool's service level (``None``: ``match_reactive``).
    :param online_choice: ``predictive`` and ``seasonal`` follow the daily service-level choice, as the
        product does (False: their fixed default setting, the planner's daily-cycle switch).
    """

    peak_instances: int = 20
    boot_delay: str = "5min"
    history: str = "3d"
    max_instances: int = 40
    policies: tuple[str, ...] = ALL_POLICIES
    sweep: bool = False
    machine_type: str = "n2-standard-4"
    sizing_defaults: Mapping[str, float] | None = None
    instance_capacity: float | None = None
    resource: str = "cpu"
    service_level: ServiceLevel | None = None
    online_choice: bool = True

    def validated(self) -> BacktestOptions:
        """Check every option; raise ``ValueError`` naming the option that is wrong."""
        if self.peak_instances < 1:
            raise ValueError(f"--peak-instances must be >= 1, got {self.peak_instances}")
        if self.max_instances < 1:
            raise ValueError(f"--max-instances must be >= 1, got {self.max_instances}")
        if self.instance_capacity is not None and not self.instance_capacity > 0:
            raise ValueError(f"--instance-capacity must be positive, got {self.instance_capacity}")
        if self.resource not in REPLAYED_RESOURCES:
            raise ValueError(f"--resource: {self.resource!r}; choose from {', '.join(REPLAYED_RESOURCES)}")
        capacity = self.instance_capacity
        if self.resource == "slots" and (capacity is None or not float(capacity).is_integer()):
            raise ValueError(
                "--resource slots needs --instance-capacity: the task slots of each worker, a whole number"
            )
        unknown = [p for p in self.policies if p not in ALL_POLICIES]
        if unknown or not self.policies:
            raise ValueError(
                f"--policies: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(ALL_POLICIES)}"
            )
        for name, value in (("--boot-delay", self.boot_delay), ("--history", self.history)):
            try:
                delta = duration(value)
            except ValueError:
                raise ValueError(f"{name}: {value!r} is not a duration like 5min, 3d, 90s") from None
            if delta < pd.Timedelta(0):
                raise ValueError(f"{name} must not be negative, got {value!r}")
        return self


@dataclass
class _Detail:
    ts: list[str] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)
    capacity: dict[str, list[float]] = field(default_factory=dict)


def context_for(series: pd.Series, options: BacktestOptions) -> ReplayContext:
    """The replay context of one trace: instance capacity, boot steps and scored range.

    :param series: a trace from :func:`~.traces.load_trace`.
    :param options: backtest options.
    """
    name = series.name
    source = series.attrs.get("source", name)
    interval_s = int(series.attrs.get("interval_s") or _infer_interval_s(series))
    values = series.to_numpy(dtype=float)
    history = math.ceil(duration(options.history).total_seconds() / interval_s)
    if len(values) <= history:
        raise TraceError(
            f"{source}: {len(values)} points of {interval_s} s, not more than the history "
            f"({options.history} = {history} points); use a shorter --history or a longer trace"
        )
    peak = float(np.percentile(values, 99))
    if peak <= 0:
        raise TraceError(f"{source}: the 99th percentile of demand is 0, nothing to provision for")
    # Align the grid with the epoch bucket grid the forecaster uses (at most one interval's shift).
    start = series.index[0].floor(f"{interval_s}s")
    index = pd.date_range(start, periods=len(values), freq=f"{interval_s}s", tz="UTC")
    return ReplayContext(
        demand=values,
        index=index,
        interval_s=interval_s,
        instance_capacity=options.instance_capacity or peak / options.peak_instances,
        boot_steps=math.ceil(duration(options.boot_delay).total_seconds() / interval_s),
        max_instances=options.max_instances,
        start=history,
        sizing_defaults=options.sizing_defaults,
        resource=options.resource,
    )


def daily_autocorrelation(values: np.ndarray, interval_s: int) -> float:
    """Lag-one-day autocorrelation of a demand trace (how strong its daily cycle is).

    :param values: demand per step.
    :param interval_s: step length in seconds.
    """
    lag = round(86400 / interval_s)
    values = np.asarray(values, dtype=float)
    if values.size <= lag + 2:
        return 0.0
    a, b = values[:-lag], values[lag:]
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _infer_interval_s(series: pd.Series) -> int:
    steps = np.diff(series.index.as_unit("ns").asi8)  # the store yields datetime64[us]
    return int(np.median(steps) // 10**9) if len(steps) else 0


def replay_and_score(
    policy: Policy, context: ReplayContext, *, prices: tuple[float, float]
) -> tuple[ReplayResult, metrics.Metrics]:
    """Replay one policy and score its scored steps: the one scoring every backtest shares.

    :param policy: the scaling policy.
    :param context: the trace and the pool's simulation parameters.
    :param prices: standard and spot price of one instance-hour.
    """
    outcome = replay(policy, context)
    scores = metrics.score(
        context.demand[context.start :],
        outcome.running,
        outcome.targets,
        instance_capacity=context.instance_capacity,
        interval_s=context.interval_s,
        price_standard=prices[0],
        price_spot=prices[1],
        previous_target=outcome.previous_target,
    )
    return outcome, scores


def backtest_trace(series: pd.Series, options: BacktestOptions | None = None) -> dict[str, Any]:
    """Replay one trace under each policy and return its result object (the JSON contract).

    :param series: a trace from :func:`~.traces.load_trace`.
    :param options: backtest options (defaults: the issue's defaults).
    """

    options = (options or BacktestOptions()).validated()
    context = context_for(series, options)
    price_standard, price_spot = pool_prices(options.machine_type)
    scored = context.demand[context.start :]
    detail = _Detail(
        ts=[t.isoformat() for t in context.index[context.start :]],
        demand=[float(v) for v in scored],
    )
    result: dict[str, Any] = {
        "trace": str(series.name),
        "interval_s": int(context.interval_s),
        "scored_steps": int(len(scored)),
        "boot_delay_s": int(duration(options.boot_delay).total_seconds()),
        "peak_instances": int(options.peak_instances),
        "instance_capacity": float(context.instance_capacity),
        "daily_autocorrelation": round(daily_autocorrelation(context.demand, context.interval_s), 3),
        "repairs": repairs(series),
        "policies": {},
    }

    def run(policy) -> dict[str, Any]:
        outcome, scores = replay_and_score(policy, context, prices=(price_standard, price_spot))
        return {"outcome": outcome, "metrics": scores}

    policies = {}
    for name in options.policies:
        policy = product_policy(name, options)
        policies[name] = policy
        done = run(policy)
        result["policies"][name] = {**done["metrics"].to_dict(), "settings": done["outcome"].settings}
        if hasattr(policy, "issued_at_lead"):
            result["policies"][name]["calibration"] = calibration_at_boot_lead(policy, context)
        detail.capacity[name] = [float(r) * context.instance_capacity for r in done["outcome"].running]
    if options.sweep:
        frontiers: dict[str, list[dict[str, Any]]] = {}
        for name, policy in policies.items():
            for knob in sweep_knobs(name):
                variant = policy.with_knob(**knob) if knob else policy
                m = run(variant)["metrics"]
                # Points that vary the planner's reactive guard are kept apart, so the frontier of the
                # quantile / utilisation knobs (at the default guard) is read unmixed.
                key = f"{name}+guard" if "guard_utilization" in knob else name
                frontiers.setdefault(key, []).append(
                    {
                        "knob": knob,
                        "capacity_hours": round(m.capacity_hours, 4),
                        "unmet_pct": round(m.unmet_pct, 4),
                    }
                )
        for points in frontiers.values():
            points.sort(key=lambda p: p["capacity_hours"])
        result["frontiers"] = frontiers
        result["headline"] = headline(result)
        result["headlines"] = {
            name: headline(result, name)
            for name in options.policies
            if name in frontiers and name != "reactive"
        }
    result["_series"] = detail.__dict__
    return result


#: The quantiles whose calibration across the day the backtest reports (the planner's and scale-in's).
CALIBRATION_LEVELS: tuple[float, ...] = (0.9, 0.95)


def calibration_at_boot_lead(policy: Any, context: ReplayContext) -> dict[str, Any]:
    """Exceedance of each :data:`CALIBRATION_LEVELS` quantile by 4-hour block of the day, for the
    forecasts a policy issued over the scored steps, at the boot lead (what the planner sizes from)."""
    out = {}
    for level in CALIBRATION_LEVELS:
        target, upper = policy.issued_at_lead(context.boot_steps, f"q{level:g}")
        keep = (target >= context.start) & (target < len(context.demand))
        target, upper = target[keep], upper[keep]
        when = context.index[target]
        out[f"q{level:g}"] = metrics.calibration_by_block(
            when.hour.to_numpy(), context.demand[target], upper, level=level, days=when.floor("D").asi8
        )
    return out


def repairs(series: pd.Series) -> dict[str, int]:
    """What the loader changed in a trace: buckets ``filled`` by interpolation, rows ``retimed``.

    Both are replayed as demand, so a reader of the scores needs to know how many there were.

    :param series: a trace from :func:`~.traces.load_trace` (or :func:`series_from_demand`).
    """
    return {"filled": int(series.attrs.get("filled", 0)), "retimed": int(series.attrs.get("retimed", 0))}


def headline(result: dict[str, Any], policy: str = "predictive") -> dict[str, Any]:
    """The two comparisons against reactive: unmet at reactive's capacity-hours, capacity at its unmet.

    Both read the policy's frontier by linear interpolation (``None`` outside its range).

    :param result: a trace result with ``frontiers``.
    :param policy: the policy compared with reactive.
    """
    reactive = result["policies"].get("reactive")
    points = result.get("frontiers", {}).get(policy)
    if not reactive or not points:
        return {}
    hours = np.array([p["capacity_hours"] for p in points])
    unmet = np.array([p["unmet_pct"] for p in points])
    order = np.argsort(hours)
    at_hours = _interp(reactive["capacity_hours"], hours[order], unmet[order])
    order = np.argsort(unmet)
    at_unmet = _interp(reactive["unmet_pct"], unmet[order], hours[order])
    return {
        "policy": policy,
        "reactive_capacity_hours": reactive["capacity_hours"],
        "reactive_unmet_pct": reactive["unmet_pct"],
        "unmet_pct_at_reactive_capacity_hours": at_hours,
        "capacity_hours_at_reactive_unmet_pct": at_unmet,
    }


def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float | None:
    if len(xs) == 0 or x < xs[0] or x > xs[-1]:
        return None
    return round(float(np.interp(x, xs, ys)), 4)


def backtest(
    paths: Sequence[str | Path] | Iterable[str | Path],
    options: BacktestOptions | None = None,
    *,
    time_column: str | None = None,
    value_column: str | None = None,
    sep: str | None = None,
    interval: str | None = None,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Load each trace and backtest it (the importable form of ``airflow-predictive backtest``).

    :param paths: trace files.
    :param options: backtest options.
    :param time_column: see :func:`~.traces.load_trace`.
    :param value_column: see :func:`~.traces.load_trace`.
    :param sep: see :func:`~.traces.load_trace`.
    :param interval: see :func:`~.traces.load_trace`.
    :param jobs: traces backtested at once, each in a process of its own (1: in this process). The
        traces are independent and each is single-threaded, so a ten-trace ``--sweep`` takes the
        longest trace's share of ``jobs`` cores instead of the sum of all ten.
    """

    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    parse_interval(interval)
    traces = load_traces(
        paths, time_column=time_column, value_column=value_column, sep=sep, interval=interval
    )
    if jobs == 1 or len(traces) < 2:
        return [backtest_trace(series, options) for series in traces]
    from concurrent.futures import ProcessPoolExecutor

    # Longest first, so the last trace to start is a short one; the results keep the traces' order.
    order = sorted(range(len(traces)), key=lambda i: -len(traces[i]))
    out: list[dict[str, Any] | None] = [None] * len(traces)
    with ProcessPoolExecutor(max_workers=min(jobs, len(traces)), initializer=_single_threaded) as pool:
        futures = {i: pool.submit(backtest_trace, traces[i], options) for i in order}
        for i, future in futures.items():
            out[i] = future.result()
    return [r for r in out if r is not None]


def _single_threaded() -> None:
    """A worker's BLAS and OpenMP pools at one thread: ``jobs`` workers share ``jobs`` cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def series_from_demand(frame: pd.DataFrame, series_id: str, *, interval_s: int = 300) -> pd.Series:
    """One demand series of the long demand frame (``series_id, ts, value``) as a backtest trace.

    Used by the demo to backtest its own pool history (``store.demand([series_id])``).

    :param frame: long demand frame, e.g. from ``ProfileStore.demand``.
    :param series_id: the series to take (``pool=<pool>/resource=cpu``).
    :param interval_s: bucket width; missing buckets are filled by linear interpolation.
    """
    frame = frame.rename(columns=str)  # store frames may carry SQLAlchemy column-name objects
    rows = frame[frame["series_id"].astype(str) == series_id]
    if rows.empty:
        raise TraceError(f"{series_id}: no demand rows")
    stamps = pd.to_datetime(rows["ts"].to_numpy(), utc=True)
    values = pd.Series(rows["value"].to_numpy(dtype=float), index=pd.DatetimeIndex(stamps))
    values = values.groupby(values.index.floor(f"{interval_s}s")).mean()
    grid = pd.date_range(values.index[0], values.index[-1], freq=f"{interval_s}s")
    gridded = values.reindex(grid)
    series = gridded.interpolate(limit_direction="both").clip(lower=0.0)
    series.name = series_id
    series.index.name = "ts"
    series.attrs.update(
        source=series_id, column="value", interval_s=interval_s, filled=int(gridded.isna().sum()), retimed=0
    )
    return series


def backtest_pool_history(
    store, pool: str, options: BacktestOptions | None = None, *, resource: str = "cpu"
) -> dict[str, Any]:
    """Backtest a pool's own recorded demand (what ``make demo`` ends with).

    :param store: a :class:`~airflow_predictive.store.ProfileStore`.
    :param pool: pool name.
    :param options: backtest options (the history must be shorter than the recorded demand).
    :param resource: which resource series to replay.
    """

    sid = make_series_id(pool, resource)
    return backtest_trace(series_from_demand(store.demand([sid]), sid), options)


def backtest_resources(
    series: Mapping[str, pd.Series], capacity: Mapping[str, float], options: BacktestOptions | None = None
) -> dict[str, Any]:
    """Replay every resource of one pool; the pool runs, at each step, the most instances any needs.

    Each policy sizes each resource's series as in :func:`backtest_trace` (one instance serves
    ``capacity[resource]``: the machine's vCPUs, its memory, its worker's task slots); the pool then
    runs the largest of those counts, and each resource is scored against that shared fleet. Per
    policy, ``binding_hours`` are the instance-hours each resource alone adds above what every other
    resource needs; the result's **binding** resource is the one that adds the most under the oracle
    (perfect foresight: the demand decides, not a policy's errors), so a pool whose tasks wait on
    I/O shows as slot-bound. ``None`` when no resource ever needs more than the others.

    :param series: ``{resource: trace}`` on one grid (e.g. :func:`series_from_demand` of each).
    :param capacity: ``{resource: demand one instance serves}``, a key per series.
    :param options: backtest options (``instance_capacity`` is taken from ``capacity``).
    """
    options = (options or BacktestOptions()).validated()
    missing = sorted(set(series) - set(capacity))
    if not series or missing:
        raise ValueError(
            f"backtest_resources: no capacity per instance for {', '.join(missing) or 'any resource'}"
        )
    contexts = {
        r: replace(
            context_for(s, replace(options, instance_capacity=capacity[r])),
            # each resource as the planner sizes it (slots planned full); the others as vCPUs
            resource=r if r in REPLAYED_RESOURCES else "cpu",
        )
        for r, s in series.items()
    }
    steps = min(len(c.demand) - c.start for c in contexts.values())
    prices = pool_prices(options.machine_type)
    result: dict[str, Any] = {"resources": sorted(series), "capacity": dict(capacity), "policies": {}}
    for name in options.policies:
        outcomes = {r: replay(product_policy(name, options), c) for r, c in contexts.items()}
        running = np.max([o.running[:steps] for o in outcomes.values()], axis=0)
        targets = np.max([o.targets[:steps] for o in outcomes.values()], axis=0)
        hours = contexts[next(iter(contexts))].interval_s / 3600
        binds = {r: round(_alone(r, outcomes, steps) * hours, 3) for r in outcomes}
        scores = {
            r: metrics.score(
                contexts[r].demand[contexts[r].start :][:steps],
                running,
                targets,
                instance_capacity=capacity[r],
                interval_s=contexts[r].interval_s,
                price_standard=prices[0],
                price_spot=prices[1],
            ).to_dict()
            for r in outcomes
        }
        result["policies"][name] = {
            "instance_hours": round(float(running.sum() * hours), 3),
            "binding_hours": binds,
            "resources": scores,
        }
    reference = (result["policies"].get("oracle") or next(iter(result["policies"].values())))["binding_hours"]
    top = max(reference, key=reference.get)
    result["binding"] = top if reference[top] > 0 else None
    return result


def _alone(resource: str, outcomes: Mapping[str, ReplayResult], steps: int) -> float:
    """Instance-steps ``resource`` needs above the most any other resource needs."""
    own = outcomes[resource].running[:steps].astype(float)
    others = [o.running[:steps] for r, o in outcomes.items() if r != resource]
    return float(np.clip(own - (np.max(others, axis=0) if others else 0.0), 0.0, None).sum())


def with_policies(options: BacktestOptions, policies: Sequence[str]) -> BacktestOptions:
    """A copy of ``options`` running only ``policies``.

    :param options: backtest options.
    :param policies: policy names.
    """
    return replace(options, policies=tuple(policies))


__all__ = ["BacktestOptions", "backtest", "backtest_resources", "backtest_trace", "headline", "load_trace"]

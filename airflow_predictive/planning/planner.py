"""The allocation planner: forecast quantiles + current capacity + pool policy + now -> Plan. Pure, no I/O.

One planner serves the operator, the CLI and the backtest. The rules, in the order they apply:

0. **Does prediction help?** A forecast-driven pool follows its forecast only while its recent demand
   has a daily cycle to anticipate (lag-one-day autocorrelation >= ``policy.min_daily_cycle`` over
   ``policy.cycle_window_days``). Without one the forecast can only trail the last value, so the pool
   follows the reactive rule below at ``policy.fallback_utilization`` and does what Compute Engine's
   autoscaler would do (``Plan.summary["sizing"]`` says which rule ran and why).
1. **Demand to cover.** For every resource, the forecast quantile the pool names (``policy.quantile``)
   over ``[now + lead time, now + lead time + planning interval]``, so capacity ordered now is ready
   when the work starts, and never less than the newest observed demand / ``policy.guard_utilization``
   (a forecast that undershoots a level shift is corrected next cycle), nor, with
   ``policy.seasonal_floor_days``, than the demand observed over that window's time of day on each of
   the last days (what recurs at a time of day is held before it comes). With ``policy.signal =
   recent_demand`` (the Compute Engine autoscaler rule), the newest observed demand instead, divided by
   ``policy.target_utilization``, held for the stabilisation window's peak before scaling in.
2. **Instances.** Demand is converted to instances of the pool's machine type; vCPUs, memory,
   (per-VM egress) network and task slots (``slots`` demand: tasks running or queued, over the pool's
   ``slots`` per instance, i.e. its worker's concurrency) are all honoured and the binding one wins. A
   gap smaller than the pool's threshold for that resource is ignored (the pseudocode's
   ``thresholdCPU`` ...). A pool without a ``slots`` series (no forecast, no observed slots) is sized
   by the other resources alone.
3. **Scale-in** only when the upper forecast quantile (``scale_in.quantile``) over
   ``[now, now + lead + stabilisation]`` stays below what remains; only idle instances (no running
   Airflow task on them), spot before standard, newest first; at most ``max_release_per_cycle``.
4. **Caps.** Never above ``max_instances``, never below ``min_instances``; never above
   ``budget_per_hour`` except where min instances or busy instances alone cost more. Whatever a cap
   cut is written in ``Plan.capped``.
5. **Spot.** Standard VMs carry the predicted baseline (``spot.baseline_quantile``), less of it in a
   predicted low-demand period; capacity above it, and capacity of interruptible work, is spot.
6. **Storage** grows the largest disk or creates and attaches a new one (never shrinks: that loses data).
   **Network**: Tier_1 or a larger machine type on idle VMs when the per-VM egress is not enough.
   **Vertical**: at ``max_instances``, an idle VM may move to a larger machine type (``resize_instance``).

:func:`plan` runs each rule as one named step, in the order the steps apply: ``_read_cycle`` (0, 1),
``_scale_out`` (2), ``_hold_min_instances`` (4, the floor sets how many to add), ``_scale_in`` (3),
``_cap_additions_at_max`` and ``_release_above_max`` (4), ``_split_spot`` (5), ``_cap_budget`` (4, it
prices the split), then the actions: ``_add_capacity_actions``, ``_release_actions``, ``_vertical``,
``_bandwidth`` and ``_storage`` (6), and the ``_summary``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.contracts import machines
from airflow_predictive.contracts.capacity import BOOTING_STATUSES, InstanceState, PoolState
from airflow_predictive.contracts.demand import parse_series_id
from airflow_predictive.contracts.forecast import KNOWN, MIN_CYCLE_DAYS, quantile_column
from airflow_predictive.contracts.plan import (
    Action,
    ActionKind,
    Plan,
    Provisioning,
    request_id_for,
)
from airflow_predictive.contracts.pools import Backend, CapacityPool, Signal, SpotMode
from airflow_predictive.planning.cost import hourly_cost

#: Resources counted in instances (each instance brings a fixed amount); storage is disks instead.
COUNT_RESOURCES = ("cpu", "memory", "network", "slots")
#: Resources whose baseline standard VMs carry (spot split): what the work needs, not its egress.
_BASELINE_RESOURCES = ("cpu", "memory", "slots")
_EPS = 1e-9
#: New data disks one plan creates at most (the rest of a huge storage forecast waits a cycle).
MAX_NEW_DISKS = 16
#: Largest instance count the sizing arithmetic yields (exact in a float); far above any max_instances.
_MAX_COUNT = float(2**53)
_NS_PER_MIN = 60_000_000_000


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ForecastView:
    """A pool's forecast indexed for fast window queries: resource -> (bucket start ns, column -> values).

    Build it once per forecast with :meth:`from_frame`; the backtest can reuse one view across calls.

    :param series: resource -> (sorted int64 UTC nanoseconds, {column name: float array}).
    :param interval_ns: bucket width in nanoseconds.
    """

    series: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]]
    interval_ns: int = 5 * _NS_PER_MIN
    medians: dict[tuple[str, str], float] = field(default_factory=dict, compare=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, pool: str | None = None) -> ForecastView:
        """Index a forecast frame (``series_id, ts, mean, q...``), keeping only ``pool``'s series.

        :param frame: forecast rows in the forecast contract.
        :param pool: pool name to keep (None keeps every series; their resources must not repeat).
        """
        series: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        if frame is None or len(frame) == 0:
            return cls(series)
        columns = [c for c in frame.columns if c in ("mean", KNOWN) or (c.startswith("q") and _is_level(c))]
        interval = 5 * _NS_PER_MIN
        for sid, rows in frame.groupby("series_id", sort=False):
            key = parse_series_id(str(sid))
            if pool is not None and key.pool != pool:
                continue
            ts = _ns(rows["ts"])
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
            values = {c: rows[c].to_numpy(dtype=float)[order] for c in columns}
            series[key.resource] = (ts, values)
            if len(ts) > 1:
                interval = int(np.median(np.diff(ts)))
        return cls(series, interval)


def _is_level(column: str) -> bool:
    try:
        return 0 < float(column[1:]) < 1
    except ValueError:
        return False


def _ns(values: pd.Series | Sequence) -> np.ndarray:
    stamps = pd.to_datetime(pd.Series(values), utc=True)
    return stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _to_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(pd.Timestamp(moment).value)


def _column(values: Mapping[str, np.ndarray], level: float) -> tuple[str, np.ndarray] | None:
    """The quantile column for ``level``; if absent, the nearest stored level above it (else the highest)."""
    name = quantile_column(level)
    if name in values:
        return name, values[name]
    levels = sorted(float(c[1:]) for c in values if c.startswith("q"))
    if not levels:
        return ("mean", values["mean"]) if "mean" in values else None
    above = [lv for lv in levels if lv >= level]
    chosen = above[0] if above else levels[-1]
    name = quantile_column(chosen)
    return name, values[name]


@dataclass(frozen=True)
class _Demand:
    value: float
    source: str  # quantile column, or a description of observed demand
    ts_ns: int | None = None  # bucket the value comes from (formatted only when a reason is written)
    low: bool = False  # baseline only: a predicted low-demand period

    @property
    def at(self) -> str:
        if self.ts_ns is None:
            return self.source
        when = datetime.fromtimestamp(self.ts_ns / 1e9, UTC).strftime("%H:%M")
        return f"{self.source} at {when}"


def _window_max(
    view: ForecastView, resource: str, level: float, start_ns: int, end_ns: int
) -> _Demand | None:
    """Max of the quantile over buckets overlapping ``[start, end)``; None when the pool has no such series."""
    entry = view.series.get(resource)
    if entry is None:
        return None
    picked = _column(entry[1], level)
    return _column_max(view, resource, picked[0], start_ns, end_ns) if picked else None


def _column_max(view: ForecastView, resource: str, name: str, start_ns: int, end_ns: int) -> _Demand | None:
    """Max of one forecast column over buckets overlapping ``[start, end)``; None without it."""
    entry = view.series.get(resource)
    if entry is None or name not in entry[1] or len(entry[0]) == 0:
        return None
    ts, column = entry[0], entry[1][name]
    lo = int(ts.searchsorted(start_ns - view.interval_ns, side="right"))
    hi = int(ts.searchsorted(end_ns, side="left"))
    if hi <= lo:  # the window lies outside the forecast: use its nearest bucket
        idx = len(ts) - 1 if start_ns >= ts[-1] else 0
        lo, hi = idx, idx + 1
    best, best_i = None, lo
    # windows are a few buckets: a Python loop beats numpy's nan-reductions here
    for i, x in enumerate(column[lo:hi].tolist(), start=lo):
        if x == x and (best is None or x > best):
            best, best_i = x, i
    if best is None:
        return None
    return _Demand(float(best), name, int(ts[best_i]))


def _horizon_median(view: ForecastView, resource: str, column: str) -> float:
    key = (resource, column)
    cached = view.medians.get(key)
    if cached is None:
        cached = float(np.nanmedian(view.series[resource][1][column]))
        view.medians[key] = cached
    return cached


# --------------------------------------------------------------------------------------------- maths


def _unit(pool: CapacityPool, resource: str, tier_1: bool = False) -> float:
    if resource == "slots":
        return float(pool.slots)
    machine = pool.machine
    if resource == "cpu":
        return machine.vcpus
    if resource == "memory":
        return machine.memory_gib
    return machine.egress_mbps(tier_1)


def _instance_capacity(pool: CapacityPool, instance: InstanceState, resource: str) -> float:
    if resource == "slots":  # the worker's concurrency, whatever the VM's machine type
        return float(pool.slots)
    spec = machines.lookup(instance.machine_type) if instance.machine_type else None
    spec = spec or pool.machine
    if resource == "cpu":
        return spec.vcpus
    if resource == "memory":
        return spec.memory_gib
    return spec.egress_mbps(instance.tier_1)


def _ceil(x: float) -> int:
    # A finite but absurd demand over a small unit is inf here; max_instances caps the count later.
    return max(0, math.ceil(min(x, _MAX_COUNT) - 1e-6))


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"


_UNITS = {"cpu": "vCPU", "memory": "GiB", "storage": "GiB", "network": "Mbit/s", "slots": "slots"}

# --------------------------------------------------------------------------------------------- planner


def plan(
    forecast: pd.DataFrame | ForecastView | None,
    state: PoolState,
    pool: CapacityPool,
    now: datetime,
    *,
    busy_instances: Iterable[str] = frozenset(),
    recent_demand: pd.DataFrame | Mapping[str, Sequence[float]] | None = None,
    interruptible_fraction: float = 0.0,
) -> Plan:
    """Turn a forecast and the pool's current capacity into a Plan of actions, each with its reason.

    :param forecast: forecast rows for this pool (forecast contract), or a prebuilt :class:`ForecastView`.
    :param state: current capacity of the pool.
    :param pool: the pool and its policy.
    :param now: the planning time (UTC).
    :param busy_instances: hostnames (or instance names) running an Airflow task: never released.
    :param recent_demand: observed demand: demand rows (``series_id, ts, value``) or resource -> values
        one planning interval apart, newest last. The reactive rule reads its stabilisation window; a
        forecast-driven pool reads the newest value (guard) and ``policy.cycle_window_days`` (daily-cycle
        check). None: a forecast-driven pool follows its forecast unguarded.
    :param interruptible_fraction: share of demand from tasks marked interruptible (goes to spot).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    key = _cycle_key(pool, now)
    result = Plan(plan_id=f"{pool.name}@{key}", pool=pool.name, created_at=now, mode=pool.mode)
    cycle = _read_cycle(
        forecast, state, pool, now, key, busy_instances, recent_demand, interruptible_fraction
    )
    # the capacity change, one rule at a time; each reads what the rules before it decided
    draft = _Draft()
    _scale_out(cycle, draft)
    _hold_min_instances(cycle, draft)
    _scale_in(cycle, draft)
    _cap_additions_at_max(cycle, draft, result)
    _release_above_max(cycle, draft, result)
    _split_spot(cycle, draft)
    _cap_budget(cycle, draft, result)
    # the actions: additions first (a new disk may attach to a VM this plan launches), then releases
    _add_capacity_actions(cycle, draft, result)
    _release_actions(cycle, draft, result)
    # the per-VM and storage rules size against the pool as it will be
    after = _after(cycle, draft)
    _vertical(cycle, after, result)
    _bandwidth(cycle, after, result)
    storage_added = _storage(cycle, after, result)
    result.summary.update(_summary(cycle, draft, after, storage_added))
    return result


@dataclass(frozen=True, slots=True)
class _Cycle:
    """What one planning cycle reads: the pool, its capacity now, the sizing rule and the demand to cover.

    :param key: the planning bucket's start (ISO): part of the plan id and of every request id.
    :param busy: instance names running an Airflow task (never released, never resized).
    :param live: the pool's live instances.
    :param up: demand to cover, per resource.
    :param hold: upper bound over the stabilisation window, per resource (scale-in keeps it).
    :param base: the baseline standard VMs carry, per resource (spot split).
    :param counts: instances per provisioning; a MIG counts its target size (it converges to it).
    :param current: instances now (standard + spot).
    :param capacity: capacity now, per counted resource.
    :param interruptible_fraction: share of demand from interruptible tasks (spot split).
    """

    pool: CapacityPool
    state: PoolState
    key: str
    busy: set[str]
    live: list[InstanceState]
    sizing: _Sizing
    up: dict[str, _Demand]
    hold: dict[str, _Demand]
    base: dict[str, _Demand]
    counts: dict[Provisioning, int]
    current: int
    capacity: dict[str, float]
    interruptible_fraction: float

    @property
    def is_mig(self) -> bool:
        return self.pool.backend is Backend.MANAGED_INSTANCE_GROUP

    @property
    def utilization(self) -> float:
        return self.sizing.utilization

    def utilization_of(self, resource: str) -> float:
        return self.sizing.utilization_of(resource)


@dataclass(slots=True)
class _Draft:
    """The plan's capacity change while the rules refine it, before it is written as actions.

    :param add: instances to add (before the spot split).
    :param binding: the resource (or ``min_instances``) that asks for them.
    :param releases: idle instances to release, in release order.
    :param why_release: instance name -> the rule that released it (the action's reason).
    :param standard: standard instances to add (after the spot split).
    :param spot: spot instances to add.
    """

    add: int = 0
    binding: str = ""
    releases: list[InstanceState] = field(default_factory=list)
    why_release: dict[str, str] = field(default_factory=dict)
    standard: int = 0
    spot: int = 0


@dataclass(frozen=True, slots=True)
class _After:
    """The pool once the plan is applied: the instances kept and the count per provisioning."""

    live: list[InstanceState]
    standard: int
    spot: int

    @property
    def instances(self) -> int:
        return self.standard + self.spot


def _cycle_key(pool: CapacityPool, now: datetime) -> str:
    """The planning bucket ``now`` falls in: plans within one interval share their request ids."""
    bucket = pd.Timestamp(now).floor(f"{int(pool.policy.planning_interval_minutes * 60)}s")
    return bucket.isoformat()


def _read_cycle(
    forecast: pd.DataFrame | ForecastView | None,
    state: PoolState,
    pool: CapacityPool,
    now: datetime,
    key: str,
    busy_instances: Iterable[str],
    recent_demand: pd.DataFrame | Mapping[str, Sequence[float]] | None,
    interruptible_fraction: float,
) -> _Cycle:
    """Rules 0 and 1: which rule sizes the pool, the demand it covers, and the pool's capacity now."""
    busy = {_host_key(h) for h in busy_instances if h}
    live = state.live()
    # 0. its forecast, or the reactive rule when prediction cannot help
    recent = _recent_series(recent_demand, pool, now)
    sizing = _sizing(pool, recent)
    # 1. demand to cover (up) and the upper bound over the stabilisation window (hold), per resource
    seasonal = _seasonal_series(recent_demand, recent, pool, now)
    up, hold, base = _demands(forecast, recent, seasonal, pool, now, sizing)
    counts = _current_counts(state, pool)
    return _Cycle(
        pool=pool,
        state=state,
        key=key,
        busy=busy,
        live=live,
        sizing=sizing,
        up=up,
        hold=hold,
        base=base,
        counts=counts,
        current=counts[Provisioning.STANDARD] + counts[Provisioning.SPOT],
        capacity={r: _capacity(state, pool, r, counts) for r in COUNT_RESOURCES},
        interruptible_fraction=interruptible_fraction,
    )


# ----------------------------------------------------------------- planner: sizing rule, demand, capacity now


def _host_key(host: str) -> str:
    """Instance name from a hostname: Airflow reports the FQDN (``name.zone.c.project.internal``)."""
    return str(host).strip().lower().split(".", 1)[0]


def _current_counts(state: PoolState, pool: CapacityPool) -> dict[Provisioning, int]:
    if pool.backend is Backend.MANAGED_INSTANCE_GROUP:
        return {
            Provisioning.STANDARD: int(state.target_sizes.get(pool.group, 0)),
            Provisioning.SPOT: int(state.target_sizes.get(pool.spot_group, 0)) if pool.spot_group else 0,
        }
    return {
        Provisioning.STANDARD: len(state.live(Provisioning.STANDARD)),
        Provisioning.SPOT: len(state.live(Provisioning.SPOT)),
    }


def _capacity(
    state: PoolState, pool: CapacityPool, resource: str, counts: Mapping[Provisioning, int]
) -> float:
    if pool.backend is Backend.MANAGED_INSTANCE_GROUP:
        return (counts[Provisioning.STANDARD] + counts[Provisioning.SPOT]) * _unit(pool, resource)
    return float(sum(_instance_capacity(pool, i, resource) for i in state.live()))


@dataclass(frozen=True)
class _Sizing:
    """The rule that sizes the pool this cycle.

    :param signal: forecast, or recent demand (the reactive rule, also the no-cycle fallback).
    :param utilization: planned utilisation of each instance.
    :param guard: forecast signal: utilisation at which the newest observed demand bounds the plan (0: none).
    :param why: the rule, for ``Plan.summary`` and the action reasons.
    """

    signal: Signal
    utilization: float
    guard: float = 0.0
    why: str = ""

    def utilization_of(self, resource: str) -> float:
        """Planned utilisation of ``resource``: task slots are always planned full. Headroom keeps CPU
        and memory off saturation; a worker with a free slot is just idle (Airflow's KEDA rule is
        tasks / concurrency, no headroom)."""
        return 1.0 if resource == "slots" else self.utilization


#: The resource whose daily cycle decides, in order of preference (the autoscaler's own rule is CPU).
_CYCLE_RESOURCES = ("cpu", "memory", "network")


def _sizing(pool: CapacityPool, recent: Mapping[str, np.ndarray]) -> _Sizing:
    """The rule that sizes the pool, with the service-level choice that set it (if any) in its reason."""
    rule = _rule(pool, recent)
    if pool.policy.chosen:
        return _Sizing(rule.signal, rule.utilization, rule.guard, f"{rule.why}; {pool.policy.chosen}")
    return rule


def _rule(pool: CapacityPool, recent: Mapping[str, np.ndarray]) -> _Sizing:
    """Forecast or reactive rule: a forecast-driven pool whose demand has no daily cycle goes reactive."""
    policy = pool.policy
    if policy.signal is Signal.RECENT_DEMAND:
        return _Sizing(Signal.RECENT_DEMAND, policy.target_utilization, why="reactive rule (recent_demand)")
    guard = policy.guard_utilization if recent and any(len(v) for v in recent.values()) else 0.0
    if not recent or policy.min_daily_cycle <= -1:
        # Switch off (a pool following its service-level choice): the forecast, still guarded.
        return _Sizing(Signal.FORECAST, policy.target_utilization, guard, "forecast")
    resource = next((r for r in _CYCLE_RESOURCES if len(recent.get(r, ())) > 0), None)
    if resource is None:
        return _Sizing(Signal.FORECAST, policy.target_utilization, guard, "forecast")
    lag = max(1, round(1440.0 / policy.planning_interval_minutes))
    values = recent[resource][-int(round(policy.cycle_window_days * lag)) :]
    cycle = daily_cycle(values, lag)
    guarded = f", guard: observed / {guard:g}" if guard else ""
    if cycle is not None and cycle >= policy.min_daily_cycle:
        why = f"forecast ({resource} daily-cycle autocorrelation {cycle:.2f} >= {policy.min_daily_cycle:g}{guarded})"
        return _Sizing(Signal.FORECAST, policy.target_utilization, guard, why)
    seen = (
        f"autocorrelation {cycle:.2f} < {policy.min_daily_cycle:g}"
        if cycle is not None
        else f"less than 1.5 days of {resource} demand"
    )
    why = (
        f"reactive fallback ({resource} demand has no daily cycle to predict: {seen}; "
        f"utilisation {policy.fallback_utilization:g})"
    )
    return _Sizing(Signal.RECENT_DEMAND, policy.fallback_utilization, why=why)


def daily_cycle(values: np.ndarray, lag: int) -> float | None:
    """Lag-one-day autocorrelation of ``values`` (one per planning interval), None below 1.5 days.

    A flat series (no variation on either side) has no cycle: 0.

    :param values: demand, oldest first.
    :param lag: buckets per day.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < int(lag * MIN_CYCLE_DAYS):
        return None
    a, b = values[:-lag], values[lag:]
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    if denom <= 0:
        return 0.0
    return float(a @ b) / denom


_Demands = dict[str, _Demand]  # resource -> demand


def _demands(
    forecast: pd.DataFrame | ForecastView | None,
    recent: Mapping[str, np.ndarray],
    seasonal: Mapping[str, np.ndarray],
    pool: CapacityPool,
    now: datetime,
    sizing: _Sizing,
) -> tuple[_Demands, _Demands, _Demands]:
    """Demand to cover (up), upper bound over the stabilisation window (hold), baseline (base)."""
    view = None
    if forecast is not None:
        view = (
            forecast if isinstance(forecast, ForecastView) else ForecastView.from_frame(forecast, pool.name)
        )
    if sizing.signal is Signal.RECENT_DEMAND:
        observed = _observed_demands(recent, pool)
        return _with_known_work(observed, view, pool, now) if view else observed
    if view is None:
        return {}, {}, {}
    return _forecast_demands(view, recent, seasonal, pool, now, sizing)


def _with_known_work(
    demands: tuple[_Demands, _Demands, _Demands], view: ForecastView, pool: CapacityPool, now: datetime
) -> tuple[_Demands, _Demands, _Demands]:
    """The reactive rule, but never below the known work due after the lead time, nor released
    before it.

    Known work (scheduled runs, the next stages of running ones: the forecast's ``known`` column) is
    not a guess: it needs capacity when it starts whether or not the pool's demand has a daily cycle.
    The reactive rule alone boots workers only after the run's tasks queue.
    """
    up, hold, base = dict(demands[0]), dict(demands[1]), demands[2]
    now_ns, step = _to_ns(now), int(pool.policy.planning_interval_minutes * _NS_PER_MIN)
    stab = int(pool.scale_in.stabilization_minutes * _NS_PER_MIN)
    for r in view.series:
        lead = int(pool.lead_time_minutes.for_resource(r) * _NS_PER_MIN)
        for out, start, end in (
            (up, now_ns + lead, now_ns + lead + step),
            (hold, now_ns, now_ns + lead + max(stab, step)),
        ):
            known = _column_max(view, r, KNOWN, start, end)
            if known is not None and known.value > (out[r].value if r in out else 0.0):
                out[r] = _Demand(known.value, "known work", known.ts_ns)
    return up, hold, base


def _observed_demands(
    recent: Mapping[str, np.ndarray], pool: CapacityPool
) -> tuple[_Demands, _Demands, _Demands]:
    """The reactive rule: the newest observed demand, held at the stabilisation window's peak."""
    up: _Demands = {}
    hold: _Demands = {}
    base: _Demands = {}
    window = _stabilization_buckets(pool)
    for r, values in recent.items():
        values = values[-window:]
        if len(values) == 0:
            continue
        latest = float(values[-1])
        up[r] = _Demand(latest, "latest observed demand")
        hold[r] = _Demand(
            float(np.max(values)), f"peak observed over {pool.scale_in.stabilization_minutes:g} min"
        )
        base[r] = _Demand(float(np.min(values)), "lowest observed demand in the window")
    return up, hold, base


def _forecast_demands(
    view: ForecastView,
    recent: Mapping[str, np.ndarray],
    seasonal: Mapping[str, np.ndarray],
    pool: CapacityPool,
    now: datetime,
    sizing: _Sizing,
) -> tuple[_Demands, _Demands, _Demands]:
    """The forecast rule: the quantile over the window after each resource's lead time, guarded."""
    up: _Demands = {}
    hold: _Demands = {}
    base: _Demands = {}
    policy = pool.policy
    now_ns = _to_ns(now)
    step = int(policy.planning_interval_minutes * _NS_PER_MIN)
    upper = max(pool.scale_in.quantile, policy.quantile)
    for r in view.series:
        # capacity ordered now is ready after the lead time: cover the interval that starts then
        lead = int(pool.lead_time_minutes.for_resource(r) * _NS_PER_MIN)
        d = _window_max(view, r, policy.quantile, now_ns + lead, now_ns + lead + step)
        if d is None:
            continue
        stab = int(pool.scale_in.stabilization_minutes * _NS_PER_MIN)
        h = _window_max(view, r, upper, now_ns, now_ns + lead + max(stab, step))
        d = _guarded(d, r, recent.get(r), sizing)
        d = _seasonal_floor(d, r, seasonal.get(r), pool, lead, step)
        up[r] = d
        hold[r] = h if h is not None and h.value >= d.value else d
        if r in _BASELINE_RESOURCES and pool.has_spot:
            b = _window_max(view, r, pool.spot.baseline_quantile, now_ns + lead, now_ns + lead + step)
            if b is not None:
                low = b.value < _horizon_median(view, r, b.source)
                base[r] = _Demand(b.value, b.source, b.ts_ns, low)
    return up, hold, base


def _guarded(d: _Demand, resource: str, seen: np.ndarray | None, sizing: _Sizing) -> _Demand:
    """Never less than the newest observed demand / guard: a forecast that misses a level shift."""
    if sizing.guard > 0 and resource in COUNT_RESOURCES and seen is not None and len(seen):
        # Demand is planned at its utilisation: this much planned demand holds observed / guard.
        g = float(seen[-1]) * sizing.utilization_of(resource) / sizing.guard
        if g > d.value:
            return _Demand(g, f"observed demand / guard utilisation {sizing.guard:g}")
    return d


#: Buckets each side of the same time of day that the seasonal floor also reads: demand that recurs at
#: a time of day recurs within a few minutes of it, not in the same bucket.
SEASONAL_FLOOR_SPREAD = 1


def seasonal_floor_buckets(pool: CapacityPool, days: int | None = None) -> int:
    """Observed buckets, newest last, that the seasonal floor reads (0: no floor).

    :param pool: the pool (its interval and lead times).
    :param days: the floor's days (None: the pool's ``policy.seasonal_floor_days``).
    """
    days = pool.policy.seasonal_floor_days if days is None else days
    if days <= 0:
        return 0
    interval = pool.policy.planning_interval_minutes
    per_day = max(1, round(1440.0 / interval))
    lead = min(pool.lead_time_minutes.for_resource(r) for r in COUNT_RESOURCES)
    return days * per_day + SEASONAL_FLOOR_SPREAD + 1 - math.floor(lead / interval)


def _seasonal_floor(
    d: _Demand, resource: str, seen: np.ndarray | None, pool: CapacityPool, lead_ns: int, step_ns: int
) -> _Demand:
    """Never less than the demand observed at the same time of day over the last days.

    ``seen`` is one value per planning interval, newest last, the newest being the bucket before now:
    the bucket ``k`` intervals after now lies ``days x buckets a day - k`` buckets back on each day.
    """
    days = pool.policy.seasonal_floor_days
    if days <= 0 or resource not in COUNT_RESOURCES or seen is None or len(seen) == 0:
        return d
    per_day = max(1, round(86400e9 / step_ns))
    # the buckets overlapping [now + lead, now + lead + interval), as the forecast's window
    first = lead_ns // step_ns - SEASONAL_FLOOR_SPREAD
    last = -(-(lead_ns + step_ns) // step_ns) - 1 + SEASONAL_FLOOR_SPREAD
    n, peak = len(seen), -math.inf
    for day in range(1, days + 1):
        lo, hi = max(0, n + first - day * per_day), min(n, n + last + 1 - day * per_day)
        window = seen[lo:hi]
        window = window[np.isfinite(window)]
        if window.size:
            peak = max(peak, float(window.max()))
    if peak > d.value:
        return _Demand(peak, f"demand at this time of day over the last {days} day(s)")
    return d


def _seasonal_series(
    recent_demand: pd.DataFrame | Mapping[str, Sequence[float]] | None,
    recent: dict[str, np.ndarray],
    pool: CapacityPool,
    now: datetime,
) -> Mapping[str, np.ndarray]:
    """Observed demand as the seasonal floor reads it: one value per planning interval, the newest
    the last bucket completed before ``now``, a gap NaN (a day back is a count of buckets, so a gap
    must not shift it). Values without timestamps are taken as such already."""
    if not isinstance(recent_demand, pd.DataFrame) or not pool.policy.seasonal_floor_days:
        return recent
    step = pd.Timedelta(minutes=pool.policy.planning_interval_minutes)
    grid = pd.date_range(
        end=pd.Timestamp(now).floor(step) - step, periods=seasonal_floor_buckets(pool), freq=step
    )
    out: dict[str, np.ndarray] = {}
    stamps = pd.to_datetime(recent_demand["ts"], utc=True)
    for sid, rows in recent_demand.groupby("series_id", sort=False):
        key = parse_series_id(str(sid))
        if key.pool == pool.name:
            seen = pd.Series(rows["value"].to_numpy(dtype=float), index=stamps[rows.index].dt.floor(step))
            out[key.resource] = seen.groupby(level=0).mean().reindex(grid).to_numpy(dtype=float)
    return out


def _stabilization_buckets(pool: CapacityPool) -> int:
    """Observed buckets the reactive rule reads: the stabilisation window (at least one interval)."""
    interval = pool.policy.planning_interval_minutes
    return max(1, math.ceil(max(pool.scale_in.stabilization_minutes, interval) / interval - 1e-9))


def _recent_series(
    recent: pd.DataFrame | Mapping[str, Sequence[float]] | None, pool: CapacityPool, now: datetime
) -> dict[str, np.ndarray]:
    """Observed demand per resource up to ``now``, oldest first (rows of other pools are ignored)."""
    if recent is None:
        return {}
    if isinstance(recent, Mapping):
        return {r: np.asarray(v, dtype=float) for r, v in recent.items()}
    if len(recent) == 0:
        return {}
    out: dict[str, np.ndarray] = {}
    stamps = pd.to_datetime(recent["ts"], utc=True)
    window = recent[stamps <= pd.Timestamp(now)]
    for sid, rows in window.groupby("series_id", sort=False):
        key = parse_series_id(str(sid))
        if key.pool == pool.name:
            rows = rows.sort_values("ts")
            out[key.resource] = rows["value"].dropna().to_numpy(dtype=float)
    return out


# ------------------------------------------------------------------------------------ planner: capacity rules


def _scale_out(cycle: _Cycle, draft: _Draft) -> None:
    """Rule 2: instances to add; the binding resource wins and gaps under the pool's threshold are ignored."""
    pool = cycle.pool
    # a MIG's template is not changed here, so only an instances pool can count on Tier_1 egress
    tier_1_ok = pool.allow_tier_1 and not cycle.is_mig and pool.machine.supports_tier_1
    for r in COUNT_RESOURCES:
        d = cycle.up.get(r)
        if d is None:
            continue
        u = cycle.utilization_of(r)
        unit = _unit(pool, r, tier_1=tier_1_ok) * u
        have = cycle.capacity[r]
        if d.value > have * u + pool.thresholds.for_resource(r) + _EPS:
            extra = _ceil((d.value - have * u) / unit)
            if extra > draft.add:
                draft.add, draft.binding = extra, r


def _hold_min_instances(cycle: _Cycle, draft: _Draft) -> None:
    """Rule 4 (floor): never below ``min_instances``, whatever the forecast says."""
    if cycle.current < cycle.pool.min_instances:
        floor_add = cycle.pool.min_instances - cycle.current
        if floor_add > draft.add:
            draft.add, draft.binding = floor_add, "min_instances"


def _release_order(live: Sequence[InstanceState], busy: set[str], pool: CapacityPool) -> list[InstanceState]:
    """Idle instances in release order: spot first, then booting ones, then newest first."""
    idle = [i for i in live if i.name.lower() not in busy]
    floor = datetime.min.replace(tzinfo=UTC)

    def key(i: InstanceState) -> tuple:
        created = i.created if i.created is not None else floor
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return (
            0 if i.provisioning == Provisioning.SPOT else 1,
            0 if i.status in BOOTING_STATUSES else 1,
            -created.timestamp(),
            i.name,
        )

    return sorted(idle, key=key)


def _scale_in(cycle: _Cycle, draft: _Draft) -> None:
    """Rule 3: when nothing is added, release idle instances the upper bound over the window leaves spare."""
    if draft.add != 0:
        return
    keep = _scale_in_floor(cycle)
    if not keep:
        return  # no cpu/memory/network forecast (or observed demand) for this pool: never shrink blind
    chosen, remaining = _spare_instances(cycle, keep)
    if not chosen:
        return
    pool, hold = cycle.pool, cycle.hold
    bound = ", ".join(f"{r} {hold[r].at} = {_fmt(hold[r].value)} {_UNITS[r]}" for r in keep)
    left = ", ".join(f"{r} {_fmt(remaining[r])}" for r in keep)
    reason = (
        f"scale-in: upper bound over now..now+{pool.lead_time_minutes.boot + pool.scale_in.stabilization_minutes:g} min "
        f"({bound}) stays below the remaining capacity ({left}) at utilisation {cycle.utilization:g}; "
        "idle instance, spot before standard"
    )
    for inst in chosen:
        draft.why_release[inst.name] = f"{reason}: release {inst.name} ({inst.provisioning}, {inst.status})"
    draft.releases = chosen


def _scale_in_floor(cycle: _Cycle) -> dict[str, float]:
    """Capacity each resource must keep: its upper bound plus the pool's threshold, at planned utilisation."""
    if not cycle.hold and cycle.sizing.signal is Signal.FORECAST:
        return {}  # no forecast for this pool: never shrink blind
    pool, hold = cycle.pool, cycle.hold
    return {
        r: (hold[r].value + pool.thresholds.for_resource(r)) / cycle.utilization_of(r)
        for r in COUNT_RESOURCES
        if r in hold
    }


def _spare_instances(
    cycle: _Cycle, keep: Mapping[str, float]
) -> tuple[list[InstanceState], dict[str, float]]:
    """Idle instances (in release order) whose release keeps every resource above ``keep``; and what remains."""
    pool = cycle.pool
    remaining = dict(cycle.capacity)
    count = cycle.current
    chosen: list[InstanceState] = []
    for inst in _release_order(cycle.live, cycle.busy, pool):
        if count <= pool.min_instances or len(chosen) >= pool.scale_in.max_release_per_cycle:
            break
        # a MIG releases only instances of its own groups (it cannot delete another group's VM)
        if cycle.is_mig and inst.group not in (pool.group, pool.spot_group):
            continue
        take = {r: _instance_capacity(pool, inst, r) for r in keep}
        if all(remaining[r] - take[r] >= keep[r] - _EPS for r in keep):
            for r in keep:
                remaining[r] -= take[r]
            count -= 1
            chosen.append(inst)
    return chosen, remaining


def _cap_additions_at_max(cycle: _Cycle, draft: _Draft, result: Plan) -> None:
    """Rule 4 (ceiling): never add above ``max_instances``; the cut is written in ``Plan.capped``."""
    pool, current = cycle.pool, cycle.current
    if current + draft.add > pool.max_instances:
        allowed = max(0, pool.max_instances - current)
        result.capped.append(
            f"max_instances {pool.max_instances}: wanted {current + draft.add} instances "
            f"({draft.binding} binds), holding {current + allowed}"
        )
        draft.add = allowed


def _release_above_max(cycle: _Cycle, draft: _Draft, result: Plan) -> None:
    """Rule 4 (ceiling): a pool above ``max_instances`` (the cap was lowered) releases idle instances."""
    pool, current, releases = cycle.pool, cycle.current, draft.releases
    if current - len(releases) <= pool.max_instances:
        return
    already = {i.name for i in releases}
    for inst in _release_order(cycle.live, cycle.busy, pool):
        if current - len(releases) <= pool.max_instances:
            break
        if inst.name not in already:
            releases.append(inst)
            draft.why_release[inst.name] = (
                f"max_instances {pool.max_instances}: {current} live instances; release idle {inst.name} "
                f"({inst.provisioning})"
            )
    if current - len(releases) > pool.max_instances:
        result.capped.append(
            f"max_instances {pool.max_instances}: {current - len(releases)} instances remain because "
            "the rest run Airflow tasks"
        )


# ----------------------------------------------------------------------------------- planner: spot and budget


def _split_spot(cycle: _Cycle, draft: _Draft) -> None:
    """Rule 5: split the additions: standard VMs carry the baseline, spot VMs the rest."""
    add = draft.add
    if add <= 0:
        draft.standard, draft.spot = 0, 0
        return
    if not cycle.pool.has_spot:
        draft.standard, draft.spot = add, 0
        return
    std_add = min(add, max(0, _standard_target(cycle) - cycle.counts[Provisioning.STANDARD]))
    draft.standard, draft.spot = std_add, add - std_add


def _standard_target(cycle: _Cycle) -> int:
    """Standard instances the pool should have: ``spot.min_standard``, or the baseline's if larger."""
    spot = cycle.pool.spot
    if spot.interruptible or spot.mode is SpotMode.ALL:
        return spot.min_standard
    need = _baseline_instances(cycle)
    if any(d.low for d in cycle.base.values()):
        # a predicted low-demand period needs less standard capacity than the baseline says
        need = _ceil(need * spot.low_demand_standard_share)
    return max(spot.min_standard, need)


def _baseline_instances(cycle: _Cycle) -> int:
    """Instances the baseline needs (binding of cpu, memory and slots), less the interruptible work's share."""
    pool = cycle.pool
    need = 0
    for r in _BASELINE_RESOURCES:
        if r in cycle.base:
            demand = cycle.base[r].value * (1.0 - min(max(cycle.interruptible_fraction, 0.0), 1.0))
            need = max(need, _ceil(demand / (_unit(pool, r) * cycle.utilization_of(r))))
    return need


def _split_rule(pool: CapacityPool, base: Mapping[str, _Demand]) -> str:
    if not pool.has_spot:
        return "no spot capacity configured"
    if pool.spot.interruptible or pool.spot.mode is SpotMode.ALL:
        return f"interruptible work: spot above {pool.spot.min_standard} standard"
    period = "low-demand period" if any(d.low for d in base.values()) else "normal period"
    return f"standard carries the q{pool.spot.baseline_quantile:g} baseline ({period}), spot the rest"


_CostOf = Callable[..., float]  # (standard added, spot added[, extra releases]) -> hourly cost


def _cap_budget(cycle: _Cycle, draft: _Draft, result: Plan) -> None:
    """Rule 4 (budget): keep the hourly cost within ``budget_per_hour``, the cheapest way first.

    Standard additions become spot, then additions are cut, then idle instances are released; never
    below ``min_instances`` (which, with busy instances, may cost more than the budget).
    """
    budget = cycle.pool.budget_per_hour
    if budget is None:
        return
    cost = _cost_with(cycle, draft.releases)
    wanted = cost(draft.standard, draft.spot)
    if wanted <= budget + _EPS:
        return
    asked = (draft.standard, draft.spot)
    _budget_standard_to_spot(cycle, draft, cost, budget)
    _budget_cut_additions(cycle, draft, cost, budget)
    extra = _budget_release_idle(cycle, draft, cost, budget)
    final = cost(draft.standard, draft.spot, extra)
    msg = (
        f"budget_per_hour {budget:g}: wanted +{asked[0]} standard +{asked[1]} spot costing {wanted:.2f}/h; "
        f"planned +{draft.standard} standard +{draft.spot} spot"
        + (f" and released {len(extra)} idle" if extra else "")
        + f", costing {final:.2f}/h"
    )
    if final > budget + _EPS:
        msg += " (min_instances and instances running tasks alone exceed the budget)"
    result.capped.append(msg)
    draft.releases.extend(extra)


def _cost_with(cycle: _Cycle, releases: Sequence[InstanceState]) -> _CostOf:
    """The pool's hourly cost after ``releases`` (and any extra ones), with standard and spot VMs added."""
    pool, state, live, counts = cycle.pool, cycle.state, cycle.live, cycle.counts
    released = {i.name for i in releases}

    def cost(std: int, spot: int, extra_released: Sequence[InstanceState] = ()) -> float:
        gone = released | {i.name for i in extra_released}
        if cycle.is_mig:
            kept_std = counts[Provisioning.STANDARD] - sum(
                1 for i in live if i.name in gone and i.provisioning == Provisioning.STANDARD
            )
            kept_spot = counts[Provisioning.SPOT] - sum(
                1 for i in live if i.name in gone and i.provisioning == Provisioning.SPOT
            )
            return hourly_cost(
                pool, standard=kept_std + std, spot=kept_spot + spot, storage_gib=state.storage_gib
            )
        kept = [i for i in live if i.name not in gone]
        return hourly_cost(pool, kept, standard=std, spot=spot, storage_gib=state.storage_gib)

    return cost


def _budget_standard_to_spot(cycle: _Cycle, draft: _Draft, cost: _CostOf, budget: float) -> None:
    """Standard additions above the ``spot.min_standard`` floor become spot: same capacity, lower price."""
    pool = cycle.pool
    if not pool.has_spot:
        return
    floor = max(0, pool.spot.min_standard - cycle.counts[Provisioning.STANDARD])
    movable = max(0, draft.standard - floor)
    while movable > 0 and cost(draft.standard, draft.spot) > budget + _EPS:
        draft.standard, draft.spot, movable = draft.standard - 1, draft.spot + 1, movable - 1


def _budget_cut_additions(cycle: _Cycle, draft: _Draft, cost: _CostOf, budget: float) -> None:
    """Cut additions, spot first, until the plan fits the budget or the pool is at ``min_instances``."""
    current = cycle.current - len(draft.releases)
    while cost(draft.standard, draft.spot) > budget + _EPS and (draft.spot + draft.standard) > 0:
        if current + draft.standard + draft.spot <= cycle.pool.min_instances:
            break
        if draft.spot > 0:
            draft.spot -= 1
        else:
            draft.standard -= 1


def _budget_release_idle(cycle: _Cycle, draft: _Draft, cost: _CostOf, budget: float) -> list[InstanceState]:
    """With no additions left and still over budget, release idle instances down to ``min_instances``."""
    extra: list[InstanceState] = []
    if not (cost(draft.standard, draft.spot) > budget + _EPS and draft.standard + draft.spot == 0):
        return extra
    current = cycle.current - len(draft.releases)
    released = {i.name for i in draft.releases}
    for inst in _release_order(cycle.live, cycle.busy, cycle.pool):
        if cost(0, 0, extra) <= budget + _EPS or current - len(extra) <= cycle.pool.min_instances:
            break
        if inst.name in released:
            continue
        extra.append(inst)
        draft.why_release[inst.name] = (
            f"budget cap {budget:g}/h: the pool costs {cost(0, 0):.2f}/h; release idle {inst.name} "
            f"({inst.provisioning})"
        )
    return extra


# ------------------------------------------------------------------------------------------- planner: actions


def _add_capacity_actions(cycle: _Cycle, draft: _Draft, result: Plan) -> None:
    """Write the additions: a MIG is resized to an absolute size, an instances pool launches named VMs."""
    why_up = _reason_up(cycle, draft.binding)
    for prov, n in ((Provisioning.STANDARD, draft.standard), (Provisioning.SPOT, draft.spot)):
        if n <= 0:
            continue
        split = f"{draft.standard} standard + {draft.spot} spot ({_split_rule(cycle.pool, cycle.base)})"
        reason = f"{why_up}; {split}"
        if cycle.is_mig:
            result.actions.append(_resize_group_action(cycle, draft.binding, prov, n, reason))
        else:
            result.actions.append(_launch_action(cycle, draft.binding, prov, n, reason))


def _res(binding: str) -> str:
    """The resource an addition is for: ``min_instances`` additions are counted as cpu."""
    return binding if binding in COUNT_RESOURCES else "cpu"


def _resize_group_action(cycle: _Cycle, binding: str, prov: Provisioning, n: int, reason: str) -> Action:
    pool = cycle.pool
    group = pool.spot_group if prov == Provisioning.SPOT else pool.group
    before = int(cycle.state.target_sizes.get(group, 0))
    return Action(
        pool=pool.name,
        kind=ActionKind.RESIZE_GROUP,
        amount=float(before + n),
        reason=f"{reason}: resize {group} {before} -> {before + n}",
        request_id=request_id_for(pool.name, cycle.key, ActionKind.RESIZE_GROUP, group, before, before + n),
        resource=_res(binding),
        provisioning=prov,
        target=group,
        details={"group": group, "from": before, "to": before + n, "zone": pool.zone},
    )


def _launch_action(cycle: _Cycle, binding: str, prov: Provisioning, n: int, reason: str) -> Action:
    pool = cycle.pool
    rid = request_id_for(pool.name, cycle.key, ActionKind.LAUNCH_INSTANCES, prov, cycle.current, n)
    # names derive from the request id, so a retried plan launches the same VMs (not new ones)
    prefix = (pool.launch.name_prefix or pool.name).replace("_", "-").replace(".", "-")[:40]
    return Action(
        pool=pool.name,
        kind=ActionKind.LAUNCH_INSTANCES,
        amount=float(n),
        reason=f"{reason}: launch {n} {prov} {pool.machine_type}",
        request_id=rid,
        resource=_res(binding),
        provisioning=prov,
        details={
            "names": [f"{prefix}-{rid[:8]}-{i}" for i in range(n)],
            "machine_type": pool.machine_type,
            "zone": pool.zone,
        },
    )


def _release_actions(cycle: _Cycle, draft: _Draft, result: Plan) -> None:
    """Write the releases; each names its VM, so only the chosen idle VMs go."""
    for inst in draft.releases:
        result.actions.append(
            Action(
                pool=cycle.pool.name,
                kind=ActionKind.RELEASE,
                amount=1.0,
                reason=draft.why_release[inst.name],
                request_id=request_id_for(cycle.pool.name, cycle.key, ActionKind.RELEASE, inst.name),
                resource="cpu",
                provisioning=inst.provisioning,
                target=inst.name,
                details={"instance": inst.name, "group": inst.group, "status": inst.status, "drain": True},
            )
        )


def _reason_up(cycle: _Cycle, binding: str) -> str:
    """Why capacity is added: the rule that sized it, and each resource's demand against its capacity."""
    pool, sizing = cycle.pool, cycle.sizing
    if binding == "min_instances":
        return f"{cycle.current} live instances < min_instances {pool.min_instances}"
    parts = []
    for r in COUNT_RESOURCES:
        if r in cycle.up:
            d = cycle.up[r]
            mark = " (binds)" if r == binding else ""
            have = _fmt(cycle.capacity[r] * cycle.utilization_of(r))
            parts.append(f"{r} {d.at} = {_fmt(d.value)} {_UNITS[r]} vs {have}{mark}")
    basis = (
        f"forecast at now+{pool.lead_time_minutes.boot:g} min boot lead"
        if sizing.signal is Signal.FORECAST
        else f"observed demand / target utilisation {cycle.utilization:g}"
    )
    if sizing.why.startswith("reactive fallback"):
        basis = f"{sizing.why}: {basis}"
    elif pool.policy.chosen:
        basis = f"{pool.policy.chosen}: {basis}"
    return f"{basis}: " + "; ".join(parts) + f" on {cycle.current} x {pool.machine_type}"


# --------------------------------------------------------- planner: the pool as it will be; vertical, network


def _after(cycle: _Cycle, draft: _Draft) -> _After:
    """The pool once the draft is applied (the vertical, network and storage rules size against it)."""
    gone = {r.name for r in draft.releases}
    released = {
        prov: sum(1 for r in draft.releases if r.provisioning == prov)
        for prov in (Provisioning.STANDARD, Provisioning.SPOT)
    }
    return _After(
        live=[i for i in cycle.live if i.name not in gone],
        standard=cycle.counts[Provisioning.STANDARD] + draft.standard - released[Provisioning.STANDARD],
        spot=cycle.counts[Provisioning.SPOT] + draft.spot - released[Provisioning.SPOT],
    )


def _vertical(cycle: _Cycle, after: _After, result: Plan) -> None:
    """Rule 6 (vertical): at ``max_instances`` with a cpu/memory gap left, move one idle VM to a larger type."""
    pool = cycle.pool
    # a MIG's VMs share one template: only an instances pool can resize a single VM
    if not pool.allow_vertical or cycle.is_mig or after.instances < pool.max_instances:
        return
    gaps = _vertical_gaps(cycle, after)
    if not gaps:
        return
    idle = [i for i in after.live if i.name.lower() not in cycle.busy and i.status == "RUNNING"]
    if not idle:
        result.capped.append("resize_instance: no idle running VM to grow (every VM runs a task)")
        return
    inst = min(idle, key=lambda i: (i.provisioning != Provisioning.STANDARD, i.name))
    spec = machines.lookup(inst.machine_type or pool.machine_type) or pool.machine
    choice = _larger_type(spec, gaps, result)
    if choice is not None:
        result.actions.append(_resize_instance_action(cycle, inst, spec, choice, gaps))


def _vertical_gaps(cycle: _Cycle, after: _After) -> dict[str, float]:
    """cpu and memory the pool still lacks after the plan (at full utilisation), above the thresholds."""
    pool, u = cycle.pool, cycle.utilization
    new_instances = max(0, after.instances - len(after.live))
    gaps = {}
    for r in ("cpu", "memory"):
        if r not in cycle.up:
            continue
        have = sum(_instance_capacity(pool, i, r) for i in after.live) + new_instances * _unit(pool, r)
        gap = cycle.up[r].value / u - have
        if gap > pool.thresholds.for_resource(r) / u + _EPS:
            gaps[r] = gap
    return gaps


def _larger_type(
    spec: machines.MachineType, gaps: Mapping[str, float], result: Plan
) -> machines.MachineType | None:
    """The smallest larger type of the family that closes every gap, else the family's largest."""
    choice = None
    for bigger in machines.larger_in_family(spec):
        if all(
            (bigger.vcpus if r == "cpu" else bigger.memory_gib)
            - (spec.vcpus if r == "cpu" else spec.memory_gib)
            >= g - _EPS
            for r, g in gaps.items()
        ):
            choice = bigger
            break
    larger = machines.larger_in_family(spec)
    if choice is None and larger:
        choice = larger[-1]
        result.capped.append(f"resize_instance: the largest {spec.family} type does not close the gap")
    if choice is None:
        result.capped.append(f"resize_instance: no larger machine type than {spec.name}")
    return choice


def _resize_instance_action(
    cycle: _Cycle,
    inst: InstanceState,
    spec: machines.MachineType,
    choice: machines.MachineType,
    gaps: Mapping[str, float],
) -> Action:
    pool = cycle.pool
    gap_text = ", ".join(f"{r} short {_fmt(g)}" for r, g in gaps.items())
    return Action(
        pool=pool.name,
        kind=ActionKind.RESIZE_INSTANCE,
        amount=choice.vcpus,
        reason=(
            f"at max_instances {pool.max_instances} the forecast still needs more ({gap_text}); "
            f"grow idle {inst.name} {spec.name} -> {choice.name}"
        ),
        request_id=request_id_for(pool.name, cycle.key, ActionKind.RESIZE_INSTANCE, inst.name, choice.name),
        resource=next(iter(gaps)),
        provisioning=inst.provisioning,
        target=inst.name,
        details={"instance": inst.name, "from": spec.name, "machine_type": choice.name},
    )


def _bandwidth(cycle: _Cycle, after: _After, result: Plan) -> None:
    """Rule 6 (network): give idle VMs Tier_1 (or a larger type) when per-VM egress cannot carry the forecast."""
    pool, d = cycle.pool, cycle.up.get("network")
    if d is None or after.instances <= 0:
        return
    have = sum(_instance_capacity(pool, i, "network") for i in after.live)
    have += max(0, after.instances - len(after.live)) * _unit(pool, "network")
    gap = d.value - have
    if gap <= pool.thresholds.network + _EPS:
        return
    if cycle.is_mig:
        result.capped.append(
            f"raise_bandwidth: network {d.at} = {_fmt(d.value)} Mbit/s exceeds {_fmt(have)} Mbit/s; a managed "
            "instance group needs a new instance template with Tier_1 (not changed automatically)"
        )
        return
    candidates = [
        i for i in after.live if i.name.lower() not in cycle.busy and i.status == "RUNNING" and not i.tier_1
    ]
    for inst in candidates:
        if gap <= pool.thresholds.network + _EPS:
            break
        raised = _bandwidth_raise(pool, inst)
        if raised is None:
            continue
        own, gain, details, how = raised
        gap -= gain
        reason = (
            f"network {d.at} = {_fmt(d.value)} Mbit/s > pool egress {_fmt(have)} Mbit/s; "
            f"give idle {inst.name} {how} (+{_fmt(gain)} Mbit/s)"
        )
        result.actions.append(_raise_bandwidth_action(cycle, inst, own, gain, details, reason))
    if gap > pool.thresholds.network + _EPS:
        result.capped.append(
            f"raise_bandwidth: {_fmt(gap)} Mbit/s of network demand left uncovered (no idle VM can be raised)"
        )


def _bandwidth_raise(
    pool: CapacityPool, inst: InstanceState
) -> tuple[machines.MachineType, float, dict[str, str], str] | None:
    """How one VM gets more egress: Tier_1 where allowed, else a larger type; None when it cannot.

    :returns: (its machine type, egress gained, the action's details, the change in words).
    """
    own = machines.lookup(inst.machine_type) or pool.machine
    if pool.allow_tier_1 and own.supports_tier_1:
        gain = own.egress_mbps(True) - own.egress_mbps(False)
        details = {"instance": inst.name, "tier": "TIER_1"}
        how = "Tier_1 networking"
    else:
        bigger = next(
            (m for m in machines.larger_in_family(own) if m.egress_mbps() > own.egress_mbps()), None
        )
        if bigger is None or not pool.allow_vertical:
            return None
        gain = bigger.egress_mbps() - own.egress_mbps()
        details = {"instance": inst.name, "machine_type": bigger.name}
        how = f"machine type {bigger.name}"
    if gain <= 0:
        return None
    return own, gain, details, how


def _raise_bandwidth_action(
    cycle: _Cycle,
    inst: InstanceState,
    own: machines.MachineType,
    gain: float,
    details: dict[str, str],
    reason: str,
) -> Action:
    pool = cycle.pool
    return Action(
        pool=pool.name,
        kind=ActionKind.RAISE_BANDWIDTH,
        amount=round(own.egress_mbps(False) + gain, 1),
        reason=reason,
        request_id=request_id_for(pool.name, cycle.key, ActionKind.RAISE_BANDWIDTH, inst.name, str(details)),
        resource="network",
        provisioning=inst.provisioning,
        target=inst.name,
        details=details,
    )


# ------------------------------------------------------------------------------------------- planner: storage


def _storage(cycle: _Cycle, after: _After, result: Plan) -> float:
    """Rule 6 (storage): grow the largest data disk, then create and attach new ones; returns GiB added.

    Storage never shrinks: that loses data.
    """
    d = cycle.up.get("storage")
    if d is None:
        return 0.0
    need = _storage_need(cycle, after, d, result)
    if need <= 0:
        return 0.0
    why = (
        f"storage {d.at} (now+{cycle.pool.lead_time_minutes.disk_attach:g} min attach lead) = "
        f"{_fmt(d.value)} GiB > {_fmt(cycle.state.storage_gib)} GiB"
    )
    added = 0.0
    grow = _grow_largest_disk(cycle, need, why, result)
    if grow > 0:
        need -= grow
        added += grow
    attach_to = _attach_target(after, result)
    for size in _create_disks(cycle, need, why, attach_to, result):
        added += size
    return added


def _storage_need(cycle: _Cycle, after: _After, d: _Demand, result: Plan) -> int:
    """Whole GiB to add: the forecast above the disks and threshold, within ``max_total_gib`` and the budget."""
    pool = cycle.pool
    have = cycle.state.storage_gib
    if d.value <= have + pool.thresholds.storage + _EPS:
        return 0
    need = min(d.value, pool.storage.max_total_gib) - have
    if d.value > pool.storage.max_total_gib:
        result.capped.append(
            f"storage max_total_gib {pool.storage.max_total_gib:g}: forecast {_fmt(d.value)} GiB capped"
        )
    if need <= 0:
        return 0
    if pool.budget_per_hour is not None:
        per_gib = pool.prices.disk_gib_month / 730.0
        room = max(0.0, pool.budget_per_hour - hourly_cost(pool, after.live, storage_gib=have))
        if per_gib > 0 and need * per_gib > room:
            result.capped.append(
                f"budget_per_hour {pool.budget_per_hour:g}: storage growth cut to the budget"
            )
            need = room / per_gib
    return math.ceil(need)


def _grow_largest_disk(cycle: _Cycle, need: int, why: str, result: Plan) -> float:
    """Grow the largest disk toward ``max_disk_gib`` (one disk, no attach needed); returns GiB grown."""
    pool, disks = cycle.pool, cycle.state.disks
    if not disks:
        return 0
    disk = max(disks, key=lambda x: (x.size_gib, x.name))
    grow = min(need, pool.storage.max_disk_gib - disk.size_gib)
    if grow <= 0:
        return 0
    new_size = int(disk.size_gib + grow)
    result.actions.append(
        Action(
            pool=pool.name,
            kind=ActionKind.ALLOCATE_STORAGE,
            amount=float(grow),
            reason=f"{why}: grow {disk.name} {disk.size_gib:g} -> {new_size} GiB",
            request_id=request_id_for(pool.name, cycle.key, ActionKind.ALLOCATE_STORAGE, disk.name, new_size),
            resource="storage",
            target=disk.name,
            details={"disk": disk.name, "size_gib": new_size, "grow": True},
        )
    )
    return grow


def _attach_target(after: _After, result: Plan) -> str:
    """The VM new disks attach to: the first standard one kept, else the first one this plan launches."""
    kept = sorted(after.live, key=lambda i: (i.provisioning != Provisioning.STANDARD, i.name))
    if kept and kept[0].name:
        return kept[0].name
    # no VM yet: attach to the first one this plan launches (launches are applied first)
    launched = [a for a in result.actions if a.kind == ActionKind.LAUNCH_INSTANCES and a.details.get("names")]
    return launched[0].details["names"][0] if launched else ""


def _create_disks(cycle: _Cycle, need: float, why: str, attach_to: str, result: Plan) -> list[int]:
    """Create disks of at most ``max_disk_gib`` (at least 10 GiB) until ``need`` is covered; their sizes."""
    pool = cycle.pool
    sizes: list[int] = []
    where = f" attached to {attach_to}" if attach_to else " (no live instance to attach to yet)"
    while need > 0:
        if len(sizes) == MAX_NEW_DISKS:
            # an absurd forecast would otherwise create disks without end; the rest waits a cycle
            result.capped.append(f"storage: at most {MAX_NEW_DISKS} new disks per cycle")
            break
        size = int(min(pool.storage.max_disk_gib, max(10, need)))
        rid = request_id_for(pool.name, cycle.key, ActionKind.ALLOCATE_STORAGE, "new", len(sizes), size)
        name = f"{pool.name.replace('_', '-').replace('.', '-')[:40]}-data-{rid[:8]}"
        result.actions.append(
            Action(
                pool=pool.name,
                kind=ActionKind.ALLOCATE_STORAGE,
                amount=float(size),
                reason=f"{why}: create {size} GiB {pool.storage.disk_type} disk {name}{where}",
                request_id=rid,
                resource="storage",
                target=name,
                details={
                    "disk": name,
                    "size_gib": size,
                    "disk_type": pool.storage.disk_type,
                    "attach_to": attach_to,
                },
            )
        )
        need -= size
        sizes.append(size)
    return sizes


# ------------------------------------------------------------------------------------------- planner: summary


def _summary(cycle: _Cycle, draft: _Draft, after: _After, storage_added: float) -> dict[str, Any]:
    """``Plan.summary``: the rule that sized the pool, demand, and capacity and cost before and after."""
    pool, state = cycle.pool, cycle.state
    return {
        "policy": str(pool.policy.signal),
        "sizing": cycle.sizing.why,
        "quantile": pool.policy.quantile,
        "cycle": cycle.key,
        "instances_before": cycle.current,
        "instances_after": after.instances,
        "standard_after": after.standard,
        "spot_after": after.spot,
        "binding": draft.binding,
        "demand": {r: round(d.value, 3) for r, d in cycle.up.items()},
        "hold": {r: round(d.value, 3) for r, d in cycle.hold.items()},
        "capacity_before": {r: round(v, 3) for r, v in cycle.capacity.items()}
        | {"storage": state.storage_gib},
        "cost_before": round(_cost_before(cycle), 4),
        "cost_after": round(_cost_after(cycle, after, storage_added), 4),
    }


def _cost_before(cycle: _Cycle) -> float:
    pool, state, counts = cycle.pool, cycle.state, cycle.counts
    if not cycle.is_mig:
        return hourly_cost(pool, cycle.live, storage_gib=state.storage_gib)
    return hourly_cost(
        pool,
        standard=counts[Provisioning.STANDARD],
        spot=counts[Provisioning.SPOT],
        storage_gib=state.storage_gib,
    )


def _cost_after(cycle: _Cycle, after: _After, storage_added: float) -> float:
    pool = cycle.pool
    storage = cycle.state.storage_gib + storage_added
    if cycle.is_mig:
        return hourly_cost(pool, standard=after.standard, spot=after.spot, storage_gib=storage)
    new_std = after.standard - sum(1 for i in after.live if i.provisioning == Provisioning.STANDARD)
    new_spot = after.spot - sum(1 for i in after.live if i.provisioning == Provisioning.SPOT)
    return hourly_cost(pool, after.live, standard=max(0, new_std), spot=max(0, new_spot), storage_gib=storage)


def planned_capacity(plan_: Plan, state: PoolState, pool: CapacityPool) -> dict[str, float]:
    """Capacity per resource once the plan is applied (for the backtest and the property tests).

    :param plan_: a plan from :func:`plan`.
    :param state: the state it was planned from.
    :param pool: the pool.
    """
    released = {a.target for a in plan_.actions if a.kind == ActionKind.RELEASE}
    resized = {
        a.target: a.details["machine_type"] for a in plan_.actions if "machine_type" in a.details and a.target
    }
    tiered = {a.target for a in plan_.actions if a.details.get("tier") == "TIER_1"}
    kept = [i for i in state.live() if i.name not in released]
    out = {r: 0.0 for r in COUNT_RESOURCES}
    for inst in kept:
        spec = machines.lookup(resized.get(inst.name, inst.machine_type) or pool.machine_type) or pool.machine
        out["cpu"] += spec.vcpus
        out["memory"] += spec.memory_gib
        out["network"] += spec.egress_mbps(inst.tier_1 or inst.name in tiered)
        out["slots"] += _instance_capacity(pool, inst, "slots")
    n_new = sum(int(a.amount) for a in plan_.actions if a.kind == ActionKind.LAUNCH_INSTANCES)
    if pool.backend is Backend.MANAGED_INSTANCE_GROUP:
        counts = _current_counts(state, pool)
        total = counts[Provisioning.STANDARD] + counts[Provisioning.SPOT] - len(released)
        for a in plan_.actions:
            if a.kind == ActionKind.RESIZE_GROUP:
                total += int(a.amount) - int(a.details["from"])
        out = {r: total * _unit(pool, r) for r in out}
        out["instances"] = float(total)
    else:
        for r in COUNT_RESOURCES:
            out[r] += n_new * _unit(pool, r)
        out["instances"] = float(len(kept) + n_new)
    out["storage"] = state.storage_gib + sum(
        a.amount for a in plan_.actions if a.kind == ActionKind.ALLOCATE_STORAGE
    )
    return out


__all__ = ["ForecastView", "plan", "planned_capacity"]

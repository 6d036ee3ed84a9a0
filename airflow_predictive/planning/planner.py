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
   (a forecast that undershoots a level shift is corrected next cycle). With ``policy.signal =
   recent_demand`` (the Compute Engine autoscaler rule), the newest observed demand instead, divided by
   ``policy.target_utilization``, held for the stabilisation window's peak before scaling in.
2. **Instances.** Demand is converted to instances of the pool's machine type; vCPUs, memory and
   (per-VM egress) network are all honoured and the binding one wins. A gap smaller than the pool's
   threshold for that resource is ignored (the pseudocode's ``thresholdCPU`` ...).
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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from airflow_predictive.contracts import machines
from airflow_predictive.contracts.capacity import BOOTING_STATUSES, InstanceState, PoolState
from airflow_predictive.contracts.demand import parse_series_id
from airflow_predictive.contracts.forecast import quantile_column
from airflow_predictive.contracts.plan import (
    Action,
    ActionKind,
    Plan,
    Provisioning,
    request_id_for,
)
from airflow_predictive.contracts.pools import Backend, CapacityPool, Signal, SpotMode
from airflow_predictive.planning.cost import hourly_cost

COUNT_RESOURCES = ("cpu", "memory", "network")
_EPS = 1e-9
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
        columns = [c for c in frame.columns if c == "mean" or (c.startswith("q") and _is_level(c))]
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
    ts, values = entry
    picked = _column(values, level)
    if picked is None or len(ts) == 0:
        return None
    name, column = picked
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
    machine = pool.machine
    if resource == "cpu":
        return machine.vcpus
    if resource == "memory":
        return machine.memory_gib
    return machine.egress_mbps(tier_1)


def _instance_capacity(pool: CapacityPool, instance: InstanceState, resource: str) -> float:
    spec = machines.lookup(instance.machine_type) if instance.machine_type else None
    spec = spec or pool.machine
    if resource == "cpu":
        return spec.vcpus
    if resource == "memory":
        return spec.memory_gib
    return spec.egress_mbps(instance.tier_1)


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - 1e-6))


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"


_UNITS = {"cpu": "vCPU", "memory": "GiB", "storage": "GiB", "network": "Mbit/s"}


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
    bucket = pd.Timestamp(now).floor(f"{int(pool.policy.planning_interval_minutes * 60)}s")
    cycle = bucket.isoformat()
    result = Plan(plan_id=f"{pool.name}@{cycle}", pool=pool.name, created_at=now, mode=pool.mode)
    busy = {_host_key(h) for h in busy_instances if h}
    live = state.live()
    is_mig = pool.backend is Backend.MANAGED_INSTANCE_GROUP

    # 0. which rule sizes the pool: its forecast, or the reactive rule when prediction cannot help
    recent = _recent_series(recent_demand, pool, now)
    sizing = _sizing(pool, recent)
    u = sizing.utilization

    # 1. demand to cover (up) and the upper bound over the stabilisation window (hold), per resource
    up, hold, base = _demands(forecast, recent, pool, now, sizing)

    # current capacity per resource; a MIG counts its target size (it converges to it)
    counts = _current_counts(state, pool)
    current = counts[Provisioning.STANDARD] + counts[Provisioning.SPOT]
    cap = {r: _capacity(state, pool, r, counts) for r in COUNT_RESOURCES}
    tier_1_ok = pool.allow_tier_1 and not is_mig and pool.machine.supports_tier_1

    # 2. instances to add: the binding resource wins; gaps under the threshold are ignored
    add = 0
    binding = ""
    for r in COUNT_RESOURCES:
        d = up.get(r)
        if d is None:
            continue
        unit = _unit(pool, r, tier_1=tier_1_ok) * u
        if d.value > cap[r] * u + pool.thresholds.for_resource(r) + _EPS:
            extra = _ceil((d.value - cap[r] * u) / unit)
            if extra > add:
                add, binding = extra, r
    if current < pool.min_instances:
        floor_add = pool.min_instances - current
        if floor_add > add:
            add, binding = floor_add, "min_instances"

    # 3. scale-in candidates (idle, spot first, booting first, newest first)
    releases: list[InstanceState] = []
    why_release: dict[str, str] = {}  # instance name -> the rule that released it
    if add == 0:
        releases = _scale_in(live, pool, hold, cap, current, busy, why_release, sizing)

    # 4a. max_instances
    if current + add > pool.max_instances:
        allowed = max(0, pool.max_instances - current)
        result.capped.append(
            f"max_instances {pool.max_instances}: wanted {current + add} instances ({binding} binds), "
            f"holding {current + allowed}"
        )
        add = allowed
    if current - len(releases) > pool.max_instances:
        extra = _release_order(live, busy, pool)
        already = {i.name for i in releases}
        for inst in extra:
            if current - len(releases) <= pool.max_instances:
                break
            if inst.name not in already:
                releases.append(inst)
                why_release[inst.name] = (
                    f"max_instances {pool.max_instances}: {current} live instances; release idle {inst.name} "
                    f"({inst.provisioning})"
                )
        if current - len(releases) > pool.max_instances:
            result.capped.append(
                f"max_instances {pool.max_instances}: {current - len(releases)} instances remain because "
                "the rest run Airflow tasks"
            )

    # 5. spot split for the additions
    std_add, spot_add = _split(add, pool, state, counts, base, up, interruptible_fraction, now, u)

    # 4b. budget: convert standard additions to spot, then cut additions, then release idle VMs
    std_add, spot_add, budget_releases = _apply_budget(
        pool, state, live, releases, std_add, spot_add, busy, counts, result, why_release
    )
    releases.extend(budget_releases)

    after_live = [i for i in live if i.name not in {r.name for r in releases}]
    std_after = (
        counts[Provisioning.STANDARD]
        + std_add
        - sum(1 for r in releases if r.provisioning == Provisioning.STANDARD)
    )
    spot_after = (
        counts[Provisioning.SPOT] + spot_add - sum(1 for r in releases if r.provisioning == Provisioning.SPOT)
    )

    # actions: additions
    why_up = _reason_up(up, cap, current, pool, binding, sizing)
    for prov, n in ((Provisioning.STANDARD, std_add), (Provisioning.SPOT, spot_add)):
        if n <= 0:
            continue
        split = f"; {std_add} standard + {spot_add} spot ({_split_rule(pool, base)})"
        if is_mig:
            group = pool.spot_group if prov == Provisioning.SPOT else pool.group
            before = int(state.target_sizes.get(group, 0))
            rid = request_id_for(pool.name, cycle, ActionKind.RESIZE_GROUP, group, before, before + n)
            result.actions.append(
                Action(
                    pool=pool.name,
                    kind=ActionKind.RESIZE_GROUP,
                    amount=float(before + n),
                    reason=f"{why_up}{split}: resize {group} {before} -> {before + n}",
                    request_id=rid,
                    resource=_res(binding),
                    provisioning=prov,
                    target=group,
                    details={"group": group, "from": before, "to": before + n, "zone": pool.zone},
                )
            )
        else:
            rid = request_id_for(pool.name, cycle, ActionKind.LAUNCH_INSTANCES, prov, current, n)
            prefix = (pool.launch.name_prefix or pool.name).replace("_", "-").replace(".", "-")[:40]
            names = [f"{prefix}-{rid[:8]}-{i}" for i in range(n)]
            result.actions.append(
                Action(
                    pool=pool.name,
                    kind=ActionKind.LAUNCH_INSTANCES,
                    amount=float(n),
                    reason=f"{why_up}{split}: launch {n} {prov} {pool.machine_type}",
                    request_id=rid,
                    resource=_res(binding),
                    provisioning=prov,
                    details={"names": names, "machine_type": pool.machine_type, "zone": pool.zone},
                )
            )

    # actions: releases (each names its VM, so only the chosen idle VMs go)
    for inst in releases:
        why = why_release[inst.name]
        result.actions.append(
            Action(
                pool=pool.name,
                kind=ActionKind.RELEASE,
                amount=1.0,
                reason=why,
                request_id=request_id_for(pool.name, cycle, ActionKind.RELEASE, inst.name),
                resource="cpu",
                provisioning=inst.provisioning,
                target=inst.name,
                details={"instance": inst.name, "group": inst.group, "status": inst.status, "drain": True},
            )
        )

    # 6. vertical resize at max_instances, network bandwidth, storage
    n_after = std_after + spot_after
    _vertical(pool, up, after_live, busy, n_after, cycle, result, u)
    _bandwidth(pool, up, after_live, busy, n_after, cycle, result, is_mig)
    storage_added = _storage(pool, up, state, after_live, cycle, result)

    result.summary.update(
        {
            "policy": str(pool.policy.signal),
            "sizing": sizing.why,
            "quantile": pool.policy.quantile,
            "cycle": cycle,
            "instances_before": current,
            "instances_after": n_after,
            "standard_after": std_after,
            "spot_after": spot_after,
            "binding": binding,
            "demand": {r: round(d.value, 3) for r, d in up.items()},
            "hold": {r: round(d.value, 3) for r, d in hold.items()},
            "capacity_before": {r: round(v, 3) for r, v in cap.items()} | {"storage": state.storage_gib},
            "cost_before": round(
                hourly_cost(pool, live, storage_gib=state.storage_gib)
                if not is_mig
                else _mig_cost(pool, counts, state),
                4,
            ),
            "cost_after": round(
                _cost_after(pool, after_live, state, std_after, spot_after, is_mig, storage_added), 4
            ),
        }
    )
    return result


def _res(binding: str) -> str:
    return binding if binding in ("cpu", "memory", "network") else "cpu"


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


#: The resource whose daily cycle decides, in order of preference (the autoscaler's own rule is CPU).
_CYCLE_RESOURCES = ("cpu", "memory", "network")


def _sizing(pool: CapacityPool, recent: Mapping[str, np.ndarray]) -> _Sizing:
    """Forecast or reactive rule: a forecast-driven pool whose demand has no daily cycle goes reactive."""
    policy = pool.policy
    if policy.signal is Signal.RECENT_DEMAND:
        return _Sizing(Signal.RECENT_DEMAND, policy.target_utilization, why="reactive rule (recent_demand)")
    if not recent or policy.min_daily_cycle <= -1:
        return _Sizing(Signal.FORECAST, policy.target_utilization, 0.0, "forecast")
    guard = policy.guard_utilization if any(len(v) for v in recent.values()) else 0.0
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
    if values.size < lag + lag // 2:
        return None
    a, b = values[:-lag], values[lag:]
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    if denom <= 0:
        return 0.0
    return float(a @ b) / denom


def _demands(
    forecast: pd.DataFrame | ForecastView | None,
    recent: Mapping[str, np.ndarray],
    pool: CapacityPool,
    now: datetime,
    sizing: _Sizing,
) -> tuple[dict[str, _Demand], dict[str, _Demand], dict[str, _Demand]]:
    """Demand to cover (up), upper bound over the stabilisation window (hold), baseline (base)."""
    up: dict[str, _Demand] = {}
    hold: dict[str, _Demand] = {}
    base: dict[str, _Demand] = {}
    policy = pool.policy
    if sizing.signal is Signal.RECENT_DEMAND:
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
    if forecast is None:
        return up, hold, base
    view = forecast if isinstance(forecast, ForecastView) else ForecastView.from_frame(forecast, pool.name)
    now_ns = _to_ns(now)
    step = int(policy.planning_interval_minutes * _NS_PER_MIN)
    upper = max(pool.scale_in.quantile, policy.quantile)
    for r in view.series:
        lead = int(pool.lead_time_minutes.for_resource(r) * _NS_PER_MIN)
        d = _window_max(view, r, policy.quantile, now_ns + lead, now_ns + lead + step)
        if d is None:
            continue
        stab = int(pool.scale_in.stabilization_minutes * _NS_PER_MIN)
        h = _window_max(view, r, upper, now_ns, now_ns + lead + max(stab, step))
        seen = recent.get(r)
        if sizing.guard > 0 and r in COUNT_RESOURCES and seen is not None and len(seen):
            # Demand is planned at `utilization`: this much planned demand holds observed / guard.
            g = float(seen[-1]) * sizing.utilization / sizing.guard
            if g > d.value:
                d = _Demand(g, f"observed demand / guard utilisation {sizing.guard:g}")
        up[r] = d
        hold[r] = h if h is not None and h.value >= d.value else d
        if r in ("cpu", "memory") and pool.has_spot:
            b = _window_max(view, r, pool.spot.baseline_quantile, now_ns + lead, now_ns + lead + step)
            if b is not None:
                low = b.value < _horizon_median(view, r, b.source)
                base[r] = _Demand(b.value, b.source, b.ts_ns, low)
    return up, hold, base


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


def _scale_in(
    live: Sequence[InstanceState],
    pool: CapacityPool,
    hold: Mapping[str, _Demand],
    cap: Mapping[str, float],
    current: int,
    busy: set[str],
    why_release: dict[str, str],
    sizing: _Sizing,
) -> list[InstanceState]:
    """Idle instances whose release keeps capacity above the forecast upper bound (+ threshold)."""
    if not hold and sizing.signal is Signal.FORECAST:
        return []  # no forecast for this pool: never shrink blind
    u = sizing.utilization
    keep = {r: (hold[r].value + pool.thresholds.for_resource(r)) / u for r in COUNT_RESOURCES if r in hold}
    if not keep:
        return []  # no cpu/memory/network forecast for this pool: never shrink blind
    remaining = dict(cap)
    count = current
    chosen: list[InstanceState] = []
    for inst in _release_order(live, busy, pool):
        if count <= pool.min_instances or len(chosen) >= pool.scale_in.max_release_per_cycle:
            break
        if pool.backend is Backend.MANAGED_INSTANCE_GROUP and inst.group not in (pool.group, pool.spot_group):
            continue
        take = {r: _instance_capacity(pool, inst, r) for r in keep}
        if all(remaining[r] - take[r] >= keep[r] - _EPS for r in keep):
            for r in keep:
                remaining[r] -= take[r]
            count -= 1
            chosen.append(inst)
    if chosen:
        bound = ", ".join(f"{r} {hold[r].at} = {_fmt(hold[r].value)} {_UNITS[r]}" for r in keep)
        left = ", ".join(f"{r} {_fmt(remaining[r])}" for r in keep)
        reason = (
            f"scale-in: upper bound over now..now+{pool.lead_time_minutes.boot + pool.scale_in.stabilization_minutes:g} min "
            f"({bound}) stays below the remaining capacity ({left}) at utilisation {u:g}; idle instance, "
            "spot before standard"
        )
        for inst in chosen:
            why_release[inst.name] = f"{reason}: release {inst.name} ({inst.provisioning}, {inst.status})"
    return chosen


def _split(
    add: int,
    pool: CapacityPool,
    state: PoolState,
    counts: Mapping[Provisioning, int],
    base: Mapping[str, _Demand],
    up: Mapping[str, _Demand],
    interruptible_fraction: float,
    now: datetime,
    u: float,
) -> tuple[int, int]:
    """Split additions into standard and spot: standard carries the baseline, spot the rest."""
    if add <= 0:
        return 0, 0
    if not pool.has_spot:
        return add, 0
    std_now = counts[Provisioning.STANDARD]
    if pool.spot.interruptible or pool.spot.mode is SpotMode.ALL:
        target_std = pool.spot.min_standard
    else:
        need = 0
        for r in ("cpu", "memory"):
            if r in base:
                demand = base[r].value * (1.0 - min(max(interruptible_fraction, 0.0), 1.0))
                need = max(need, _ceil(demand / (_unit(pool, r) * u)))
        if any(d.low for d in base.values()):
            need = _ceil(need * pool.spot.low_demand_standard_share)
        target_std = max(pool.spot.min_standard, need)
    std_add = min(add, max(0, target_std - std_now))
    return std_add, add - std_add


def _split_rule(pool: CapacityPool, base: Mapping[str, _Demand]) -> str:
    if not pool.has_spot:
        return "no spot capacity configured"
    if pool.spot.interruptible or pool.spot.mode is SpotMode.ALL:
        return f"interruptible work: spot above {pool.spot.min_standard} standard"
    period = "low-demand period" if any(d.low for d in base.values()) else "normal period"
    return f"standard carries the q{pool.spot.baseline_quantile:g} baseline ({period}), spot the rest"


def _apply_budget(
    pool: CapacityPool,
    state: PoolState,
    live: Sequence[InstanceState],
    releases: list[InstanceState],
    std_add: int,
    spot_add: int,
    busy: set[str],
    counts: Mapping[Provisioning, int],
    result: Plan,
    why_release: dict[str, str],
) -> tuple[int, int, list[InstanceState]]:
    """Keep the plan's hourly cost within ``budget_per_hour``; returns (standard, spot, extra releases)."""
    budget = pool.budget_per_hour
    if budget is None:
        return std_add, spot_add, []
    released = {i.name for i in releases}
    is_mig = pool.backend is Backend.MANAGED_INSTANCE_GROUP

    def cost(std: int, spot: int, extra_released: Sequence[InstanceState] = ()) -> float:
        gone = released | {i.name for i in extra_released}
        if is_mig:
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

    wanted = cost(std_add, spot_add)
    if wanted <= budget + _EPS:
        return std_add, spot_add, []
    orig = (std_add, spot_add)
    # standard additions above the floor become spot first: same capacity, lower price
    if pool.has_spot:
        movable = max(0, std_add - max(0, pool.spot.min_standard - counts[Provisioning.STANDARD]))
        while movable > 0 and cost(std_add, spot_add) > budget + _EPS:
            std_add, spot_add, movable = std_add - 1, spot_add + 1, movable - 1
    current = counts[Provisioning.STANDARD] + counts[Provisioning.SPOT] - len(releases)
    while cost(std_add, spot_add) > budget + _EPS and (spot_add + std_add) > 0:
        if current + std_add + spot_add <= pool.min_instances:
            break
        if spot_add > 0:
            spot_add -= 1
        else:
            std_add -= 1
    extra: list[InstanceState] = []
    if cost(std_add, spot_add) > budget + _EPS and std_add + spot_add == 0:
        for inst in _release_order(live, busy, pool):
            if cost(0, 0, extra) <= budget + _EPS or current - len(extra) <= pool.min_instances:
                break
            if inst.name in released:
                continue
            extra.append(inst)
            why_release[inst.name] = (
                f"budget cap {budget:g}/h: the pool costs {cost(0, 0):.2f}/h; release idle {inst.name} "
                f"({inst.provisioning})"
            )
    final = cost(std_add, spot_add, extra)
    msg = (
        f"budget_per_hour {budget:g}: wanted +{orig[0]} standard +{orig[1]} spot costing {wanted:.2f}/h; "
        f"planned +{std_add} standard +{spot_add} spot"
        + (f" and released {len(extra)} idle" if extra else "")
        + f", costing {final:.2f}/h"
    )
    if final > budget + _EPS:
        msg += " (min_instances and instances running tasks alone exceed the budget)"
    result.capped.append(msg)
    return std_add, spot_add, extra


def _reason_up(
    up: Mapping[str, _Demand],
    cap: Mapping[str, float],
    current: int,
    pool: CapacityPool,
    binding: str,
    sizing: _Sizing,
) -> str:
    u = sizing.utilization
    if binding == "min_instances":
        return f"{current} live instances < min_instances {pool.min_instances}"
    parts = []
    lead = pool.lead_time_minutes.boot
    for r in COUNT_RESOURCES:
        if r in up:
            d = up[r]
            mark = " (binds)" if r == binding else ""
            parts.append(f"{r} {d.at} = {_fmt(d.value)} {_UNITS[r]} vs {_fmt(cap[r] * u)}{mark}")
    basis = (
        f"forecast at now+{lead:g} min boot lead"
        if sizing.signal is Signal.FORECAST
        else f"observed demand / target utilisation {u:g}"
    )
    if sizing.why.startswith("reactive fallback"):
        basis = f"{sizing.why}: {basis}"
    return f"{basis}: " + "; ".join(parts) + f" on {current} x {pool.machine_type}"


def _vertical(
    pool: CapacityPool,
    up: Mapping[str, _Demand],
    after_live: Sequence[InstanceState],
    busy: set[str],
    n_after: int,
    cycle: str,
    result: Plan,
    u: float,
) -> None:
    """At max_instances with a remaining cpu/memory gap, move one idle VM to a larger machine type."""
    if not pool.allow_vertical or pool.backend is not Backend.INSTANCES or n_after < pool.max_instances:
        return
    new_instances = max(0, n_after - len(after_live))
    gaps = {}
    for r in ("cpu", "memory"):
        if r not in up:
            continue
        have = sum(_instance_capacity(pool, i, r) for i in after_live) + new_instances * _unit(pool, r)
        gap = up[r].value / u - have
        if gap > pool.thresholds.for_resource(r) / u + _EPS:
            gaps[r] = gap
    if not gaps:
        return
    idle = [i for i in after_live if i.name.lower() not in busy and i.status == "RUNNING"]
    if not idle:
        result.capped.append("resize_instance: no idle running VM to grow (every VM runs a task)")
        return
    inst = min(idle, key=lambda i: (i.provisioning != Provisioning.STANDARD, i.name))
    spec = machines.lookup(inst.machine_type or pool.machine_type) or pool.machine
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
        return
    gap_text = ", ".join(f"{r} short {_fmt(g)}" for r, g in gaps.items())
    result.actions.append(
        Action(
            pool=pool.name,
            kind=ActionKind.RESIZE_INSTANCE,
            amount=choice.vcpus,
            reason=(
                f"at max_instances {pool.max_instances} the forecast still needs more ({gap_text}); "
                f"grow idle {inst.name} {spec.name} -> {choice.name}"
            ),
            request_id=request_id_for(pool.name, cycle, ActionKind.RESIZE_INSTANCE, inst.name, choice.name),
            resource=next(iter(gaps)),
            provisioning=inst.provisioning,
            target=inst.name,
            details={"instance": inst.name, "from": spec.name, "machine_type": choice.name},
        )
    )


def _bandwidth(
    pool: CapacityPool,
    up: Mapping[str, _Demand],
    after_live: Sequence[InstanceState],
    busy: set[str],
    n_after: int,
    cycle: str,
    result: Plan,
    is_mig: bool,
) -> None:
    """Give idle VMs Tier_1 (or a larger type) when the pool's per-VM egress cannot carry the forecast."""
    d = up.get("network")
    if d is None or n_after <= 0:
        return
    have = sum(_instance_capacity(pool, i, "network") for i in after_live)
    have += max(0, n_after - len(after_live)) * _unit(pool, "network")
    gap = d.value - have
    if gap <= pool.thresholds.network + _EPS:
        return
    if is_mig:
        result.capped.append(
            f"raise_bandwidth: network {d.at} = {_fmt(d.value)} Mbit/s exceeds {_fmt(have)} Mbit/s; a managed "
            "instance group needs a new instance template with Tier_1 (not changed automatically)"
        )
        return
    spec = pool.machine
    candidates = [
        i for i in after_live if i.name.lower() not in busy and i.status == "RUNNING" and not i.tier_1
    ]
    for inst in candidates:
        if gap <= pool.thresholds.network + _EPS:
            break
        own = machines.lookup(inst.machine_type) or spec
        if pool.allow_tier_1 and own.supports_tier_1:
            gain = own.egress_mbps(True) - own.egress_mbps(False)
            details = {"instance": inst.name, "tier": "TIER_1"}
            how = "Tier_1 networking"
        else:
            bigger = next(
                (m for m in machines.larger_in_family(own) if m.egress_mbps() > own.egress_mbps()), None
            )
            if bigger is None or not pool.allow_vertical:
                continue
            gain = bigger.egress_mbps() - own.egress_mbps()
            details = {"instance": inst.name, "machine_type": bigger.name}
            how = f"machine type {bigger.name}"
        if gain <= 0:
            continue
        gap -= gain
        result.actions.append(
            Action(
                pool=pool.name,
                kind=ActionKind.RAISE_BANDWIDTH,
                amount=round(own.egress_mbps(False) + gain, 1),
                reason=(
                    f"network {d.at} = {_fmt(d.value)} Mbit/s > pool egress {_fmt(have)} Mbit/s; "
                    f"give idle {inst.name} {how} (+{_fmt(gain)} Mbit/s)"
                ),
                request_id=request_id_for(
                    pool.name, cycle, ActionKind.RAISE_BANDWIDTH, inst.name, str(details)
                ),
                resource="network",
                provisioning=inst.provisioning,
                target=inst.name,
                details=details,
            )
        )
    if gap > pool.thresholds.network + _EPS:
        result.capped.append(
            f"raise_bandwidth: {_fmt(gap)} Mbit/s of network demand left uncovered (no idle VM can be raised)"
        )


def _storage(
    pool: CapacityPool,
    up: Mapping[str, _Demand],
    state: PoolState,
    after_live: Sequence[InstanceState],
    cycle: str,
    result: Plan,
) -> float:
    """Grow the largest data disk, then create and attach new ones, to cover forecast storage. Returns GiB added."""
    d = up.get("storage")
    if d is None:
        return 0.0
    have = state.storage_gib
    if d.value <= have + pool.thresholds.storage + _EPS:
        return 0.0
    need = min(d.value, pool.storage.max_total_gib) - have
    if d.value > pool.storage.max_total_gib:
        result.capped.append(
            f"storage max_total_gib {pool.storage.max_total_gib:g}: forecast {_fmt(d.value)} GiB capped"
        )
    if need <= 0:
        return 0.0
    if pool.budget_per_hour is not None:
        per_gib = pool.prices.disk_gib_month / 730.0
        room = max(0.0, pool.budget_per_hour - hourly_cost(pool, after_live, storage_gib=have))
        if per_gib > 0 and need * per_gib > room:
            result.capped.append(
                f"budget_per_hour {pool.budget_per_hour:g}: storage growth cut to the budget"
            )
            need = room / per_gib
    need = math.ceil(need)
    if need <= 0:
        return 0.0
    added = 0.0
    why = (
        f"storage {d.at} (now+{pool.lead_time_minutes.disk_attach:g} min attach lead) = {_fmt(d.value)} GiB "
        f"> {_fmt(have)} GiB"
    )
    if state.disks:
        disk = max(state.disks, key=lambda x: (x.size_gib, x.name))
        grow = min(need, pool.storage.max_disk_gib - disk.size_gib)
        if grow > 0:
            new_size = int(disk.size_gib + grow)
            result.actions.append(
                Action(
                    pool=pool.name,
                    kind=ActionKind.ALLOCATE_STORAGE,
                    amount=float(grow),
                    reason=f"{why}: grow {disk.name} {disk.size_gib:g} -> {new_size} GiB",
                    request_id=request_id_for(
                        pool.name, cycle, ActionKind.ALLOCATE_STORAGE, disk.name, new_size
                    ),
                    resource="storage",
                    target=disk.name,
                    details={"disk": disk.name, "size_gib": new_size, "grow": True},
                )
            )
            need -= grow
            added += grow
    attach_to = next(
        (i.name for i in sorted(after_live, key=lambda i: (i.provisioning != Provisioning.STANDARD, i.name))),
        "",
    )
    if not attach_to:  # no VM yet: attach to the first one this plan launches (launches are applied first)
        launched = [
            a for a in result.actions if a.kind == ActionKind.LAUNCH_INSTANCES and a.details.get("names")
        ]
        attach_to = launched[0].details["names"][0] if launched else ""
    index = 0
    while need > 0:
        size = int(min(pool.storage.max_disk_gib, max(10, need)))
        rid = request_id_for(pool.name, cycle, ActionKind.ALLOCATE_STORAGE, "new", index, size)
        name = f"{pool.name.replace('_', '-').replace('.', '-')[:40]}-data-{rid[:8]}"
        result.actions.append(
            Action(
                pool=pool.name,
                kind=ActionKind.ALLOCATE_STORAGE,
                amount=float(size),
                reason=f"{why}: create {size} GiB {pool.storage.disk_type} disk {name}"
                + (f" attached to {attach_to}" if attach_to else " (no live instance to attach to yet)"),
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
        added += size
        index += 1
    return added


def _mig_cost(pool: CapacityPool, counts: Mapping[Provisioning, int], state: PoolState) -> float:
    return hourly_cost(
        pool,
        standard=counts[Provisioning.STANDARD],
        spot=counts[Provisioning.SPOT],
        storage_gib=state.storage_gib,
    )


def _cost_after(
    pool: CapacityPool,
    after_live: Sequence[InstanceState],
    state: PoolState,
    std_after: int,
    spot_after: int,
    is_mig: bool,
    storage_added: float,
) -> float:
    storage = state.storage_gib + storage_added
    if is_mig:
        return hourly_cost(pool, standard=std_after, spot=spot_after, storage_gib=storage)
    new_std = std_after - sum(1 for i in after_live if i.provisioning == Provisioning.STANDARD)
    new_spot = spot_after - sum(1 for i in after_live if i.provisioning == Provisioning.SPOT)
    return hourly_cost(pool, after_live, standard=max(0, new_std), spot=max(0, new_spot), storage_gib=storage)


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
    out = {r: 0.0 for r in ("cpu", "memory", "network")}
    for inst in kept:
        spec = machines.lookup(resized.get(inst.name, inst.machine_type) or pool.machine_type) or pool.machine
        out["cpu"] += spec.vcpus
        out["memory"] += spec.memory_gib
        out["network"] += spec.egress_mbps(inst.tier_1 or inst.name in tiered)
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
        for r in ("cpu", "memory", "network"):
            out[r] += n_new * _unit(pool, r)
        out["instances"] = float(len(kept) + n_new)
    out["storage"] = state.storage_gib + sum(
        a.amount for a in plan_.actions if a.kind == ActionKind.ALLOCATE_STORAGE
    )
    return out


__all__ = ["ForecastView", "plan", "planned_capacity"]

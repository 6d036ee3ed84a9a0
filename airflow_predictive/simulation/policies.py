"""The four backtest policies, each a thin adapter over the PRODUCTION planner and forecaster.

- ``reactive``: the planner with ``policy.signal = recent_demand`` (Compute Engine's managed instance
  group autoscaler rule: desired = ceil(recent demand / (target utilisation x capacity)), target
  utilisation 0.6, 10-minute scale-in stabilisation, boot delay as initialisation period).
- ``seasonal``: the planner on the forecasting room's seasonal-naive baseline forecast.
- ``predictive``: the planner on the production :class:`~airflow_predictive.forecasting.engine.Forecaster`
  with the product's default settings (no per-trace tuning).
- ``oracle``: perfect foresight over the boot delay (the physical limit): at each step it holds exactly
  the instances needed for the demand of the steps it can still influence.

Nothing here sizes a pool or forecasts by itself: the adapters translate the simulated fleet into a
:class:`~airflow_predictive.contracts.capacity.PoolState` and a trace window into the long demand frame,
call the production code, and read the target size off the returned plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airflow_predictive.contracts import machines
from airflow_predictive.contracts.capacity import InstanceState, PoolState
from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES
from airflow_predictive.contracts.plan import Mode
from airflow_predictive.contracts.pools import (
    SIZING_CONTEXT,
    Backend,
    CapacityPool,
    LeadTimes,
    Prices,
    Signal,
    SizingPolicy,
    SpotMode,
    SpotPolicy,
)
from airflow_predictive.forecasting.models import seasonal_naive_baseline
from airflow_predictive.forecasting.series import SeriesWindow
from airflow_predictive.planning import planner
from airflow_predictive.planning.planner import ForecastView
from airflow_predictive.simulation.replay import Fleet, ReplayContext

#: Pool name and series id every backtest uses (one pool, one resource: cpu).
POOL_NAME = "backtest"


def pool_prices(machine_type: str) -> tuple[float, float]:
    """Standard and spot hourly list prices of one instance of ``machine_type``.

    :param machine_type: a Compute Engine machine type in the catalog (``n2-standard-4``).
    """
    spec = machines.lookup(machine_type)
    if spec is None:
        raise ValueError(f"unknown machine type {machine_type!r} for backtest prices")
    return spec.hourly_price(spot=False), spec.hourly_price(spot=True)


def sweep_knobs(name: str) -> list[dict[str, Any]]:
    """The values of each policy's main knob traced by ``--sweep``.

    :param name: policy name.
    """
    if name == "reactive":
        return [{"target_utilization": u} for u in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    if name in ("seasonal", "predictive"):
        return (
            [{"quantile": q} for q in (0.5, 0.8, 0.9, 0.95, 0.99)]
            + [{"quantile": 0.9, "target_utilization": u} for u in (0.8, 0.9)]
            + [{"guard_utilization": g} for g in (0.0, 0.7, 0.8, 1.0)]
        )
    return [{}]


@dataclass
class OraclePolicy:
    """Perfect foresight over the boot delay: the fewest instances that leave no demand unmet.

    At step ``t`` it targets ceil(max demand over ``t .. t + boot_steps`` / capacity): it must still
    serve ``t`` with what is running and anything it launches now serves from ``t + boot_steps``.
    """

    name: str = "oracle"
    _need: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def settings(self) -> dict[str, Any]:
        return {"foresight": "boot delay", "target_utilization": 1.0}

    def prepare(self, context: ReplayContext) -> None:
        need = np.ceil(context.demand / context.instance_capacity - 1e-9).astype(np.int64)
        window = context.boot_steps + 1
        padded = np.concatenate([need, np.repeat(need[-1:], window - 1)])
        # Rolling forward maximum over [t, t + boot_steps].
        self._need = np.lib.stride_tricks.sliding_window_view(padded, window).max(axis=1)

    def decide(self, step: int, fleet: Fleet) -> int:
        return int(self._need[step])

    def with_knob(self, **_: Any) -> OraclePolicy:
        return OraclePolicy()


def ceil_instances(demand: float, capacity: float) -> int:
    """Instances needed for ``demand`` at ``capacity`` each (tiny float noise does not add one).

    :param demand: demand to serve.
    :param capacity: demand one instance serves.
    """
    return max(0, math.ceil(demand / capacity - 1e-9))


# --------------------------------------------------------------------------- the production planner


def backtest_pool(
    context: ReplayContext,
    *,
    machine_type: str = "n2-standard-4",
    signal: str = "forecast",
    quantile: float | None = None,
    target_utilization: float | None = None,
    guard_utilization: float | None = None,
    min_daily_cycle: float | None = None,
    seasonal_floor_days: int | None = None,
) -> Any:
    """The simulated pool: one "instance" serves ``context.instance_capacity`` of demand (vCPUs, GiB of
    memory or task slots: ``context.resource``).

    Everything not set here is the product's default :class:`CapacityPool` policy. The simulation only
    fixes what describes the simulated fleet: instance size and prices, max size, boot delay as the
    lead time, the decision step as the planning interval, standard VMs only (spot is priced in the
    report, not simulated), no vertical resize or Tier_1 (one instance is one unit of capacity).

    :param context: the replay context.
    :param machine_type: machine type whose list prices the pool carries.
    :param signal: ``forecast`` or ``recent_demand``.
    :param quantile: forecast quantile (None: the product default).
    :param target_utilization: planned utilisation (None: the product default for the signal).
    :param guard_utilization: the planner's reactive guard (None: the product default).
    :param min_daily_cycle: the planner's daily-cycle switch (None: the product default; -1: off).
    :param seasonal_floor_days: the planner's seasonal floor (None: the product default, none).
    """

    standard, spot = pool_prices(machine_type)
    sizing: dict[str, Any] = {
        "signal": Signal(signal),
        "planning_interval_minutes": context.interval_s / 60.0,
    }
    if quantile is not None:
        sizing["quantile"] = quantile
    if target_utilization is not None:
        sizing["target_utilization"] = target_utilization
    if guard_utilization is not None:
        sizing["guard_utilization"] = guard_utilization
    if min_daily_cycle is not None:
        sizing["min_daily_cycle"] = min_daily_cycle
    if seasonal_floor_days is not None:
        sizing["seasonal_floor_days"] = seasonal_floor_days
    return CapacityPool(
        name=POOL_NAME,
        project="backtest-project",
        zone="us-central1-a",
        # A managed instance group, like the GCE autoscaler it is compared with.
        backend=Backend.MANAGED_INSTANCE_GROUP,
        group=GROUP,
        machine_type=machine_type,
        **_capacity_fields(context, machine_type),
        min_instances=0,
        max_instances=context.max_instances,
        lead_time_minutes=LeadTimes(boot=context.boot_steps * context.interval_s / 60.0),
        policy=SizingPolicy.model_validate(
            sizing, context={SIZING_CONTEXT: dict(context.sizing_defaults or {})}
        ),
        spot=SpotPolicy(mode=SpotMode.NONE),
        prices=Prices(standard=standard, spot=spot),
        mode=Mode.FORECAST_AND_SCALE,
        allow_vertical=False,
        allow_tier_1=False,
    )


def _capacity_fields(context: ReplayContext, machine_type: str) -> dict[str, Any]:
    """The pool's instance size: ``instance_capacity`` of the replayed resource, the machine type's
    size of the others (no demand of theirs is replayed, so they never bind)."""
    machine = machines.lookup(machine_type)
    fields: dict[str, Any] = {"vcpus": float(machine.vcpus), "memory_gib": machine.memory_gib}
    resource = context.resource
    if resource == "cpu":
        fields["vcpus"] = context.instance_capacity
    elif resource == "memory":
        fields["memory_gib"] = context.instance_capacity
    elif resource == "slots" and float(context.instance_capacity).is_integer():
        fields["slots_per_instance"] = int(context.instance_capacity)
    else:
        raise ValueError(
            f"cannot replay {resource!r} demand of {context.instance_capacity:g} per instance: "
            "replay cpu, memory or a whole number of task slots"
        )
    return fields


class FleetStates:
    """Builds the planner's :class:`PoolState` from the simulated fleet (instances reused by name)."""

    def __init__(self) -> None:

        self._make = InstanceState
        self._cache: dict[tuple[int, str], Any] = {}

    def state(self, fleet: Fleet, now: Any) -> Any:
        """The pool state: running instances first (oldest), then booting ones (newest last).

        :param fleet: the simulated fleet.
        :param now: the decision time.
        """

        statuses = ["RUNNING"] * fleet.running + ["PROVISIONING"] * fleet.booting_count
        instances = tuple(self._instance(i, status) for i, status in enumerate(statuses))
        return PoolState(instances=instances, target_sizes={GROUP: len(instances)}, observed_at=now)

    def _instance(self, i: int, status: str) -> Any:
        key = (i, status)
        if key not in self._cache:
            from datetime import UTC, datetime, timedelta

            created = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
            self._cache[key] = self._make(name=f"sim-{i:03d}", status=status, created=created, group=GROUP)
        return self._cache[key]


def planned_size(plan: Any) -> int:
    """Instances (running + booting) once the plan is applied.

    :param plan: a :class:`~airflow_predictive.contracts.plan.Plan`.
    """
    return int(plan.summary["instances_after"])


@dataclass
class ReactivePolicy:
    """Compute Engine's autoscaler rule, run by the production planner (``signal = recent_demand``).

    :param target_utilization: GCE's target CPU utilisation (0.6 is its default).
    :param stabilization_minutes: scale-in stabilisation window (GCE: 10 minutes).
    """

    target_utilization: float = 0.6
    name: str = "reactive"
    _context: ReplayContext | None = None
    _pool: Any = None
    _states: FleetStates | None = None
    _window: int = 1

    def settings(self) -> dict[str, Any]:
        return {
            "signal": "recent_demand",
            "target_utilization": self.target_utilization,
            "stabilization_minutes": self._pool.scale_in.stabilization_minutes if self._pool else 10.0,
            "initialization_period": "boot delay",
            "planner": "airflow_predictive.planning.planner.plan",
        }

    def prepare(self, context: ReplayContext) -> None:
        self._context = context
        self._pool = backtest_pool(
            context, signal="recent_demand", target_utilization=self.target_utilization
        )
        self._states = FleetStates()
        stab_s = self._pool.scale_in.stabilization_minutes * 60.0
        self._window = max(1, math.ceil(stab_s / context.interval_s))

    def decide(self, step: int, fleet: Fleet) -> int:

        context = self._context
        now = context.index[step].to_pydatetime()
        recent = context.demand[max(0, step - self._window) : step]
        result = planner.plan(
            None, self._states.state(fleet, now), self._pool, now, recent_demand={context.resource: recent}
        )
        return planned_size(result)

    def with_knob(self, target_utilization: float = 0.6, **_: Any) -> ReactivePolicy:
        return ReactivePolicy(target_utilization=target_utilization)


def _forecaster_class() -> Any:
    """The production Forecaster, imported when a policy forecasts.

    The allocate and evaluate tasks import this module through the service-level choice, which replays
    stored forecasts and never fits a model: the forecasting engine's import (scipy) cost each of those
    tasks 1-3 s (docs/benchmarks.md, issue #16).
    """
    from airflow_predictive.forecasting.engine import Forecaster

    return Forecaster


def build_policy(name: str, options: Any):
    """The policy called ``name`` with the product's default settings.

    :param name: ``reactive``, ``seasonal``, ``predictive`` or ``oracle``.
    :param options: the backtest options.
    """
    if name == "oracle":
        return OraclePolicy()
    if name == "reactive":
        return ReactivePolicy()
    if name == "seasonal":
        return SeasonalPolicy()
    if name == "predictive":
        return PredictivePolicy()
    raise ValueError(f"policy {name!r} is not wired yet")


# --------------------------------------------------------------------------- forecast-driven policies


def demand_frame(context: ReplayContext, lo: int, hi: int) -> Any:
    """Observed demand of steps ``lo .. hi-1`` as the long demand frame (``series_id, ts, value``).

    :param context: the replay context.
    :param lo: first step.
    :param hi: one past the last step (the decision step: never observed yet).
    """
    import pandas as pd

    return pd.DataFrame(
        {
            "series_id": SERIES_ID,
            "ts": context.index[lo:hi],
            "value": context.demand[lo:hi],
        }
    )


SERIES_ID = f"pool={POOL_NAME}/resource=cpu"
GROUP = "backtest-mig"


class ForecastPolicy:
    """A predictive policy: the production planner on a forecast refreshed every ``refresh_steps``.

    Subclasses say where the forecast comes from (:meth:`forecast_at`); the planner, the pool and the
    fleet translation are shared, so ``seasonal`` and ``predictive`` differ only in their forecast.

    :param quantile: forecast quantile the planner provisions for (None: the product default).
    :param target_utilization: planned utilisation (None: the product default).
    """

    name = "forecast"

    def __init__(
        self,
        quantile: float | None = None,
        target_utilization: float | None = None,
        guard_utilization: float | None = None,
    ) -> None:
        self.quantile = quantile
        self.target_utilization = target_utilization
        self.guard_utilization = guard_utilization
        self.context: ReplayContext | None = None
        self.pool: Any = None
        self._states = FleetStates()
        self._view: Any = None
        self._view_step = -(10**9)
        self.refresh_steps = 1
        self._cache: dict[int, Any] = {}
        self._history = 1
        self.rules: dict[str, int] = {}  # steps sized by the forecast / by the reactive fallback

    def settings(self) -> dict[str, Any]:
        pool = self.pool
        return {
            "signal": "forecast",
            "quantile": pool.policy.quantile if pool else self.quantile,
            "target_utilization": pool.policy.target_utilization if pool else self.target_utilization,
            "scale_in_quantile": pool.scale_in.quantile if pool else None,
            "stabilization_minutes": pool.scale_in.stabilization_minutes if pool else None,
            "guard_utilization": pool.policy.guard_utilization if pool else self.guard_utilization,
            "min_daily_cycle": pool.policy.min_daily_cycle if pool else None,
            "cycle_window_days": pool.policy.cycle_window_days if pool else None,
            "fallback_utilization": pool.policy.fallback_utilization if pool else None,
            "refresh_steps": self.refresh_steps,
            "planner": "airflow_predictive.planning.planner.plan",
            **({"steps_by_rule": dict(self.rules)} if self.rules else {}),
        }

    def prepare(self, context: ReplayContext) -> None:
        if self.context is not context:
            self._cache = {}
        self.context = context
        self.pool = backtest_pool(
            context,
            signal="forecast",
            quantile=self.quantile,
            target_utilization=self.target_utilization,
            guard_utilization=self.guard_utilization,
        )
        # The planner reads the newest demand (guard) and the daily-cycle window: pass that much history.
        policy = self.pool.policy
        per_day = round(86400 / context.interval_s)
        self._history = max(2, math.ceil(policy.cycle_window_days * per_day))
        self.rules = {}
        self._view_step = -(10**9)

    def horizon_steps(self) -> int:
        """Buckets each forecast must cover: until the next refresh, plus lead time and stabilisation."""
        context = self.context
        stab = math.ceil(self.pool.scale_in.stabilization_minutes * 60 / context.interval_s)
        return self.refresh_steps + context.boot_steps + max(stab, 1) + 2

    def view_at(self, step: int) -> Any:
        """The newest forecast at ``step``: issued now when a refresh is due (each issue kept, by step).

        :param step: the decision step.
        """
        if step - self._view_step >= self.refresh_steps:
            self._view = self.issued_at(step)
            self._view_step = step
        return self._view

    def issued_at(self, step: int) -> Any:
        """The forecast issued at ``step`` (issued now if it was not yet; each issue kept, by step).

        :param step: the issuing step.
        """
        if step not in self._cache:
            self._cache[step] = self.forecast_at(step)
        return self._cache[step]

    def decide(self, step: int, fleet: Fleet) -> int:
        return self.decide_with(self.pool, step, fleet)

    def decide_with(self, pool: Any, step: int, fleet: Fleet) -> int:
        """The planner's target size at ``step`` for ``pool`` (this policy's, or a chosen candidate's).

        :param pool: the simulated pool whose policy sizes the fleet.
        :param step: the decision step.
        :param fleet: the simulated fleet.
        """
        view = self.view_at(step)
        now = self.context.index[step].to_pydatetime()
        state = self._states.state(fleet, now)
        history = max(self._history, planner.seasonal_floor_buckets(pool))  # a chosen pool's floor
        recent = self.context.demand[max(0, step - history) : step]
        result = planner.plan(view, state, pool, now, recent_demand={self.context.resource: recent})
        rule = str(result.summary["sizing"]).split(" ", 1)[0]  # forecast | reactive
        self.rules[rule] = self.rules.get(rule, 0) + 1
        return planned_size(result)

    def issued_at_lead(self, lead: int, column: str) -> tuple[np.ndarray, np.ndarray]:
        """The target step and the ``column`` value of every forecast issued so far, ``lead`` steps ahead.

        :param lead: steps after the issuing step (its first bucket is lead 0).
        :param column: ``mean`` or a quantile column (``q0.9``).
        """
        steps, values = [], []
        for step, view in sorted(self._cache.items()):
            _ts, columns = next(iter(view.series.values()))
            if column in columns and lead < len(columns[column]):
                steps.append(step + lead)
                values.append(float(columns[column][lead]))
        return np.array(steps, dtype=int), np.array(values, dtype=float)

    def forecast_at(self, step: int) -> Any:
        """A :class:`~airflow_predictive.planning.planner.ForecastView` issued at ``step``.

        :param step: the decision step (demand of steps ``< step`` is known).
        """
        raise NotImplementedError

    def view(self, first_step: int, columns: dict[str, np.ndarray]) -> Any:
        """Wrap forecast arrays for buckets ``first_step, first_step + 1, ...`` as a ForecastView.

        :param first_step: the step of the first forecast bucket.
        :param columns: column name (``mean``, ``q0.9``...) -> values.
        """

        context = self.context
        n = len(next(iter(columns.values())))
        start_ns = int(context.index[0].value) + first_step * context.interval_s * 10**9
        ts = start_ns + np.arange(n, dtype=np.int64) * context.interval_s * 10**9
        return ForecastView({context.resource: (ts, columns)}, context.interval_s * 10**9)

    def with_knob(
        self,
        quantile: float | None = None,
        target_utilization: float | None = None,
        guard_utilization: float | None = None,
    ):
        """The same policy with another quantile / utilisation, sharing the already-issued forecasts.

        :param quantile: forecast quantile.
        :param target_utilization: planned utilisation (1 / headroom).
        :param guard_utilization: the planner's reactive guard, None for the product default.
        """
        variant = self._variant(
            quantile=quantile, target_utilization=target_utilization, guard_utilization=guard_utilization
        )
        variant._cache = self._cache
        variant.context = self.context
        return variant

    def _variant(self, **knobs: Any) -> ForecastPolicy:
        return type(self)(**knobs)


class SeasonalPolicy(ForecastPolicy):
    """The planner on the forecasting room's seasonal-naive baseline (same time yesterday).

    A stand-in for the clouds' pattern-based predictive autoscalers.
    """

    name = "seasonal"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "forecaster": "airflow_predictive.forecasting.models.SeasonalNaive"}

    def forecast_at(self, step: int) -> Any:
        context = self.context
        prediction = seasonal_naive_baseline(
            context.demand[:step], context.interval_s, steps=self.horizon_steps(), levels=DEFAULT_QUANTILES
        )
        return self.view(step, prediction.columns(DEFAULT_QUANTILES))


class PredictivePolicy(ForecastPolicy):
    """The product: the production :class:`Forecaster` (auto-ARIMA warm path) and planner, defaults only.

    It runs the production cycle: order selection once on the history (``Forecaster.select``), then
    every step a warm forecast from the stored state (``Forecaster.forecast``), re-estimating the
    parameters every hour (what ``forecast_cycle`` guarantees at its default refit fraction).
    """

    name = "predictive"

    def __init__(
        self,
        quantile: float | None = None,
        target_utilization: float | None = None,
        guard_utilization: float | None = None,
    ) -> None:
        super().__init__(quantile, target_utilization, guard_utilization)
        self.forecaster: Any = None
        self.states: dict[str, dict] = {}
        self.refit_steps = 12
        self._frame: Any = None
        self.models: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        out = {
            **super().settings(),
            "forecaster": "airflow_predictive.forecasting.engine.Forecaster",
            "refit_every_steps": self.refit_steps,
        }
        if self.states:
            state = next(iter(self.states.values()))
            out["model"] = {
                k: state.get(k) for k in ("kind", "order", "seasonal_order", "fourier") if k in state
            }
        if self.models:
            out["forecasts_by_model"] = dict(self.models)
        return out

    def prepare(self, context: ReplayContext) -> None:
        from datetime import timedelta

        fresh = self.context is not context or self.forecaster is None
        super().prepare(context)
        if not fresh:
            return
        # select_workers=0: selection in this process (the backtest is already one process per run).
        self.forecaster = _forecaster_class()(
            interval=timedelta(seconds=context.interval_s), select_workers=0
        )
        self.refit_steps = max(1, round(3600 / context.interval_s))
        self._frame = demand_frame(context, 0, len(context.demand))
        origin = self._origin(context.start)
        lo = max(0, context.start - self.forecaster.history_buckets)
        self.states = self.forecaster.select(self._frame.iloc[lo : context.start], now=origin)

    def _origin(self, step: int) -> Any:
        # The forecast origin lies in the last observed bucket, so the first forecast row is `step`.
        return self.context.index[step - 1].to_pydatetime()

    def forecast_at(self, step: int) -> Any:
        """The production warm path on one series: ``Forecaster.predict_window`` from the stored state.

        This is what ``Forecaster.forecast`` does per series, without rebuilding the long frame and
        the forecast frame every step (the trace is already regular); a step whose warm path raises
        goes through ``Forecaster.forecast`` itself, which records the fallback.

        :param step: the decision step.
        """

        forecaster = self.forecaster
        context = self.context
        lo = max(0, step - forecaster.history_buckets)
        values = context.demand[lo:step]
        end = int(context.index[step - 1].value // 10**9) // context.interval_s
        window = SeriesWindow(SERIES_ID, values, end, context.interval_s, np.ones(values.size, bool))
        state = self.states.get(SERIES_ID)
        refit = step > context.start and (step - context.start) % self.refit_steps == 0
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                if refit and state is not None and state.get("kind") == "arima":
                    state = forecaster.model.refit(
                        window, state, steps=forecaster.steps, levels=forecaster.quantiles
                    )
                    self.states[SERIES_ID] = state
                prediction = forecaster.predict_window(window, state)
        except Exception:  # noqa: BLE001 - the production cycle's own fallback handles it
            return self._slow_path(step)
        label = prediction.model + (f" ({prediction.fallback})" if prediction.fallback else "")
        self.models[label] = self.models.get(label, 0) + 1
        return self.view(step, prediction.columns(forecaster.quantiles, self.horizon_steps()))

    def _slow_path(self, step: int) -> Any:

        lo = max(0, step - self.forecaster.history_buckets)
        frame, updated = self.forecaster.forecast(
            self._frame.iloc[lo:step], self.states, now=self._origin(step)
        )
        self.states.update(updated)
        label = "forecast() fallback path"
        self.models[label] = self.models.get(label, 0) + 1
        return ForecastView.from_frame(frame, POOL_NAME)

    def _variant(self, **knobs: Any) -> PredictivePolicy:
        variant = PredictivePolicy(**knobs)
        variant.forecaster = self.forecaster
        variant.states = self.states
        variant.refit_steps = self.refit_steps
        variant._frame = self._frame
        return variant

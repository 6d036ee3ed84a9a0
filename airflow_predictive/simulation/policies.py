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
:class:`~airflow_predictive.allocation.state.PoolState` and a trace window into the long demand frame,
call the production code, and read the target size off the returned plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airflow_predictive.allocation import machines
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
        return [{"quantile": q} for q in (0.5, 0.8, 0.9, 0.95, 0.99)] + [
            {"quantile": 0.9, "headroom": h} for h in (0.9, 1.1, 1.25)
        ]
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


def build_policy(name: str, options: Any):
    """The policy called ``name`` with the product's default settings.

    :param name: ``reactive``, ``seasonal``, ``predictive`` or ``oracle``.
    :param options: the backtest options (boot delay, max instances, machine type).
    """
    if name == "oracle":
        return OraclePolicy()
    raise ValueError(f"policy {name!r} is not wired yet")

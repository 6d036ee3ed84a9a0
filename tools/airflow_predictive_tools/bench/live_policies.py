"""The live benchmark's policies as capacity-pool settings of the one planner (no second planner).

| policy | rule | who runs the allocation cycle |
|---|---|---|
| ``predictive`` | the product's defaults (forecast, known future work under any rule) | the control-loop DAG |
| ``cpu`` | Compute Engine autoscaler: observed demand / 0.6, 10-minute scale-in stabilisation | the control-loop DAG |
| ``static`` | ``min_instances = max_instances``: enough for the workload's nominal peak | the control-loop DAG |
| ``queue`` | KEDA in Airflow's Helm chart: ceil((queued + running) / worker concurrency) | the bench's poll loop |
| ``predictive-qNN`` | ``predictive`` at provisioning quantile 0.NN (``policy.quantile``) | the control-loop DAG |

The ``predictive-qNN`` variants show what the default quantile's warm buffer buys: the same product,
one setting changed, side by side with the rest (NN: a level the forecaster stores other than 0.9).

``queue``'s numbers are the Helm chart's defaults (``chart/values.yaml`` of apache/airflow,
``workers.keda``): ``pollingInterval: 5`` (seconds), ``cooldownPeriod: 30`` (seconds of no activity
before scaling to zero), and scale-down otherwise under the Kubernetes HPA's default stabilisation
window of 300 s (the chart leaves ``advanced.horizontalPodAutoscalerConfig`` empty; its comment shows
``stabilizationWindowSeconds: 300``). The query counts ``running`` and ``queued`` task instances and
divides by ``[celery] worker_concurrency``: the planner's ``slots`` demand over ``slots_per_instance``,
planned full.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from airflow_predictive.contracts.pools import CapacityPool

POLICIES = ("predictive", "queue", "cpu", "static")
#: Policies whose allocation cycle is the control-loop DAG's ``allocate`` task (and the variants).
DAG_POLICIES = ("predictive", "cpu", "static")
#: ``predictive`` at another provisioning quantile, one the forecaster stores (a VM name takes no dot).
VARIANT = re.compile(r"^predictive-q(50|80|95|99)$")
PROJECT, ZONE = "live-bench", "us-central1-a"
MACHINE_TYPE = "n2-standard-2"

KEDA_POLLING_SECONDS = 5.0  # chart workers.keda.pollingInterval
KEDA_COOLDOWN_SECONDS = 30.0  # chart workers.keda.cooldownPeriod: no activity this long -> zero workers
HPA_SCALE_DOWN_SECONDS = 300.0  # Kubernetes HPA default scale-down stabilisation window


@dataclass(frozen=True)
class PoolSettings:
    """What every policy's pool shares.

    :param slots: Celery worker concurrency of each VM (task slots).
    :param max_instances: ceiling of every pool.
    :param lead_minutes: ``predictive``'s boot lead time: the cycle's own latency up to its allocate
        task, the VM's boot and the worker's start.
    :param cadence_minutes: the control-loop DAG's interval (``[predictive] interval_minutes``).
    """

    slots: int = 2
    max_instances: int = 8
    lead_minutes: float = 3.0
    cadence_minutes: float = 5.0


def pool_name(policy: str) -> str:
    """The pool (and its Airflow queue) a policy provisions."""
    return f"live-{policy}"


def in_dag(policy: str) -> bool:
    """Whether the control-loop DAG allocates the policy's pool (every policy but ``queue``)."""
    return policy in DAG_POLICIES or VARIANT.match(policy) is not None


def variant_quantile(policy: str) -> float | None:
    """The provisioning quantile of a ``predictive-qNN`` variant (None for any other policy)."""
    found = VARIANT.match(policy)
    return int(found.group(1)) / 100 if found else None


def parse_policies(text: str) -> list[str]:
    """``predictive,queue`` -> the policies, in the given order; one clear error for anything else."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES and not VARIANT.match(p)]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"--policies {text!r}: give each of {', '.join(POLICIES)} (or predictive-q50, -q80, -q95, "
            "-q99: predictive at that provisioning quantile) at most once, comma-separated"
        )
    return names


def _common(policy: str, settings: PoolSettings) -> dict:
    return {
        "project": PROJECT,
        "zone": ZONE,
        "backend": "instances",
        "machine_type": MACHINE_TYPE,
        "slots_per_instance": settings.slots,
        "min_instances": 0,
        "max_instances": settings.max_instances,
        "mode": "forecast_and_scale",
        "spot": {"mode": "none"},
        # No storage threshold of its own: the product's 10 GiB keeps storage out of the plans. The
        # tasks hold memory and CPU only; with 0, their few profiled writes bought a 10 GiB data disk.
        "lead_time_minutes": {"boot": settings.lead_minutes},
    }


def pool_settings(policy: str, settings: PoolSettings, static_instances: int) -> dict:
    """The pool of one policy, as the pools file (or ``CapacityPool``) takes it."""
    pool = _common(policy, settings)
    if policy == "predictive":
        pool["policy"] = {"planning_interval_minutes": settings.cadence_minutes}
    elif variant_quantile(policy) is not None:
        pool["policy"] = {
            "planning_interval_minutes": settings.cadence_minutes,
            "quantile": variant_quantile(policy),
        }
    elif policy == "cpu":
        pool["policy"] = {
            "signal": "recent_demand",
            "target_utilization": 0.6,
            "planning_interval_minutes": settings.cadence_minutes,
        }
        pool["scale_in"] = {"stabilization_minutes": 10}
    elif policy == "static":
        n = min(static_instances, settings.max_instances)
        pool.update(min_instances=n, max_instances=n)
        pool["policy"] = {"signal": "recent_demand", "planning_interval_minutes": settings.cadence_minutes}
    elif policy == "queue":
        pool["policy"] = {"signal": "recent_demand", "planning_interval_minutes": KEDA_POLLING_SECONDS / 60}
        pool["scale_in"] = {"stabilization_minutes": HPA_SCALE_DOWN_SECONDS / 60}
    else:
        raise ValueError(f"unknown policy {policy!r}")
    return pool


def pools_yaml(policies: Sequence[str], settings: PoolSettings, static_instances: int) -> str:
    """The pools file of the control-loop DAG: the policies it allocates (not ``queue``)."""
    import yaml

    pools = {pool_name(p): pool_settings(p, settings, static_instances) for p in policies if in_dag(p)}
    return yaml.safe_dump({"pools": pools}, sort_keys=True)


def queue_pool(settings: PoolSettings) -> CapacityPool:
    """The ``queue`` policy's pool, planned by the bench's KEDA loop."""
    return CapacityPool(name=pool_name("queue"), **pool_settings("queue", settings, 0))


def keda_window(samples: Sequence[float]) -> list[float]:
    """The observed slots the KEDA rule sizes from: the HPA's stabilisation window of polls, or only
    the cooldown's polls once those are all zero (KEDA deactivates and scales to zero).

    :param samples: queued + running tasks of the queue, one per poll, oldest first.
    """
    window = math.ceil(HPA_SCALE_DOWN_SECONDS / KEDA_POLLING_SECONDS)
    cooldown = math.ceil(KEDA_COOLDOWN_SECONDS / KEDA_POLLING_SECONDS)
    recent = list(samples[-window:])
    tail = recent[-cooldown:]
    if len(tail) == cooldown and not any(tail):
        return tail
    return recent

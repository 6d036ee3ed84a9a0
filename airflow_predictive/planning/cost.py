"""Hourly cost of a pool's capacity: instances (standard or spot) and persistent disks."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from airflow_predictive.contracts import machines
from airflow_predictive.contracts.capacity import InstanceState
from airflow_predictive.contracts.plan import Provisioning
from airflow_predictive.contracts.pools import CapacityPool

HOURS_PER_MONTH = 730.0


def instance_price(pool: CapacityPool, instance: InstanceState) -> float:
    """Hourly price of one instance: the pool's price, scaled by vCPUs when a VM was resized to another type.

    :param pool: the pool (its prices are per instance of its machine type).
    :param instance: the VM.
    """
    spot = instance.provisioning == Provisioning.SPOT
    base = pool.price(spot)
    if not instance.machine_type or instance.machine_type == pool.machine_type:
        return base
    other = machines.lookup(instance.machine_type)
    return base * (other.vcpus / pool.machine.vcpus) if other else base


def hourly_cost(
    pool: CapacityPool,
    instances: Iterable[InstanceState] = (),
    *,
    standard: int = 0,
    spot: int = 0,
    storage_gib: float = 0.0,
) -> float:
    """Cost per hour of the given live instances, plus extra standard/spot instances and disk GiB.

    :param pool: the pool with its prices.
    :param instances: existing VMs counted at their own price.
    :param standard: additional standard instances of the pool's machine type.
    :param spot: additional spot instances.
    :param storage_gib: persistent disk GiB.
    """
    total = sum(instance_price(pool, i) for i in instances)
    total += standard * pool.price(False) + spot * pool.price(True)
    total += storage_gib * pool.prices.disk_gib_month / HOURS_PER_MONTH
    # Absurd but finite prices and sizes overflow to inf; the largest float compares the same against a
    # budget and keeps a recorded plan valid JSON.
    return min(float(total), sys.float_info.max)

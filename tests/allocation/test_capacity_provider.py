"""The allocation cycle's view of a cloud (contracts.capacity_provider) is what ComputeEngine offers."""

from __future__ import annotations

import inspect

from airflow_predictive.contracts.capacity_provider import CapacityProvider
from airflow_predictive.gce.compute import ComputeEngine


def test_compute_engine_offers_every_call_of_the_capacity_provider_with_the_same_signature() -> None:
    calls = [
        name
        for name, _ in inspect.getmembers(CapacityProvider, inspect.isfunction)
        if not name.startswith("_")
    ]
    assert calls == ["apply", "instance_status", "machine_type", "pool_state"]
    for name in calls:
        assert inspect.signature(getattr(ComputeEngine, name)) == inspect.signature(
            getattr(CapacityProvider, name)
        )

"""What the allocation cycle needs from a cloud: the pool's current capacity, a machine type's size,
applying one action, and one VM's status at its release.

:class:`airflow_predictive.gce.compute.ComputeEngine` implements it for Compute Engine (like
Karpenter's cloud-provider interface: nothing else in the runtime knows the cloud)."""

from __future__ import annotations

from typing import Any, Protocol

from airflow_predictive.contracts.capacity import PoolState
from airflow_predictive.contracts.machines import MachineType
from airflow_predictive.contracts.plan import Action
from airflow_predictive.contracts.pools import CapacityPool


class CapacityProvider(Protocol):
    """A cloud's capacity for one project and zone, in the provider's vocabulary (pool, action)."""

    def machine_type(self, name: str) -> MachineType:
        """vCPUs and memory of a machine type (raises the cloud's error when unknown)."""
        ...

    def pool_state(self, pool: CapacityPool) -> PoolState:
        """The pool's instances and disks as the cloud holds them now."""
        ...

    def instance_status(self, name: str) -> str | None:
        """One VM's status now (None: it no longer exists): the release protocol reads it at the delete."""
        ...

    def apply(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        """Carry out one action idempotently (its request id); return what the cloud answered."""
        ...

"""What a pool has right now: the planner's view of current Compute Engine capacity.

Plain frozen dataclasses, so the planner stays a pure function: the GCE layer builds a
:class:`PoolState` from the API (``ComputeEngine.pool_state``), the backtest builds one from its
simulated fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from airflow_predictive.contracts.plan import Provisioning

# Instance statuses that hold (or will shortly hold) capacity. TERMINATED/STOPPED VMs cost no vCPU.
LIVE_STATUSES = frozenset({"PROVISIONING", "STAGING", "RUNNING", "REPAIRING"})
BOOTING_STATUSES = frozenset({"PROVISIONING", "STAGING"})


@dataclass(frozen=True)
class InstanceState:
    """One VM of a pool.

    :param name: instance name (also the first label of its hostname, which is how busy workers match).
    :param status: Compute Engine status (RUNNING, PROVISIONING, STAGING, STOPPING, TERMINATED, ...).
    :param provisioning: standard or spot.
    :param machine_type: machine type name (``n2-standard-8``).
    :param labels: instance labels.
    :param created: creation time (UTC), None if unknown.
    :param group: managed instance group it belongs to ("" for a labelled standalone VM).
    :param tier_1: whether Tier_1 networking is configured.
    :param internal_ips: the VM's internal IPv4 addresses (a worker may report one as its hostname).
    """

    name: str
    status: str = "RUNNING"
    provisioning: Provisioning = Provisioning.STANDARD
    machine_type: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    created: datetime | None = None
    group: str = ""
    tier_1: bool = False
    internal_ips: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES


@dataclass(frozen=True)
class DiskState:
    """One persistent data disk of a pool.

    :param name: disk name.
    :param size_gib: size in GiB.
    :param attached_to: instance name it is attached to ("" when detached).
    """

    name: str
    size_gib: float
    attached_to: str = ""


@dataclass(frozen=True)
class PoolState:
    """Current capacity of one pool.

    :param instances: the pool's VMs (every status; only live ones count as capacity).
    :param target_sizes: managed instance group name -> target size (empty for an ``instances`` pool).
    :param disks: the pool's data disks.
    :param observed_at: when the state was read.
    """

    instances: tuple[InstanceState, ...] = ()
    target_sizes: Mapping[str, int] = field(default_factory=dict, hash=False)
    disks: tuple[DiskState, ...] = ()
    observed_at: datetime | None = None

    def live(self, provisioning: Provisioning | None = None) -> list[InstanceState]:
        return [
            i for i in self.instances if i.live and (provisioning is None or i.provisioning == provisioning)
        ]

    @property
    def storage_gib(self) -> float:
        return float(sum(d.size_gib for d in self.disks))

    def with_instances(self, instances: tuple[InstanceState, ...]) -> PoolState:
        return replace(self, instances=instances)

"""Compute Engine machine-type catalogue and Google's documented per-VM egress bandwidth rule.

The emulator serves this catalogue through ``machineTypes.get/list``. The bandwidth rule is a plain
function because the real ``MachineType`` resource does not carry it: the planner computes it from the
type name and vCPU count exactly as Google's documentation states it ("Network bandwidth"):

- default tier: about 2 Gbps per vCPU, capped at 16 Gbps for E2, 32 Gbps for N1/N2/N2D/C2, with
  shared-core E2 types at 1-2 Gbps; C3 has its own table (23 Gbps up to 8 vCPUs, 32 up to 44,
  62 at 88, 100 at 176);
- ``TIER_1`` (``networkPerformanceConfig.totalEgressBandwidthTier``) raises the cap on N2, N2D, C2 and
  C3 types with at least 30 vCPUs (50 to 200 Gbps); it changes nothing on other types.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TIER = "DEFAULT"
TIER_1 = "TIER_1"


@dataclass(frozen=True)
class MachineType:
    """One machine type: name, vCPUs, memory and whether its cores are shared."""

    name: str
    guest_cpus: int
    memory_mb: int
    shared_cpu: bool = False

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[0]

    def to_resource(self, project: str, zone: str, link_prefix: str) -> dict:
        """Render the ``compute#machineType`` JSON resource for one zone.

        :param project: project id.
        :param zone: zone name.
        :param link_prefix: URL prefix of self links (``https://www.googleapis.com/compute/v1/``).
        """
        gib = self.memory_mb / 1024
        memory = f"{gib:g} GB"
        resource = {
            "kind": "compute#machineType",
            "id": str(_stable_id(self.name)),
            "creationTimestamp": "2015-01-01T00:00:00.000-07:00",
            "name": self.name,
            "description": f"{self.guest_cpus} vCPU{'s' if self.guest_cpus > 1 else ''}, {memory} RAM",
            "guestCpus": self.guest_cpus,
            "memoryMb": self.memory_mb,
            "imageSpaceGb": 0,
            "maximumPersistentDisks": 16 if self.shared_cpu else 128,
            "maximumPersistentDisksSizeGb": "3072" if self.shared_cpu else "263168",
            "zone": zone,
            "isSharedCpu": self.shared_cpu,
            "architecture": "X86_64",
            "selfLink": f"{link_prefix}projects/{project}/zones/{zone}/machineTypes/{self.name}",
        }
        # Not part of Google's resource (clients ignore unknown fields); handy for raw HTTP readers.
        resource["maximumEgressBandwidthGbps"] = max_egress_gbps(self.name, self.guest_cpus)
        return resource


def _stable_id(name: str) -> int:
    value = 0
    for char in name.encode():
        value = (value * 131 + char) % (2**53)
    return value


def _family(prefix: str, sizes: list[int], mb_per_cpu: int) -> list[MachineType]:
    return [MachineType(f"{prefix}-{n}", n, n * mb_per_cpu) for n in sizes]


MACHINE_TYPES: dict[str, MachineType] = {
    mt.name: mt
    for mt in [
        MachineType("e2-micro", 2, 1024, shared_cpu=True),
        MachineType("e2-small", 2, 2048, shared_cpu=True),
        MachineType("e2-medium", 2, 4096, shared_cpu=True),
        *_family("e2-standard", [2, 4, 8, 16, 32], 4096),
        *_family("e2-highmem", [2, 4, 8, 16], 8192),
        *_family("e2-highcpu", [2, 4, 8, 16, 32], 1024),
        *[MachineType(f"n1-standard-{n}", n, n * 3840) for n in [1, 2, 4, 8, 16, 32, 64, 96]],
        *_family("n2-standard", [2, 4, 8, 16, 32, 48, 64, 80, 96, 128], 4096),
        *_family("n2-highmem", [2, 4, 8, 16, 32, 48, 64, 80, 96, 128], 8192),
        *_family("n2-highcpu", [2, 4, 8, 16, 32, 48, 64, 80, 96], 1024),
        *_family("n2d-standard", [2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224], 4096),
        *_family("c2-standard", [4, 8, 16, 30, 60], 4096),
        *_family("c3-standard", [4, 8, 22, 44, 88, 176], 4096),
        *_family("c3-highmem", [4, 8, 22, 44, 88, 176], 8192),
    ]
}

_DEFAULT_CAP_GBPS = {"e2": 16, "n1": 32, "n2": 32, "n2d": 32, "c2": 32}
_SHARED_CORE_GBPS = {"e2-micro": 1, "e2-small": 1, "e2-medium": 2}
_TIER_1_FAMILIES = {"n2", "n2d", "c2", "c3"}


def max_egress_gbps(machine_type: str, guest_cpus: int | None = None, tier: str = DEFAULT_TIER) -> float:
    """Return the documented maximum per-VM egress bandwidth (Gbit/s) for a machine type and tier.

    :param machine_type: machine type name (``n2-standard-8``) or URL ending with it.
    :param guest_cpus: vCPU count; taken from the catalogue when omitted (custom types need it).
    :param tier: ``DEFAULT`` or ``TIER_1`` (``networkPerformanceConfig.totalEgressBandwidthTier``).
    """
    name = machine_type.rsplit("/", 1)[-1]
    if guest_cpus is None:
        if name not in MACHINE_TYPES:
            raise ValueError(f"unknown machine type {name!r}: pass guest_cpus for custom types")
        guest_cpus = MACHINE_TYPES[name].guest_cpus
    if tier not in (DEFAULT_TIER, TIER_1):
        raise ValueError(f"unknown bandwidth tier {tier!r}: use {DEFAULT_TIER} or {TIER_1}")
    if name in _SHARED_CORE_GBPS:
        return float(_SHARED_CORE_GBPS[name])
    family = name.split("-", 1)[0]
    if tier == TIER_1 and family in _TIER_1_FAMILIES and guest_cpus >= 30:
        return float(_tier_1_gbps(family, guest_cpus))
    if family == "c3":
        return float(_c3_default_gbps(guest_cpus))
    return float(min(2 * guest_cpus, _DEFAULT_CAP_GBPS.get(family, 32)))


def _tier_1_gbps(family: str, cpus: int) -> int:
    if family == "c3":
        return 200 if cpus >= 176 else 100 if cpus >= 88 else 50
    if family == "c2":
        return 100 if cpus >= 60 else 50
    return 100 if cpus >= 64 else 75 if cpus >= 48 else 50


def _c3_default_gbps(cpus: int) -> int:
    if cpus >= 176:
        return 100
    if cpus >= 88:
        return 62
    if cpus >= 22:
        return 32
    return 23

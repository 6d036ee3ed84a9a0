"""Compute Engine machine types: vCPUs, memory, egress bandwidth and default hourly prices.

The catalog lets a pool file be validated without network access and gives the planner its
per-instance capacity. At run time :class:`~airflow_predictive.gce.compute.ComputeEngine` reads the real
machine type from the API (``machineTypes.get``) and the operator passes that spec to the planner,
so the catalog only supplies what the API does not: prices and the egress rules.

Prices are approximate us-central1 on-demand and spot list prices per vCPU-hour and GiB-hour (2025);
a pool overrides them with ``prices``. Egress follows Compute Engine's documented per-VM limits:
2 Gbit/s per vCPU up to the family cap; Tier_1 networking lifts the cap for large N2/N2D/C2/C2D/C3
machines (50/75/100 Gbit/s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# family -> (standard $/vCPU-h, standard $/GiB-h, spot $/vCPU-h, spot $/GiB-h, default egress cap Gbit/s)
FAMILY_RATES: dict[str, tuple[float, float, float, float, float]] = {
    "e2": (0.021811, 0.002923, 0.006543, 0.000877, 16.0),
    "n1": (0.031611, 0.004237, 0.006655, 0.000892, 32.0),
    "n2": (0.031611, 0.004237, 0.007650, 0.001025, 32.0),
    "n2d": (0.027502, 0.003686, 0.006655, 0.000892, 32.0),
    "c2": (0.033982, 0.004555, 0.008227, 0.001103, 32.0),
    "c2d": (0.029563, 0.003959, 0.007155, 0.000958, 32.0),
    "c3": (0.033920, 0.004548, 0.008208, 0.001101, 32.0),
}
TIER_1_FAMILIES = frozenset({"n2", "n2d", "c2", "c2d", "c3"})

# Memory GiB per vCPU of each predefined shape, and the vCPU counts Compute Engine offers.
_SHAPES: dict[str, dict[str, float]] = {
    "e2": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
    "n1": {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9},
    "n2": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
    "n2d": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
    "c2": {"standard": 4.0},
    "c2d": {"standard": 4.0, "highmem": 8.0, "highcpu": 2.0},
    "c3": {"standard": 4.0, "highmem": 8.0, "highcpu": 2.0},
}
_SIZES: dict[str, tuple[int, ...]] = {
    "e2": (2, 4, 8, 16, 32),
    "n1": (1, 2, 4, 8, 16, 32, 64, 96),
    "n2": (2, 4, 8, 16, 32, 48, 64, 80, 96, 128),
    "n2d": (2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224),
    "c2": (4, 8, 16, 30, 60),
    "c2d": (2, 4, 8, 16, 32, 56, 112),
    "c3": (4, 8, 22, 44, 88, 176),
}
_CUSTOM = re.compile(r"^(?:(?P<family>[a-z0-9]+)-)?custom-(?P<cpus>\d+)-(?P<mem>\d+)$")


@dataclass(frozen=True)
class MachineType:
    """One machine type: what one instance brings to the pool and what it costs per hour.

    :param name: machine type name, e.g. ``n2-standard-8``.
    :param vcpus: guest vCPUs.
    :param memory_gib: memory in GiB.
    :param family: machine family (``n2``); decides prices, egress cap and Tier_1 support.
    """

    name: str
    vcpus: float
    memory_gib: float
    family: str

    def egress_mbps(self, tier_1: bool = False) -> float:
        """Maximum per-VM egress in Mbit/s (default networking, or Tier_1 where the family allows)."""
        cap = FAMILY_RATES.get(self.family, FAMILY_RATES["n2"])[4]
        default = min(2.0 * self.vcpus, cap) * 1000.0
        if tier_1 and self.supports_tier_1:
            return max(default, _tier_1_gbps(self.vcpus) * 1000.0)
        return default

    @property
    def supports_tier_1(self) -> bool:
        return self.family in TIER_1_FAMILIES and self.vcpus >= 30

    def hourly_price(self, spot: bool = False) -> float:
        """Default list price per hour (standard or spot) from the family's per-vCPU and per-GiB rates."""
        cpu, mem, spot_cpu, spot_mem, _ = FAMILY_RATES.get(self.family, FAMILY_RATES["n2"])
        if spot:
            return round(self.vcpus * spot_cpu + self.memory_gib * spot_mem, 6)
        return round(self.vcpus * cpu + self.memory_gib * mem, 6)


def _tier_1_gbps(vcpus: float) -> float:
    if vcpus >= 80:
        return 100.0
    if vcpus >= 48:
        return 75.0
    return 50.0


def _build_catalog() -> dict[str, MachineType]:
    catalog: dict[str, MachineType] = {}
    for family, shapes in _SHAPES.items():
        for shape, gib_per_cpu in shapes.items():
            for cpus in _SIZES[family]:
                if family == "c2" and cpus == 4 and shape != "standard":
                    continue
                name = f"{family}-{shape}-{cpus}"
                catalog[name] = MachineType(name, float(cpus), round(cpus * gib_per_cpu, 2), family)
    catalog["e2-medium"] = MachineType("e2-medium", 2.0, 4.0, "e2")
    catalog["e2-small"] = MachineType("e2-small", 2.0, 2.0, "e2")
    return catalog


CATALOG: dict[str, MachineType] = _build_catalog()


def family_of(name: str) -> str:
    return name.split("-", 1)[0] if "-" in name else name


def lookup(name: str) -> MachineType | None:
    """The catalog entry for ``name`` (predefined or ``[family-]custom-CPUS-MIB``), or None when unknown."""
    if name in CATALOG:
        return CATALOG[name]
    match = _CUSTOM.match(name)
    if match:
        family = match["family"] or "n1"
        return MachineType(name, float(match["cpus"]), round(int(match["mem"]) / 1024, 3), family)
    return None


def larger_in_family(machine: MachineType) -> list[MachineType]:
    """Larger predefined machine types of the same family and shape, smallest first (for resize_instance)."""
    parts = machine.name.split("-")
    if len(parts) != 3 or machine.family not in _SHAPES:
        return []
    shape = parts[1]
    bigger = [
        CATALOG[f"{machine.family}-{shape}-{cpus}"]
        for cpus in _SIZES[machine.family]
        if cpus > machine.vcpus and f"{machine.family}-{shape}-{cpus}" in CATALOG
    ]
    return bigger

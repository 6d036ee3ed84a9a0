"""The demand-series contract shared by profiling, forecasting, allocation and simulation.

A demand series is long-format data, one row per ``(series_id, ts)``, where ``series_id`` names the
capacity pool and the resource: ``pool=etl-workers/resource=cpu``. Units per resource are fixed so
every room agrees on what a number means.
"""

from __future__ import annotations

import re
from typing import NamedTuple

RESOURCES: dict[str, str] = {
    "cpu": "vCPU",
    "memory": "GiB",
    "storage": "GiB",
    "network": "Mbit/s",
}
DEMAND_COLUMNS = ["series_id", "ts", "value"]

_POOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$")
_SERIES = re.compile(r"^pool=(?P<pool>[^/]+)/resource=(?P<resource>[a-z_]+)$")


class SeriesKey(NamedTuple):
    pool: str
    resource: str


def validate_pool_name(pool: str) -> str:
    if not _POOL_NAME.match(pool or ""):
        raise ValueError(
            f"invalid capacity pool name {pool!r}: use lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (at most 63 characters)"
        )
    return pool


def series_id(pool: str, resource: str) -> str:
    validate_pool_name(pool)
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource {resource!r}; expected one of {', '.join(RESOURCES)}")
    return f"pool={pool}/resource={resource}"


def parse_series_id(value: str) -> SeriesKey:
    match = _SERIES.match(value or "")
    if not match:
        raise ValueError(f"invalid series id {value!r}; expected 'pool=<pool>/resource=<resource>'")
    return SeriesKey(match["pool"], match["resource"])

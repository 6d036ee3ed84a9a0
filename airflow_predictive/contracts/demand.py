"""The demand-series contract shared by profiling, forecasting, allocation and simulation.

A demand series is long-format data, one row per ``(series_id, ts)``, where ``series_id`` names the
capacity pool and the resource: ``pool=etl-workers/resource=cpu``. Units per resource are fixed so
every room agrees on what a number means.

``slots`` is the odd one out: not what tasks use but how many Celery task slots they hold (a worker runs
at most ``worker_concurrency`` tasks at once whatever they use), running or waiting in the queue.
"""

from __future__ import annotations

import re
from typing import NamedTuple

RESOURCES: dict[str, str] = {
    "cpu": "vCPU",
    "memory": "GiB",
    "storage": "GiB",
    "network": "Mbit/s",
    "slots": "slots",
}
#: The resources a task's measured usage (samples, aggregates, hints) gives; ``slots`` come from its
#: Celery slot and queue wait instead.
USAGE_RESOURCES: tuple[str, ...] = ("cpu", "memory", "storage", "network")
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

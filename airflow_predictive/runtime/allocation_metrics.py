"""Metric names the allocator emits (one place, so the UI and dashboards agree on them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

PREFIX = "predictive"
ACTIONS_PLANNED = f"{PREFIX}.actions.planned"
ACTIONS_APPLIED = f"{PREFIX}.actions.applied"
ACTIONS_FAILED = f"{PREFIX}.actions.failed"
ACTIONS_SKIPPED = f"{PREFIX}.actions.skipped"
ACTIONS_DRY_RUN = f"{PREFIX}.actions.dry_run"
PLAN_CAPPED = f"{PREFIX}.plan.capped"
POOL_INSTANCES = f"{PREFIX}.pool.instances"  # gauge, tagged by pool
POOL_COST_PER_HOUR = f"{PREFIX}.pool.cost_per_hour"  # gauge, planned hourly cost
POOL_LOCKED = f"{PREFIX}.pool.locked"  # a run skipped a pool another run was allocating

ALL = (
    ACTIONS_PLANNED,
    ACTIONS_APPLIED,
    ACTIONS_FAILED,
    ACTIONS_SKIPPED,
    ACTIONS_DRY_RUN,
    PLAN_CAPPED,
    POOL_INSTANCES,
    POOL_COST_PER_HOUR,
    POOL_LOCKED,
)


def _stats():
    try:
        from airflow.sdk._shared.observability.metrics.stats import Stats  # type: ignore[import-not-found]

        return Stats
    except Exception:
        pass
    try:
        from airflow.stats import Stats

        return Stats
    except Exception:  # airflow absent (pure use of the core): metrics are a no-op
        return None


def emit(pool: str, counters: Mapping[str, float], gauges: Mapping[str, float] | None = None) -> None:
    """Send counters and gauges through Airflow's Stats (StatsD/OpenTelemetry as configured), tagged by pool.

    :param pool: pool name (tag ``pool``).
    :param counters: metric name -> increment.
    :param gauges: metric name -> value.
    """
    stats = _stats()
    if stats is None:
        return
    tags = {"pool": pool}
    try:
        for name, count in counters.items():
            if count:
                stats.incr(name, count=int(count), tags=tags)
        for name, value in (gauges or {}).items():
            stats.gauge(name, float(value), tags=tags)
    except Exception as exc:  # metrics must never fail an allocation
        log.debug("metrics not sent: %s", exc)

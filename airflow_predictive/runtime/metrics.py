"""Every metric airflow-predictive emits, and the one place that emits them (Airflow's own Stats).

Metrics go through the Task SDK's Stats (``airflow.sdk.observability.stats``), which the shell installs
(:func:`airflow_predictive.stats.install`): StatsD, Datadog or OpenTelemetry, whatever ``[metrics]``
configures, with Airflow's ``statsd_prefix`` (``airflow.``).
Both cycles (allocation and feedback) use one convention, Airflow 3's own for its metrics:

- a metric has one fixed name (``predictive.forecast.mean``) and carries what it is about as
  **tags**: ``pool`` (the capacity pool), ``resource`` (cpu, memory, storage, network) and ``kind``
  (of an alert). Tagged backends (OpenTelemetry attributes, Datadog tags, StatsD with InfluxDB tags)
  see ``predictive.forecast.mean{pool=etl-workers, resource=cpu}``;
- while ``[metrics] legacy_names_on`` is on (Airflow's default), it is also sent under its
  **legacy name**, the tag values as name segments in the order pool, resource, kind
  (``predictive.forecast.mean.etl-workers.cpu``), as Airflow sends ``pool.open_slots`` and
  ``pool.open_slots.<pool_name>``: plain StatsD has no tags, so that is the name it can tell pools by.
  A metric without tags has one name.

Each counter has one source: the feedback cycle counts the ledger's actions by status
(``actions.applied``, ``actions.failed``, ``actions.planned``: still pending); the allocation cycle
counts what only it sees (``actions.skipped``, ``actions.dry_run``, ``plan.capped``, ``pool.locked``)
and sets the pool gauges. Sending is best effort: without Airflow, or when the backend fails, a
metric is dropped (logged at debug), never an error of the cycle; with no backend installed (the core
used without Airflow, the backtest) metrics go nowhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "predictive"

# Gauges per pool and resource.
FORECAST_MEAN = f"{PREFIX}.forecast.mean"  # next bucket's forecast mean
FORECAST_UPPER = f"{PREFIX}.forecast.upper"  # next bucket's provisioning quantile
CAPACITY_PROVISIONED = f"{PREFIX}.capacity.provisioned"
UNMET_DEMAND = f"{PREFIX}.unmet_demand"  # mean per bucket, in the resource's units (accuracy.unmet_mean)
IDLE_CAPACITY = f"{PREFIX}.idle_capacity"  # mean per bucket, in the resource's units (accuracy.idle_mean)
COVERAGE = f"{PREFIX}.coverage"  # of the provisioning quantile, over the scored window
MASE = f"{PREFIX}.mase"
CALIBRATION_FACTOR = f"{PREFIX}.calibration.factor"
# Gauges per pool (allocation cycle).
POOL_INSTANCES = f"{PREFIX}.pool.instances"  # instances after the plan
POOL_COST_PER_HOUR = f"{PREFIX}.pool.cost_per_hour"  # planned hourly cost
POOL_QUEUE_WAIT_P95 = f"{PREFIX}.pool.queue_wait_p95_seconds"  # tasks' queue wait, trailing hour
# Timer (milliseconds) of the forecasting task's model fits.
FIT_TIME = f"{PREFIX}.forecast.fit_time"
# Counters per pool, feedback cycle: the ledger's actions created since the last cycle, by status.
ACTIONS_APPLIED = f"{PREFIX}.actions.applied"
ACTIONS_FAILED = f"{PREFIX}.actions.failed"
ACTIONS_PLANNED = f"{PREFIX}.actions.planned"  # recorded, neither applied nor failed (yet)
# Counters per pool, allocation cycle.
ACTIONS_SKIPPED = f"{PREFIX}.actions.skipped"  # applied by an earlier run already: nothing called
ACTIONS_DRY_RUN = f"{PREFIX}.actions.dry_run"  # recorded only (forecast-only mode)
PLAN_CAPPED = f"{PREFIX}.plan.capped"  # limits that cut a plan
POOL_LOCKED = f"{PREFIX}.pool.locked"  # a run skipped a pool another run was allocating
POOL_ERRORS = f"{PREFIX}.pool.errors"  # a pool's cycle failed (Compute Engine, connection); others went on
RELEASES_CANCELLED = f"{PREFIX}.releases.cancelled"  # the release protocol kept a VM (busy, no answer)
# Counters per cycle.
RECALIBRATIONS = f"{PREFIX}.feedback.recalibrations"
RESELECTIONS = f"{PREFIX}.feedback.reselections"
ALERTS = f"{PREFIX}.alerts"  # tagged by ``kind``

ALL_METRICS: tuple[str, ...] = (
    FORECAST_MEAN,
    FORECAST_UPPER,
    CAPACITY_PROVISIONED,
    UNMET_DEMAND,
    IDLE_CAPACITY,
    COVERAGE,
    MASE,
    CALIBRATION_FACTOR,
    POOL_INSTANCES,
    POOL_COST_PER_HOUR,
    POOL_QUEUE_WAIT_P95,
    FIT_TIME,
    ACTIONS_APPLIED,
    ACTIONS_FAILED,
    ACTIONS_PLANNED,
    ACTIONS_SKIPPED,
    ACTIONS_DRY_RUN,
    PLAN_CAPPED,
    POOL_LOCKED,
    POOL_ERRORS,
    RELEASES_CANCELLED,
    RECALIBRATIONS,
    RESELECTIONS,
    ALERTS,
)

#: Tag keys, in the order their values become segments of the legacy name.
TAGS: tuple[str, ...] = ("pool", "resource", "kind")

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def segment(value: str) -> str:
    """A pool, resource or kind as one metric-name segment ('.' would split the StatsD hierarchy).

    :param value: the raw name.
    """
    return _UNSAFE.sub("_", str(value)) or "_"


def _tags(tags: Mapping[str, Any]) -> dict[str, str]:
    unknown = set(tags) - set(TAGS)
    if unknown:
        raise TypeError(f"unknown metric tags {sorted(unknown)}; expected {', '.join(TAGS)}")
    return {key: str(tags[key]) for key in TAGS if tags.get(key) is not None}


def legacy_name(metric: str, **tags: Any) -> str:
    """``metric.<pool>.<resource>.<kind>`` (the tags present, each made safe): the name without tags.

    :param metric: one of this module's metric names.
    :param tags: ``pool``, ``resource``, ``kind``.
    """
    return ".".join([metric, *(segment(v) for v in _tags(tags).values())])


def use_backend(backend: Callable[[], tuple[Any, bool]]) -> None:
    """Send metrics through ``backend``: a callable returning a Stats-like object (``gauge``, ``incr``,
    ``timing``; ``None`` drops metrics) and whether legacy names are exported. The Airflow shell
    installs Airflow's Stats (:func:`airflow_predictive.stats.install`); the runtime knows no Airflow.

    :param backend: the callable, asked at every send (so a backend can initialise lazily).
    """
    global _backend
    _backend = backend


def _no_backend() -> tuple[Any, bool]:
    return None, False


#: Where metrics go until the shell installs Airflow's Stats: nowhere.
_backend: Callable[[], tuple[Any, bool]] = _no_backend


def _stats() -> tuple[Any, bool]:
    """The installed backend's Stats object (or None) and whether legacy names are exported."""
    return _backend()


def _send(method: str, metric: str, value: Any, tags: Mapping[str, Any]) -> str:
    """Send under the tagged name (and the legacy name, if exported); return the legacy name."""
    clean = _tags(tags)
    legacy = legacy_name(metric, **clean)
    try:
        stats, with_legacy = _stats()
        if stats is None:
            return legacy
        send = getattr(stats, method)
        send(metric, value, tags=clean or None)
        if with_legacy and clean:
            send(legacy, value)
    except Exception as exc:  # metrics must never fail a cycle
        log.debug("metric %s not sent: %s", metric, exc)
    return legacy


def gauge(metric: str, value: float | None, **tags: Any) -> str | None:
    """Set a gauge; NaN and None are skipped (StatsD cannot carry them). Return the legacy name sent.

    :param metric: the metric name.
    :param value: the value.
    :param tags: ``pool``, ``resource``...
    """
    if value is None or value != value:
        return None
    return _send("gauge", metric, float(value), tags)


def incr(metric: str, count: int = 1, *, zero: bool = False, **tags: Any) -> str | None:
    """Increment a counter by ``count``; return the legacy name sent.

    :param metric: the metric name.
    :param count: how much.
    :param zero: send a zero count too (a StatsD "+0", so a dashboard sees the series exist).
    :param tags: ``pool``, ``kind``...
    """
    if not count and not zero:
        return None
    return _send("incr", metric, int(count), tags)


def timing(metric: str, milliseconds: float, **tags: Any) -> str:
    """Record a duration in milliseconds; return the legacy name sent.

    :param metric: the metric name.
    :param milliseconds: the duration.
    :param tags: ``pool``...
    """
    return _send("timing", metric, timedelta(milliseconds=float(milliseconds)), tags)


def emit_allocation(
    pool: str, counters: Mapping[str, int], gauges: Mapping[str, float] | None = None
) -> list[str]:
    """Emit one allocation cycle's metrics of one pool (zero counts are not sent); return the names sent.

    :param pool: the capacity pool (tag ``pool``).
    :param counters: metric name -> increment.
    :param gauges: metric name -> value.
    """
    sent = [incr(metric, count, pool=pool) for metric, count in counters.items()]
    sent += [gauge(metric, value, pool=pool) for metric, value in (gauges or {}).items()]
    return [name for name in sent if name]


def emit_cycle(
    *,
    forecasts: Iterable[Mapping],
    capacity: Iterable[Mapping],
    scores: Iterable[Mapping],
    action_counts: Mapping[tuple[str, str], int],
    fit_seconds: Iterable[float] = (),
    recalibrations: int | None = 0,
    reselections: int | None = 0,
) -> list[str]:
    """Emit one feedback cycle's metrics; return the (legacy) metric names sent (for logs and tests).

    :param forecasts: dicts ``pool, resource, mean, upper`` (the next bucket of the newest forecast).
    :param capacity: dicts ``pool, resource, value`` (newest provisioned capacity).
    :param scores: dicts ``pool, resource, coverage, mase, unmet_demand, idle_capacity`` and, for
        the ``slots`` resource, ``queue_wait_p95`` (seconds, tagged by pool only).
    :param action_counts: ``{(pool, status): count}`` of the ledger's actions since the last cycle.
    :param fit_seconds: model fit durations of the forecasting task.
    :param recalibrations: series whose interval width changed (None: not this call's to count).
    :param reselections: series flagged for model re-selection (None: not this call's to count).
    """
    sent: list[str | None] = []
    for row in forecasts:
        where = {"pool": row["pool"], "resource": row["resource"]}
        sent.append(gauge(FORECAST_MEAN, row.get("mean"), **where))
        sent.append(gauge(FORECAST_UPPER, row.get("upper"), **where))
    for row in capacity:
        sent.append(gauge(CAPACITY_PROVISIONED, row.get("value"), pool=row["pool"], resource=row["resource"]))
    for row in scores:
        where = {"pool": row["pool"], "resource": row["resource"]}
        sent.append(gauge(COVERAGE, row.get("coverage"), **where))
        sent.append(gauge(MASE, row.get("mase"), **where))
        sent.append(gauge(UNMET_DEMAND, row.get("unmet_demand"), **where))
        sent.append(gauge(IDLE_CAPACITY, row.get("idle_capacity"), **where))
        sent.append(gauge(CALIBRATION_FACTOR, row.get("factor"), **where))
        sent.append(gauge(POOL_QUEUE_WAIT_P95, row.get("queue_wait_p95"), pool=row["pool"]))
    metric_of = {"applied": ACTIONS_APPLIED, "failed": ACTIONS_FAILED, "planned": ACTIONS_PLANNED}
    for (pool, status), count in sorted(action_counts.items()):
        metric = metric_of.get(str(status))
        if metric is not None:
            # Counters are sent even at zero so a dashboard sees the series exist (a StatsD "+0").
            sent.append(incr(metric, count, zero=True, pool=pool))
    for seconds in fit_seconds:
        sent.append(timing(FIT_TIME, seconds * 1000.0))
    if recalibrations is not None:
        sent.append(incr(RECALIBRATIONS, recalibrations, zero=True))
    if reselections is not None:
        sent.append(incr(RESELECTIONS, reselections, zero=True))
    return [name for name in sent if name]

"""Every metric airflow-predictive emits, and the one place that emits them (Airflow's own Stats).

Metrics go through the Task SDK's Stats (``airflow.sdk.observability.stats``): StatsD, Datadog or
OpenTelemetry, whatever ``[metrics]`` configures, with Airflow's ``statsd_prefix`` (``airflow.``).
StatsD has no tags unless the deployment enables them, so pool and resource are name segments:
``airflow.predictive.forecast.mean.etl-workers.cpu``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

PREFIX = "predictive"

# Gauges per pool and resource (``<name>.<pool>.<resource>``).
FORECAST_MEAN = f"{PREFIX}.forecast.mean"  # next bucket's forecast mean
FORECAST_UPPER = f"{PREFIX}.forecast.upper"  # next bucket's provisioning quantile
CAPACITY_PROVISIONED = f"{PREFIX}.capacity.provisioned"
UNMET_DEMAND = f"{PREFIX}.unmet_demand"
IDLE_CAPACITY = f"{PREFIX}.idle_capacity"
COVERAGE = f"{PREFIX}.coverage"  # of the provisioning quantile, over the scored window
MASE = f"{PREFIX}.mase"
CALIBRATION_FACTOR = f"{PREFIX}.calibration.factor"
# Timer (milliseconds) of the forecasting task's model fits.
FIT_TIME = f"{PREFIX}.forecast.fit_time"
# Counters per pool (``<name>.<pool>``).
ACTIONS_APPLIED = f"{PREFIX}.actions.applied"
ACTIONS_FAILED = f"{PREFIX}.actions.failed"
ACTIONS_PLANNED = f"{PREFIX}.actions.planned"
# Counters per cycle.
RECALIBRATIONS = f"{PREFIX}.feedback.recalibrations"
RESELECTIONS = f"{PREFIX}.feedback.reselections"
ALERTS = f"{PREFIX}.alerts"  # ``<name>.<alert kind>``

ALL_METRICS: tuple[str, ...] = (
    FORECAST_MEAN,
    FORECAST_UPPER,
    CAPACITY_PROVISIONED,
    UNMET_DEMAND,
    IDLE_CAPACITY,
    COVERAGE,
    MASE,
    CALIBRATION_FACTOR,
    FIT_TIME,
    ACTIONS_APPLIED,
    ACTIONS_FAILED,
    ACTIONS_PLANNED,
    RECALIBRATIONS,
    RESELECTIONS,
    ALERTS,
)

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def segment(value: str) -> str:
    """A pool, resource or kind as one metric-name segment ('.' would split the StatsD hierarchy).

    :param value: the raw name.
    """
    return _UNSAFE.sub("_", str(value)) or "_"


def name(metric: str, *parts: str) -> str:
    """``metric.part1.part2`` with each part made safe.

    :param metric: one of this module's metric names.
    :param parts: pool, resource or kind.
    """
    return ".".join([metric, *(segment(p) for p in parts)])


def _stats():
    from airflow.sdk._shared.observability.metrics import stats as sdk_stats
    from airflow.sdk.observability import stats

    # A real task process initialises Stats in the task runner; `airflow dags test`, dag.test() and
    # the CLI do not, and would silently drop every metric. Initialise it the way the runner does.
    if getattr(sdk_stats, "_factory", None) is None:
        from airflow.sdk.configuration import conf
        from airflow.sdk.observability.metrics import stats_utils

        stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
        )
    return stats


def gauge(metric: str, value: float, *parts: str) -> None:
    """Set a gauge ``metric.parts`` (NaN values are skipped: StatsD cannot carry them).

    :param metric: the metric name.
    :param value: the value.
    :param parts: pool, resource...
    """
    if value is None or value != value:
        return
    _stats().gauge(name(metric, *parts), float(value))


def incr(metric: str, count: int = 1, *parts: str) -> None:
    """Increment a counter ``metric.parts`` by ``count``.

    :param metric: the metric name.
    :param count: how much.
    :param parts: pool, kind...
    """
    if count:
        _stats().incr(name(metric, *parts), int(count))


def timing(metric: str, milliseconds: float, *parts: str) -> None:
    """Record a duration in milliseconds.

    :param metric: the metric name.
    :param milliseconds: the duration.
    :param parts: pool...
    """
    from datetime import timedelta

    _stats().timing(name(metric, *parts), timedelta(milliseconds=float(milliseconds)))


def emit_cycle(
    *,
    forecasts: Iterable[Mapping],
    capacity: Iterable[Mapping],
    scores: Iterable[Mapping],
    action_counts: Mapping[tuple[str, str], int],
    fit_seconds: Iterable[float] = (),
    recalibrations: int = 0,
    reselections: int = 0,
) -> list[str]:
    """Emit one control-loop cycle's metrics; return the metric names sent (for logs and tests).

    :param forecasts: dicts ``pool, resource, mean, upper`` (the next bucket of the newest forecast).
    :param capacity: dicts ``pool, resource, value`` (newest provisioned capacity).
    :param scores: dicts ``pool, resource, coverage, mase, unmet_demand, idle_capacity``.
    :param action_counts: ``{(pool, status): count}`` of this cycle's actions.
    :param fit_seconds: model fit durations of the forecasting task.
    :param recalibrations: series whose interval width changed.
    :param reselections: series flagged for model re-selection.
    """
    sent: list[str] = []

    def _g(metric: str, value: float | None, *parts: str) -> None:
        if value is not None and value == value:
            gauge(metric, value, *parts)
            sent.append(name(metric, *parts))

    for row in forecasts:
        _g(FORECAST_MEAN, row.get("mean"), row["pool"], row["resource"])
        _g(FORECAST_UPPER, row.get("upper"), row["pool"], row["resource"])
    for row in capacity:
        _g(CAPACITY_PROVISIONED, row.get("value"), row["pool"], row["resource"])
    for row in scores:
        _g(COVERAGE, row.get("coverage"), row["pool"], row["resource"])
        _g(MASE, row.get("mase"), row["pool"], row["resource"])
        _g(UNMET_DEMAND, row.get("unmet_demand"), row["pool"], row["resource"])
        _g(IDLE_CAPACITY, row.get("idle_capacity"), row["pool"], row["resource"])
        _g(CALIBRATION_FACTOR, row.get("factor"), row["pool"], row["resource"])
    metric_of = {"applied": ACTIONS_APPLIED, "failed": ACTIONS_FAILED, "planned": ACTIONS_PLANNED}
    for (pool, status), count in sorted(action_counts.items()):
        metric = metric_of.get(str(status))
        if metric is None:
            continue
        # Counters are sent even at zero so a dashboard sees the series exist (a StatsD "+0").
        _stats().incr(name(metric, pool), int(count))
        sent.append(name(metric, pool))
    for seconds in fit_seconds:
        timing(FIT_TIME, seconds * 1000.0)
        sent.append(FIT_TIME)
    _stats().incr(RECALIBRATIONS, int(recalibrations))
    _stats().incr(RESELECTIONS, int(reselections))
    sent += [RECALIBRATIONS, RESELECTIONS]
    return sent

"""Airflow's Stats as the metrics backend of :mod:`airflow_predictive.runtime.metrics`.

The runtime names and shapes every metric but imports no Airflow; this shell module hands it Airflow's
own Stats (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` configures). The operators and the
``plan`` and ``evaluate`` commands install it before they run a cycle.
"""

from __future__ import annotations

from typing import Any

from airflow_predictive.runtime import metrics


def airflow_stats() -> tuple[Any, bool]:
    """Airflow's Stats (None without Airflow) and whether legacy names are exported."""
    try:
        from airflow.sdk._shared.observability.metrics import stats as sdk_stats
        from airflow.sdk.observability import stats
    except ImportError:  # airflow absent (pure use of the core): metrics are a no-op
        return None, False
    # A real task process initialises Stats in the task runner; `airflow dags test`, dag.test() and
    # the CLI do not, and would silently drop every metric. Initialise it the way the runner does.
    if getattr(sdk_stats, "_factory", None) is None:
        from airflow.sdk.configuration import conf
        from airflow.sdk.observability.metrics import stats_utils

        stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
        )
    return stats, bool(getattr(sdk_stats, "_export_legacy_names", True))


def install() -> None:
    """Send :mod:`airflow_predictive.runtime.metrics` through Airflow's Stats (idempotent)."""
    metrics.use_backend(airflow_stats)

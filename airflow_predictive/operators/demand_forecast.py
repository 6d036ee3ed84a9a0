"""DemandForecastOperator: forecast a chunk of demand series and store forecasts + model state.

With ``[predictive] combination = residual`` (the default) the stored forecast includes the work
Airflow already knows about (upcoming scheduled runs, remaining stages of runs in progress), read from
the provider's upcoming-work endpoint: see :mod:`airflow_predictive.runtime.known_work`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from airflow_predictive import config, stats
from airflow_predictive.airflow_api.client import fetch_upcoming
from airflow_predictive.hooks.airflow_api import AirflowApiHook
from airflow_predictive.links import ForecastPageLink
from airflow_predictive.operators.cycle import cycle_origin

log = logging.getLogger(__name__)

#: How many per-series entries (fallbacks, errors) the XCom summary keeps; the log has them all.
_SUMMARY_LIMIT = 20


def series_chunks(
    pools: Sequence[str] | None = None,
    *,
    chunk_size: int | None = None,
    store_conn_id: str | None = None,
) -> list[list[str]]:
    """The store's series ids (optionally of some pools) split into chunks for ``.expand(series_ids=...)``.

    :param pools: only series of these capacity pools (default: all).
    :param chunk_size: series per chunk (default: ``[predictive] series_per_chunk``).
    :param store_conn_id: profile store connection (default: ``[predictive] store_conn_id``).
    """
    # Imported when the task runs: the DAG file imports this module at every parse.
    from airflow_predictive.hooks.profile_store import configured_store
    from airflow_predictive.runtime.learning import report_learning

    size = chunk_size or config.get_int("series_per_chunk")
    if size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {size}")
    store = configured_store(store_conn_id)
    try:
        ids = store.series_ids(list(pools) if pools else None)
        if pools:  # say what each pool's loop waits for: the first cycles have nothing to forecast
            report_learning(store, pools, now=datetime.now(UTC), interval=config.interval())
    finally:
        store.dispose()
    if not ids:
        log.info("no demand series yet: forecast and allocate skip this cycle")
    return [ids[i : i + size] for i in range(0, len(ids), size)]


class DemandForecastOperator(BaseOperator):
    """Forecast demand series with the production Forecaster; write forecasts and model states to the store.

    Meant to be mapped over a few chunks of series (``.partial(...).expand(series_ids=chunks)``):
    importing pmdarima costs seconds per process, so one task per series would waste them. Series
    lacking a model state get order selection (capped per run), a rotating share is re-estimated,
    every series gets a forecast or a recorded fallback. Returns a compact summary for XCom.

    :param series_ids: the series to forecast (``pool=<pool>/resource=<resource>``).
    :param pools: forecast every series of these pools (used when ``series_ids`` is not given).
    :param now: forecast origin (ISO timestamp, templated); default: the run's ``run_after``.
    :param store_conn_id: profile store connection (default: ``[predictive] store_conn_id``).
    :param interval_minutes: bucket width (default: ``[predictive] interval_minutes``).
    :param horizon_minutes: horizon (default: ``[predictive] horizon_minutes``).
    :param max_selections: order selections allowed in this run (selection is slow; others fall back).
    :param refit_fraction: share of series re-estimated per run (default: interval / 1 hour).
    :param select_workers: worker processes for order selection (recycled to bound memory).
    :param combination: ``residual`` (statistical model on demand minus known scheduled work, plus the
        structural forecast of known work) or ``none``; default ``[predictive] combination``.
    :param api_conn_id: REST API connection the upcoming-work endpoint is read through; default
        ``[predictive] api_conn_id``.
    :param queue_pools: ``{queue: capacity pool}`` for the known work's tasks; default: the queues of
        the pools file (``[predictive] pools_file``), other queues: pool = queue name.
    """

    template_fields: Sequence[str] = ("series_ids", "pools", "now", "combination")
    operator_extra_links = (ForecastPageLink(),)
    ui_color = "#e6efff"

    def __init__(
        self,
        *,
        series_ids: Sequence[str] | None = None,
        pools: Sequence[str] | None = None,
        now: str | None = None,
        store_conn_id: str | None = None,
        interval_minutes: int | None = None,
        horizon_minutes: int | None = None,
        max_selections: int = 50,
        refit_fraction: float | None = None,
        select_workers: int = 1,
        combination: str | None = None,
        api_conn_id: str | None = None,
        queue_pools: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.series_ids = series_ids
        self.pools = pools
        self.now = now
        self.store_conn_id = store_conn_id
        self.interval_minutes = interval_minutes
        self.horizon_minutes = horizon_minutes
        self.max_selections = max_selections
        self.refit_fraction = refit_fraction
        self.select_workers = select_workers
        self.combination = combination
        self.api_conn_id = api_conn_id
        self.queue_pools = queue_pools

    def _origin(self, context: Any) -> datetime:
        return cycle_origin(self.now, context)

    def _combination(self) -> str:
        # Imported when the task runs: the DAG file imports this module at every parse.
        from airflow_predictive.forecasting.combine import COMBINATIONS

        value = (self.combination or config.get("combination")).strip().lower()
        if value not in COMBINATIONS:
            raise config.ConfigError(
                f"[predictive] combination must be one of {', '.join(COMBINATIONS)}, got {value!r}"
            )
        return value

    def _queue_pools(self) -> dict[str, str] | None:
        return self.queue_pools if self.queue_pools is not None else config.configured_queue_pools()

    def execute(self, context: Any) -> dict[str, Any]:
        return self.execute_at(self._origin(context))

    def execute_at(self, now: datetime) -> dict[str, Any]:
        """Forecast as of ``now``: the task's work, callable outside a task (the demo's simulated day).

        :param now: the forecast origin (UTC).
        """
        stats.install()
        # Imported when the task runs: the DAG file imports this module at every parse.
        from airflow_predictive.forecasting.engine import Forecaster
        from airflow_predictive.hooks.profile_store import configured_store
        from airflow_predictive.runtime.known_work import (
            forecast_with_known_work,
        )

        combination = self._combination()

        store = configured_store(self.store_conn_id)
        try:
            ids = (
                list(self.series_ids) if self.series_ids else store.series_ids(list(self.pools or []) or None)
            )
            if not ids:
                raise ValueError(
                    "no series to forecast: give series_ids, or pools that have demand in the profile store"
                )
            forecaster = Forecaster(
                interval=timedelta(minutes=self.interval_minutes or config.get_int("interval_minutes")),
                horizon=timedelta(minutes=self.horizon_minutes or config.get_int("horizon_minutes")),
                quantiles=config.quantiles(),
                select_workers=self.select_workers,
            )
            summary = forecast_with_known_work(
                store,
                ids,
                now=now,
                forecaster=forecaster,
                combination=combination,
                fetch=upcoming_from_connection(self.api_conn_id or config.get("api_conn_id")),
                queue_pools=self._queue_pools() if combination != "none" else None,
                refit_fraction=self.refit_fraction,
                max_selections=self.max_selections,
            )
        finally:
            store.dispose()
        log.info("%s", describe_known_work(summary))
        log.info("%s", format_table(summary.pop("per_series", {})))
        for sid, error in summary["errors"].items():
            log.error("%s: %s", sid, error)
        return compact(summary)


def format_table(rows: dict[str, dict]) -> str:
    """A readable per-series table for the task log.

    :param rows: per-series entries of the forecast_cycle summary.
    """
    header = f"{'series':<48} {'model':<16} {'fallback':<28} {'next 1h mean':>12} {'1h q0.95':>10} {'24h q0.95 max':>14}"
    lines = [header, "-" * len(header)]
    for sid, row in rows.items():
        lines.append(
            f"{sid:<48} {row['model']:<16} {row['fallback'] or '-':<28} {row['next_hour_mean']:>12.3f} "
            f"{row['next_hour_q95']:>10.3f} {row['peak_q95']:>14.3f}"
        )
    return "\n".join(lines)


def describe_known_work(summary: dict[str, Any]) -> str:
    """One log line: which combination the stored forecast used, and why known work is missing if it is.

    :param summary: forecast summary with ``combination`` and ``known_work``.
    """
    known = summary.get("known_work") or {}
    status = known.get("status", "disabled")
    reselect = (
        f"; {len(known['reselect'])} model(s) flagged for re-selection (history basis changed)"
        if known.get("reselect")
        else ""
    )
    if status == "ok":
        return (
            f"combination {summary['combination']}: known work of {known['dags']} DAG(s), "
            f"{known['upcoming_runs']} upcoming and {known['running_runs']} running run(s); "
            f"{len(known['known_peak'])} series with known demand; {known['subtracted_task_runs']} past "
            f"task run(s) of {known['projected_dag_count']} scheduled DAG(s) taken out of the statistical "
            f"model's history ({known['residual_series']} series); endpoint read and known work "
            f"forecast in {known['fetch_and_structural_seconds']:.2f} s{reselect}"
        )
    if status == "unavailable":
        return (
            f"combination none (statistical forecast alone): known future work unavailable: {known['reason']}"
        )
    return f"combination none (statistical forecast alone): {known.get('reason', 'disabled')}{reselect}"


def compact(summary: dict[str, Any]) -> dict[str, Any]:
    """Keep the XCom small: counts, and at most a few ids per category.

    :param summary: forecast_cycle summary.
    """
    out = dict(summary)
    for key in ("selected", "refit"):
        out[key] = len(summary[key])
    for key in ("fallbacks", "errors"):
        items = dict(sorted(summary[key].items())[:_SUMMARY_LIMIT])
        out[key] = items
        out[f"{key}_count"] = len(summary[key])
    return out


def upcoming_from_connection(conn_id: str) -> Callable[[datetime, timedelta], dict[str, Any]]:
    """A fetcher ``(now, horizon) -> upcoming JSON`` over the REST API connection ``conn_id``.

    :param conn_id: Airflow connection (conn type ``predictive_airflow_api``).
    """

    def fetch(now: datetime, horizon: timedelta) -> dict[str, Any]:
        with AirflowApiHook(conn_id).get_client() as client:
            return fetch_upcoming(client, now=now, horizon=horizon)

    return fetch

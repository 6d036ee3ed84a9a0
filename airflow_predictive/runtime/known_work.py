"""Known future work in the control loop: fetch it from the API server, forecast it, combine it.

The forecast task cannot read the metadata database (Airflow 3), so it asks the provider's own
``GET /predictive/api/upcoming`` endpoint (served by the API server, which may read serialized DAGs)
through the REST API connection, with the same token authentication as the profiler. With the
``residual`` combination (:mod:`airflow_predictive.forecasting.combine`):

1. the statistical model sees demand minus the past runs of the DAGs whose future the endpoint
   reports (scheduled runs, built from the store's task runs by the profiler's own demand builder);
2. the structural forecast of those DAGs' upcoming runs and runs in progress (durations and usage
   profiled from the store's task runs, template hints for tasks without history) is added back,
   ad-hoc work merged by a per-bucket maximum, quantiles level by level.

The same :func:`~airflow_predictive.forecasting.engine.forecast_cycle` runs in both cases: it reads
demand from and writes forecasts to a thin view of the store that subtracts and adds known work, so
model selection, refits and state bookkeeping stay the engine's. A series whose history basis changes
(known work starts or stops being taken out of it) has its model re-selected. When the endpoint
cannot be reached or answers something unusable, the cycle forecasts from the statistical model alone
and says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.airflow_api import validate_upcoming
from airflow_predictive.contracts.demand import parse_series_id
from airflow_predictive.contracts.stores import (
    ForecastBasisStore,
    KnownWorkStore,
    ResidualForecastStore,
    StructuralForecastInputs,
)
from airflow_predictive.forecasting.combine import (
    COMBINATIONS,
    combine,
    known_work_demand,
    of_runs,
    residual_demand,
    scheduled_run_keys,
)
from airflow_predictive.forecasting.engine import forecast_cycle, per_series_summary
from airflow_predictive.forecasting.structural import (
    StructuralForecast,
    profiles_from_task_runs,
    structural_forecast,
)

log = logging.getLogger(__name__)

#: Runs that started this long before the history window can still overlap it (as the profiler).
LOOKBACK = timedelta(days=1)
#: Timetable kinds whose runs the endpoint lists: their past scheduled runs are known work.
_PROJECTED_KINDS = ("scheduled", "asset_or_time", "once")
_SUMMARY_LIMIT = 20


# ------------------------------------------------------------------------------------------ known work


def projected_dag_ids(upcoming: Mapping[str, Any]) -> set[str]:
    """DAGs whose scheduled runs the structural forecast projects (their past is known work).

    :param upcoming: the upcoming-work JSON.
    """
    out = set()
    for dag in upcoming.get("dags", []):
        kind = dag.get("schedule_kind")
        if kind in _PROJECTED_KINDS or (kind is None and dag.get("upcoming")):
            out.add(dag["dag_id"])
    return out


def _pools_of(series_ids: Sequence[str]) -> list[str]:
    return sorted({parse_series_id(sid).pool for sid in series_ids})


def _only(frame: pd.DataFrame, series_ids: Collection[str]) -> pd.DataFrame:
    return frame[frame["series_id"].isin(list(series_ids))].reset_index(drop=True) if len(frame) else frame


class KnownWorkView:
    """The store as the statistical engine should see it under the ``residual`` combination.

    ``demand()`` returns demand minus the past runs of projected DAGs; ``write_forecasts()`` adds
    the structural forecast back before storing; every other call goes to the store unchanged.

    :param store: the ProfileStore.
    :param upcoming: the upcoming-work JSON.
    :param structural: the structural forecast of ``upcoming`` for the series being forecast.
    :param now: the forecast origin.
    :param interval: bucket width.
    :param queue_pools: ``{queue: capacity pool}``.
    :param method: combination method of :func:`~airflow_predictive.forecasting.combine.combine`.
    """

    def __init__(
        self,
        store: ResidualForecastStore,
        upcoming: Mapping[str, Any],
        structural: Any,
        *,
        now: datetime,
        interval: timedelta,
        queue_pools: Mapping[str, str] | None = None,
        method: str = "residual",
    ) -> None:
        self._store = store
        self._dags = projected_dag_ids(upcoming)
        self._structural = structural
        self._now = now
        self._interval = interval
        self._queue_pools = queue_pools
        self._method = method
        self.subtracted_task_runs = 0
        self.combined: list[pd.DataFrame] = []
        #: Per series, the known work taken out of its history (zero: its history is total demand).
        self.subtracted: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def known_demand(self, series_ids: Sequence[str], *, start: datetime, end: datetime) -> pd.DataFrame:
        """Past demand of the projected DAGs' scheduled runs on ``series_ids`` in ``[start, end)``."""

        empty = pd.DataFrame({"series_id": pd.Series(dtype=object), "ts": [], "value": []})
        if not self._dags:
            return empty
        runs = self._store.task_runs(start=start - LOOKBACK, end=end, dag_ids=sorted(self._dags))
        if runs.empty:
            return empty
        dag_runs = self._store.dag_runs(start=start - LOOKBACK, end=end)
        runs = runs[of_runs(runs, scheduled_run_keys(dag_runs, self._dags))]
        self.subtracted_task_runs = int(len(runs))
        if runs.empty:  # only manual runs: nothing to subtract, and no need to read usage samples
            return empty
        samples = self._store.usage_samples(start=start - LOOKBACK, end=end)
        known = known_work_demand(
            runs,
            dag_runs,
            start=start,
            end=end,
            interval=self._interval,
            queue_pools=self._queue_pools,
            usage_samples=samples,
            dag_ids=self._dags,
            now=self._now,
        )
        return _only(known, series_ids)

    def demand(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:

        total = self._store.demand(series_ids, start=start, end=end)
        if total.empty or start is None or end is None:
            return total
        known = self.known_demand(sorted(total["series_id"].unique()), start=start, end=end)
        if known.empty:
            return total
        known["ts"] = pd.to_datetime(known["ts"], utc=True).astype(total["ts"].dtype)
        self.subtracted = {str(k): float(v) for k, v in known.groupby("series_id")["value"].sum().items()}
        return residual_demand(total, known)

    def write_forecasts(self, frame: pd.DataFrame) -> int:
        combined = combine_on_grid(frame, self._structural, method=self._method)
        self.combined.append(combined)
        return self._store.write_forecasts(combined)


def combine_on_grid(statistical: pd.DataFrame, structural: Any, *, method: str = "residual") -> pd.DataFrame:
    """Combine, keeping exactly the statistical forecast's series and buckets.

    The structural grid starts at the bucket containing ``now`` and covers every pool with known
    work; rows outside the statistical frame would be stored as forecasts of other tasks' series
    (each mapped chunk owns its series) or of a bucket already under way.

    :param statistical: the engine's forecast of one chunk.
    :param structural: :class:`~airflow_predictive.forecasting.structural.StructuralForecast`.
    :param method: combination method.
    """

    if statistical.empty:
        return statistical
    ids = set(statistical["series_id"])
    mine = StructuralForecast(
        _only(structural.scheduled, ids),
        _only(structural.adhoc, ids),
        structural.intervals,
        structural.sources,
    )
    combined = combine(statistical, mine, method=method)
    keys = statistical[["series_id", "ts"]]
    out = keys.merge(combined, on=["series_id", "ts"], how="left", validate="one_to_one")
    return out[combined.columns.tolist()]


def structural_for(
    store: StructuralForecastInputs,
    upcoming: Mapping[str, Any],
    series_ids: Sequence[str],
    *,
    now: datetime,
    forecaster: Any,
    queue_pools: Mapping[str, str] | None = None,
) -> Any:
    """The structural forecast of ``upcoming`` on the pools of ``series_ids``, profiled from the store.

    :param store: the ProfileStore (task runs for profiles; DAG runs and user summaries for triggers).
    :param upcoming: the upcoming-work JSON.
    :param series_ids: the series being forecast.
    :param now: the forecast origin.
    :param forecaster: the engine (interval, horizon, quantiles, history length).
    :param queue_pools: ``{queue: capacity pool}``.
    """

    history = timedelta(seconds=forecaster.history_buckets * forecaster.interval_s)
    dag_ids = sorted(d["dag_id"] for d in upcoming.get("dags", []))
    runs = store.task_runs(start=now - history, end=now, dag_ids=dag_ids) if dag_ids else None
    dag_runs = store.dag_runs(start=now - history, end=now)
    return structural_forecast(
        upcoming,
        now=now,
        horizon=forecaster.horizon,
        interval=forecaster.interval,
        profiles=profiles_from_task_runs(runs) if runs is not None else {},
        dag_runs=dag_runs,
        users=store.summaries("users"),
        queue_pools=queue_pools,
        quantiles=forecaster.quantiles,
        pools=_pools_of(series_ids),
    )


# ---------------------------------------------------------------------------------------------- cycle


def _basis_key(sid: str) -> str:
    return f"forecast_basis:{sid}"


def flag_changed_bases(store: ForecastBasisStore, bases: Mapping[str, str]) -> list[str]:
    """Record on what history each series' model is fitted; flag series whose basis changed.

    A model selected on total demand is not a model of the residual (and the other way round): when
    a series starts or stops having known work taken out of its history, its model is re-selected
    (the next cycle, within its selection cap), as the feedback loop does for a degraded series.

    :param store: the ProfileStore (watermarks ``forecast_basis:<series>``; none recorded = total).
    :param bases: ``{series_id: "residual" | "total"}`` of this cycle.
    """
    changed = [
        sid for sid, basis in bases.items() if (store.get_watermark(_basis_key(sid)) or "total") != basis
    ]
    for sid in changed:
        store.set_watermark(_basis_key(sid), bases[sid])
    store.mark_reselect(changed)
    return changed


def forecast_with_known_work(
    store: KnownWorkStore,
    series_ids: Sequence[str],
    *,
    now: datetime,
    forecaster: Any,
    combination: str = "residual",
    fetch: Callable[[datetime, timedelta], Mapping[str, Any]] | None = None,
    queue_pools: Mapping[str, str] | None = None,
    refit_fraction: float | None = None,
    max_selections: int = 50,
) -> dict[str, Any]:
    """One forecast cycle for ``series_ids`` with known work combined in (or not); a JSON-able summary.

    The summary is :func:`~airflow_predictive.forecasting.engine.forecast_cycle`'s plus
    ``combination`` (what was used: ``residual`` or ``none``) and ``known_work`` (status ``ok``,
    ``disabled`` or ``unavailable`` with the reason, and what was known). Its ``per_series`` numbers
    are those of the stored (combined) forecast.

    :param store: the ProfileStore.
    :param series_ids: the series to forecast.
    :param now: the forecast origin.
    :param forecaster: the engine.
    :param combination: ``residual`` or ``none``.
    :param fetch: ``(now, horizon) -> upcoming JSON``; any exception means "unavailable".
    :param queue_pools: ``{queue: capacity pool}``.
    :param refit_fraction: as for ``forecast_cycle``.
    :param max_selections: as for ``forecast_cycle``.
    """

    if combination not in COMBINATIONS:
        raise ValueError(f"unknown combination {combination!r}; expected one of {', '.join(COMBINATIONS)}")
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    cycle = {
        "now": now,
        "forecaster": forecaster,
        "refit_fraction": refit_fraction,
        "max_selections": max_selections,
    }
    if combination == "none" or fetch is None:
        summary = forecast_cycle(store, series_ids, **cycle)
        reason = "[predictive] combination = none" if combination == "none" else "no fetcher given"
        reselect = flag_changed_bases(store, dict.fromkeys(series_ids, "total"))
        known = {"status": "disabled", "reason": reason, "reselect": reselect[:_SUMMARY_LIMIT]}
        return {**summary, "combination": "none", "known_work": known}

    started = time.perf_counter()
    try:
        upcoming = validate_upcoming(fetch(now, forecaster.horizon))
        structural = structural_for(
            store, upcoming, series_ids, now=now, forecaster=forecaster, queue_pools=queue_pools
        )
        prepared_in = time.perf_counter() - started
    except Exception as exc:  # known work is an improvement: without it the cycle still forecasts
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "known future work unavailable (%s): forecasting from the statistical model alone", reason
        )
        summary = forecast_cycle(store, series_ids, **cycle)
        return {**summary, "combination": "none", "known_work": {"status": "unavailable", "reason": reason}}
    view = KnownWorkView(
        store,
        upcoming,
        structural,
        now=now,
        interval=forecaster.interval,
        queue_pools=queue_pools,
        method=combination,
    )
    summary = forecast_cycle(view, series_ids, **cycle)
    bases = {sid: "residual" if view.subtracted.get(sid, 0.0) > 0 else "total" for sid in series_ids}
    reselect = flag_changed_bases(store, bases)
    if view.combined:
        summary["per_series"] = per_series_summary(pd.concat(view.combined, ignore_index=True), forecaster)
    summary["combination"] = combination
    summary["known_work"] = {
        "status": "ok",
        **known_work_summary(upcoming, structural, series_ids),
        "subtracted_task_runs": view.subtracted_task_runs,
        "residual_series": sum(basis == "residual" for basis in bases.values()),
        "reselect": reselect[:_SUMMARY_LIMIT],
        "fetch_and_structural_seconds": round(prepared_in, 3),
    }
    return summary


def known_work_summary(upcoming: Mapping[str, Any], structural: Any, series_ids: Sequence[str]) -> dict:
    """What was known: DAGs, runs, skipped DAGs, and the known peak per series (a few, for XCom).

    :param upcoming: the upcoming-work JSON.
    :param structural: its structural forecast.
    :param series_ids: the series being forecast.
    """
    dags = upcoming.get("dags", [])
    peaks: dict[str, float] = {}
    frames = [f for f in (structural.scheduled, structural.adhoc) if f is not None and len(f)]
    if frames:
        rows = _only(pd.concat(frames, ignore_index=True), set(series_ids))
        upper = max(
            (c for c in rows.columns if c.startswith("q")), key=lambda c: float(c[1:]), default="mean"
        )
        by_series = rows.groupby("series_id")[upper].max() if len(rows) else pd.Series(dtype=float)
        peaks = {sid: round(float(v), 4) for sid, v in by_series.items() if v > 0}
    return {
        "dags": len(dags),
        "projected_dag_count": len(projected_dag_ids(upcoming)),
        "projected_dags": sorted(projected_dag_ids(upcoming))[:_SUMMARY_LIMIT],
        "upcoming_runs": sum(len(d.get("upcoming", [])) for d in dags),
        "running_runs": sum(len(d.get("running", [])) for d in dags),
        "skipped_dags": len(upcoming.get("skipped", [])),
        "known_peak": dict(sorted(peaks.items())[:_SUMMARY_LIMIT]),
    }

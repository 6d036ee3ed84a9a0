"""What each consumer needs from the profile store, as small structural types.

The :class:`~airflow_predictive.store.ProfileStore` satisfies every protocol here; a consumer names the
narrowest one that covers what it calls, so a test (or another backend) can hand it anything with
those methods. The protocols come in two tiers:

- one per concern and direction: task history, demand, forecasts, model states, the action ledger,
  provisioned capacity, evaluations, behaviour summaries, watermarks and leases;
- one per consumer that needs several concerns (the allocation cycle, the feedback cycle, the
  profiler, the forecast page, ...), combining the first tier.

This module imports neither the store, SQLAlchemy nor Airflow: the frames are pandas DataFrames in the
long formats of :mod:`airflow_predictive.contracts.demand` and :mod:`airflow_predictive.contracts.forecast`,
timestamps are UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from airflow_predictive.contracts.plan import Plan

# ------------------------------------------------------------------------------ task history


class TaskHistoryReader(Protocol):
    """Task tries, DAG runs and usage samples as the profiler recorded them."""

    def task_runs(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        dag_ids: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> pd.DataFrame: ...

    def dag_runs(self, *, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame: ...

    def usage_samples(
        self, *, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame: ...


class TaskHistoryWriter(Protocol):
    """Ingest task tries, DAG runs and usage samples (idempotent on their natural keys)."""

    def upsert_task_runs(self, records: Iterable[Mapping[str, Any]]) -> int: ...

    def upsert_dag_runs(self, records: Iterable[Mapping[str, Any]]) -> int: ...

    def add_usage_samples(self, records: Iterable[Mapping[str, Any]]) -> int: ...


# ------------------------------------------------------------------------------ demand


class DemandReader(Protocol):
    """Demand series in long format (``series_id, ts, value``; NaN value = gap)."""

    def demand(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame: ...

    def first_observed(
        self, series_ids: Sequence[str], *, start: datetime | None = None, end: datetime | None = None
    ) -> dict[str, datetime]: ...

    def naive_errors(
        self,
        series_ids: Sequence[str],
        *,
        lags: Sequence[int],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, dict[int, tuple[float, int]]]: ...

    def series_ids(self, pools: Sequence[str] | None = None) -> list[str]: ...


class DemandWriter(Protocol):
    def write_demand(self, frame: pd.DataFrame) -> int: ...


# ------------------------------------------------------------------------------ forecasts


class ForecastReader(Protocol):
    """Stored forecasts (``series_id, issued_at, ts, mean, q<level>..., model, fallback``)."""

    def latest_forecasts(
        self, series_ids: Sequence[str] | None = None, *, pools: Sequence[str] | None = None
    ) -> pd.DataFrame: ...

    def forecasts(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        issued_from: datetime | None = None,
        issued_to: datetime | None = None,
        ts_from: datetime | None = None,
        ts_to: datetime | None = None,
        ts_in: Sequence[datetime] | None = None,
        step: timedelta | None = None,
    ) -> pd.DataFrame: ...


class ForecastWriter(Protocol):
    def write_forecasts(self, frame: pd.DataFrame) -> int: ...


class ForecastRetention(Protocol):
    def prune_forecasts(self, before: datetime) -> int: ...


# ------------------------------------------------------------------------------ model states


class ModelStateReader(Protocol):
    """``{series_id: {"model", "state", "fitted_at", "needs_reselect"}}`` per series."""

    def model_states(self, series_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]: ...


class ModelReselection(Protocol):
    """Flag series for model re-selection in the next forecast cycle."""

    def mark_reselect(self, series_ids: Sequence[str], flag: bool = True) -> int: ...


class ModelStateStore(ModelStateReader, ModelReselection, Protocol):
    def save_model_states(self, states: Iterable[Mapping[str, Any]]) -> int: ...


# ------------------------------------------------------------------------------ plans and the ledger


class LedgerReader(Protocol):
    """Recorded plans and their actions."""

    def actions(
        self,
        *,
        pool: str | None = None,
        since: datetime | None = None,
        request_ids: Sequence[str] | None = None,
        plan_id: str | None = None,
    ) -> pd.DataFrame: ...

    def plans(
        self, *, pool: str | None = None, since: datetime | None = None, pools: Sequence[str] | None = None
    ) -> pd.DataFrame: ...


class Ledger(LedgerReader, Protocol):
    """The action ledger: a plan's actions are recorded before they run and updated after."""

    def record_plan(self, plan: Plan) -> None: ...

    def update_action(
        self,
        request_id: str,
        status: str,
        *,
        error: str = "",
        details: Mapping[str, Any] | None = None,
        attempt: int | None = None,
    ) -> None: ...


# ------------------------------------------------------------------------------ provisioned capacity


class CapacityReader(Protocol):
    def capacity(
        self, *, pool: str | None = None, since: datetime | None = None, pools: Sequence[str] | None = None
    ) -> pd.DataFrame: ...


class CapacityRecorder(Protocol):
    def record_capacity(self, records: Iterable[Mapping[str, Any]]) -> int: ...


# ------------------------------------------------------------------------------ evaluations


class EvaluationReader(Protocol):
    def evaluations(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        since: datetime | None = None,
        metrics: Sequence[str] | None = None,
        horizon: int | None = None,
    ) -> pd.DataFrame: ...


class EvaluationWriter(Protocol):
    def write_evaluations(self, frame: pd.DataFrame) -> int: ...


# ------------------------------------------------------------------------------ behaviour summaries


class SummaryReader(Protocol):
    def summaries(self, kind: str) -> dict[str, Any]: ...


class SummaryWriter(Protocol):
    def put_summaries(self, kind: str, payloads: Mapping[str, Any]) -> int: ...


# ------------------------------------------------------------------------------ watermarks and leases


class WatermarkReader(Protocol):
    def get_watermark(self, name: str) -> str | None: ...


class Watermarks(WatermarkReader, Protocol):
    """Named string values: ingest cursors, observed coverage, forecast bases, evaluation progress."""

    def set_watermark(self, name: str, value: str) -> None: ...


class Leases(Protocol):
    """Expiring named locks with one holder at a time."""

    def try_lease(self, name: str, owner: str, ttl_seconds: float) -> bool: ...

    def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool: ...

    def lease_holder(self, name: str) -> tuple[str, str] | None: ...

    def release_lease(self, name: str, owner: str) -> None: ...


# ------------------------------------------------------------------------------ consumers


class HistoryIngestStore(TaskHistoryWriter, Watermarks, Protocol):
    """The task-history collector: writes task and DAG runs, keeps its cursor and coverage."""


class ProfileRefreshStore(TaskHistoryReader, DemandWriter, SummaryWriter, WatermarkReader, Protocol):
    """Rebuilding demand and behaviour summaries from the task history (and the observed coverage)."""


class ProfilerStore(HistoryIngestStore, ProfileRefreshStore, Protocol):
    """One profiler poke: ingest, then refresh the profile of a complete window."""


class ForecastCycleStore(DemandReader, ForecastWriter, ModelStateStore, Protocol):
    """One forecast cycle: demand history and model states in, forecasts and model states out."""


class ResidualForecastStore(ForecastCycleStore, TaskHistoryReader, Protocol):
    """A forecast cycle that also takes the known work's past runs out of the demand history."""


class StructuralForecastInputs(TaskHistoryReader, SummaryReader, Protocol):
    """What the structural forecast of known work is profiled from: task runs, DAG runs, users."""


class ForecastBasisStore(Watermarks, ModelReselection, Protocol):
    """The history basis each series' model was fitted on, and re-selection when it changes."""


class KnownWorkStore(ResidualForecastStore, StructuralForecastInputs, ForecastBasisStore, Protocol):
    """A forecast cycle with known future work combined in."""


class AllocationStore(
    ForecastReader, DemandReader, SummaryReader, Ledger, Leases, CapacityRecorder, Protocol
):
    """One allocation cycle: forecasts, recent demand and the pool's service-level choice in; plans, the
    ledger and capacity out."""


class FeedbackMetricsSource(ForecastReader, CapacityReader, Protocol):
    """The newest forecasts and provisioned capacity the feedback cycle reports as metrics."""


class FeedbackStore(
    Watermarks,
    TaskHistoryReader,
    DemandReader,
    ForecastReader,
    ForecastRetention,
    CapacityReader,
    LedgerReader,
    ModelStateStore,
    EvaluationWriter,
    SummaryReader,
    SummaryWriter,
    Protocol,
):
    """One feedback cycle: score forecasts and capacity, store the scores, recalibrate, choose each
    pool's sizing for its service level, prune."""


class ServiceLevelChoiceStore(
    DemandReader, ForecastReader, TaskHistoryReader, CapacityReader, SummaryReader, SummaryWriter, Protocol
):
    """The service-level choice: recent demand, issued forecasts, task tries and the fleet held in; each
    pool's choice out."""


class ForecastPageStore(
    DemandReader, ForecastReader, CapacityReader, LedgerReader, EvaluationReader, SummaryReader, Protocol
):
    """What the forecast page and the report show: demand, forecasts, capacity, ledger, scores, summaries."""

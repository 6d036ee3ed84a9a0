"""ProfileStore: the provider's own database (SQLAlchemy Core), one object over its parts.

A SQLite file under ``AIRFLOW_HOME`` by default, in WAL mode so a scheduler, a triggerer and several
task processes can write at once; any SQLAlchemy URL from an Airflow connection in production
(PostgreSQL is the target). Every write is one transaction and an upsert on the table's natural key,
so re-ingesting the same task run, sample or forecast stores it once. Bulk reads return pandas
DataFrames in the long format of the architecture doc, with timestamps as UTC-aware ``datetime64``.

The SQL lives by concern in the sibling modules (``history``, ``demand``, ``forecasts``, ``models``,
``ledger``, ``capacity``, ``evaluations``, ``summaries``, ``coordination``, ``migrations``), all on
one :class:`~airflow_predictive.store.database.Database`. ``ProfileStore`` builds them and offers their
methods under its own name, so it satisfies every protocol of :mod:`airflow_predictive.contracts.stores`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import sqlalchemy as sa

from airflow_predictive.store.capacity import CapacityHistory
from airflow_predictive.store.coordination import Leases, Watermarks
from airflow_predictive.store.database import Database, StoreError
from airflow_predictive.store.demand import DemandSeries
from airflow_predictive.store.evaluations import Evaluations
from airflow_predictive.store.forecasts import Forecasts
from airflow_predictive.store.history import TaskHistory
from airflow_predictive.store.ledger import ActionLedger
from airflow_predictive.store.migrations import Migrations
from airflow_predictive.store.models import ModelStates
from airflow_predictive.store.summaries import Summaries

__all__ = ["ProfileStore", "StoreError"]

P = ParamSpec("P")
R = TypeVar("R")


class _Delegate(Generic[P, R]):
    """A ProfileStore method that is one of its parts' methods: ``store.demand(...)`` runs
    ``store._demand.demand(...)``, with the part method's name, signature and docstring."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.part = part
        self.name = method.__name__
        functools.update_wrapper(self, method)

    def __call__(self, store: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return getattr(getattr(store, self.part), self.name)(*args, **kwargs)

    @overload
    def __get__(self, store: None, owner: type | None = None) -> _Delegate[P, R]: ...
    @overload
    def __get__(self, store: object, owner: type | None = None) -> Callable[P, R]: ...
    def __get__(self, store: object | None, owner: type | None = None) -> Any:
        if store is None:
            return self
        return getattr(getattr(store, self.part), self.name)  # the part's bound method


class ProfileStore:
    """Read and write profiles, demand series, forecasts, model state, the action ledger and evaluations.

    :param url: a SQLAlchemy URL, e.g. ``sqlite:////path/profile.db`` or
        ``postgresql+psycopg2://user@127.0.0.1/predictive``.
    :param upgrade: create the schema or upgrade it in place to :data:`schema.SCHEMA_VERSION`.
    """

    def __init__(self, url: str | sa.URL, *, upgrade: bool = True) -> None:
        self._db = Database(url)
        self.url = self._db.url
        self.is_sqlite = self._db.is_sqlite
        self.engine = self._db.engine
        self._migrations = Migrations(self._db)
        self._history = TaskHistory(self._db)
        self._demand = DemandSeries(self._db)
        self._forecasts = Forecasts(self._db)
        self._models = ModelStates(self._db)
        self._ledger = ActionLedger(self._db)
        self._capacity = CapacityHistory(self._db)
        self._evaluations = Evaluations(self._db)
        self._summaries = Summaries(self._db)
        self._watermarks = Watermarks(self._db)
        self._leases = Leases(self._db)
        if upgrade:
            self.upgrade()

    @classmethod
    def sqlite(cls, path: str | Path, **kwargs: Any) -> ProfileStore:
        return cls(f"sqlite:///{Path(path).expanduser().absolute()}", **kwargs)

    @property
    def display_url(self) -> str:
        """The URL with its password hidden: the only form that may reach a log or the UI."""
        return self._db.display_url

    def __repr__(self) -> str:
        return f"ProfileStore({self.display_url})"

    def dispose(self) -> None:
        self._db.dispose()

    # schema and upgrade
    schema_version = _Delegate("_migrations", Migrations.schema_version)
    upgrade = _Delegate("_migrations", Migrations.upgrade)
    # task history
    upsert_task_runs = _Delegate("_history", TaskHistory.upsert_task_runs)
    upsert_dag_runs = _Delegate("_history", TaskHistory.upsert_dag_runs)
    add_usage_samples = _Delegate("_history", TaskHistory.add_usage_samples)
    task_runs = _Delegate("_history", TaskHistory.task_runs)
    dag_runs = _Delegate("_history", TaskHistory.dag_runs)
    usage_samples = _Delegate("_history", TaskHistory.usage_samples)
    # demand series
    write_demand = _Delegate("_demand", DemandSeries.write_demand)
    demand = _Delegate("_demand", DemandSeries.demand)
    first_observed = _Delegate("_demand", DemandSeries.first_observed)
    naive_errors = _Delegate("_demand", DemandSeries.naive_errors)
    series_ids = _Delegate("_demand", DemandSeries.series_ids)
    # forecasts
    write_forecasts = _Delegate("_forecasts", Forecasts.write_forecasts)
    latest_forecasts = _Delegate("_forecasts", Forecasts.latest_forecasts)
    forecasts = _Delegate("_forecasts", Forecasts.forecasts)
    prune_forecasts = _Delegate("_forecasts", Forecasts.prune_forecasts)
    # model states
    save_model_states = _Delegate("_models", ModelStates.save_model_states)
    model_states = _Delegate("_models", ModelStates.model_states)
    mark_reselect = _Delegate("_models", ModelStates.mark_reselect)
    # plans and the action ledger
    record_plan = _Delegate("_ledger", ActionLedger.record_plan)
    update_action = _Delegate("_ledger", ActionLedger.update_action)
    actions = _Delegate("_ledger", ActionLedger.actions)
    plans = _Delegate("_ledger", ActionLedger.plans)
    # provisioned capacity
    record_capacity = _Delegate("_capacity", CapacityHistory.record_capacity)
    capacity = _Delegate("_capacity", CapacityHistory.capacity)
    # evaluations and behaviour summaries
    write_evaluations = _Delegate("_evaluations", Evaluations.write_evaluations)
    evaluations = _Delegate("_evaluations", Evaluations.evaluations)
    put_summaries = _Delegate("_summaries", Summaries.put_summaries)
    summaries = _Delegate("_summaries", Summaries.summaries)
    # watermarks and leases
    set_watermark = _Delegate("_watermarks", Watermarks.set_watermark)
    get_watermark = _Delegate("_watermarks", Watermarks.get_watermark)
    try_lease = _Delegate("_leases", Leases.try_lease)
    lease_holder = _Delegate("_leases", Leases.lease_holder)
    renew_lease = _Delegate("_leases", Leases.renew_lease)
    release_lease = _Delegate("_leases", Leases.release_lease)

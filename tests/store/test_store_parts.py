"""The ProfileStore is its parts: each public method is the method of the part that owns its concern."""

from __future__ import annotations

import inspect

import pytest

from airflow_predictive.store import ProfileStore
from airflow_predictive.store.capacity import CapacityHistory
from airflow_predictive.store.coordination import Leases, Watermarks
from airflow_predictive.store.database import Part
from airflow_predictive.store.demand import DemandSeries
from airflow_predictive.store.evaluations import Evaluations
from airflow_predictive.store.forecasts import Forecasts
from airflow_predictive.store.history import TaskHistory
from airflow_predictive.store.ledger import ActionLedger
from airflow_predictive.store.migrations import Migrations
from airflow_predictive.store.models import ModelStates
from airflow_predictive.store.summaries import Summaries

PARTS: list[type[Part]] = [
    Migrations,
    TaskHistory,
    DemandSeries,
    Forecasts,
    ModelStates,
    ActionLedger,
    CapacityHistory,
    Evaluations,
    Summaries,
    Watermarks,
    Leases,
]


def _public(cls: type) -> list[str]:
    return [name for name, value in vars(cls).items() if not name.startswith("_") and callable(value)]


@pytest.fixture
def store(tmp_path):
    store = ProfileStore.sqlite(tmp_path / "profile.db")
    yield store
    store.dispose()


def test_every_part_method_is_a_store_method_with_the_same_signature_and_doc(store):
    for part in PARTS:
        for name in _public(part):
            bound = getattr(store, name)
            assert isinstance(bound.__self__, part), name
            assert inspect.signature(bound) == inspect.signature(getattr(part(store._db), name)), name
            assert bound.__doc__ == getattr(part, name).__doc__, name


def test_no_method_belongs_to_two_parts():
    names = [name for part in PARTS for name in _public(part)]
    assert len(names) == len(set(names))


def test_the_store_offers_the_same_public_methods_as_before_the_split():
    expected = {
        "actions", "add_usage_samples", "capacity", "dag_runs", "demand", "display_url", "dispose",
        "evaluations", "first_observed", "forecasts", "get_watermark", "latest_forecasts", "lease_holder", "mark_reselect", "naive_errors",
        "model_states", "plans", "prune_forecasts", "put_summaries", "record_capacity", "record_plan",
        "release_lease", "save_model_states", "schema_version", "series_ids", "set_watermark", "sqlite",
        "renew_lease", "summaries", "task_runs", "try_lease", "update_action", "upgrade", "upsert_dag_runs",
        "upsert_task_runs", "usage_samples", "write_demand", "write_evaluations", "write_forecasts",
    }  # fmt: skip
    assert {name for name in dir(ProfileStore) if not name.startswith("_")} == expected

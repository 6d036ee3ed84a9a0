"""The ProfileStore satisfies every store protocol of the contracts, member by member."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Protocol

import pytest

from airflow_predictive.contracts import stores
from airflow_predictive.store import ProfileStore

PROTOCOLS = [
    value
    for value in vars(stores).values()
    if isinstance(value, type) and issubclass(value, Protocol) and value.__module__ == stores.__name__
]


def _members(protocol: type) -> dict[str, object]:
    found: dict[str, object] = {}
    for cls in reversed(protocol.__mro__):
        if cls.__module__ == stores.__name__:
            found.update({k: v for k, v in vars(cls).items() if not k.startswith("_") and callable(v)})
    return found


def _shape(signature: inspect.Signature) -> list[tuple]:
    return [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = ProfileStore.sqlite(tmp_path_factory.mktemp("contracts") / "profile.db")
    yield store
    store.dispose()


def test_there_are_protocols_for_every_concern_and_consumer():
    names = {p.__name__ for p in PROTOCOLS}
    assert {"DemandReader", "ForecastWriter", "ModelStateStore", "Ledger", "Leases", "FeedbackStore"} <= names


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_the_store_has_each_member_with_the_protocols_signature(store, protocol):
    members = _members(protocol)
    assert members, f"{protocol.__name__} declares nothing"
    for name, method in members.items():
        expected = inspect.signature(method)
        actual = inspect.signature(getattr(store, name))
        assert _shape(actual) == _shape(expected)[1:], f"{protocol.__name__}.{name}"
        assert actual.return_annotation == expected.return_annotation, f"{protocol.__name__}.{name}"


def test_the_contracts_import_neither_the_store_nor_sqlalchemy_nor_airflow():
    code = (
        "import sys, airflow_predictive.contracts.stores\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'airflow')"
        " or m.startswith('airflow_predictive.store')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Test-wide setup: a temporary AIRFLOW_HOME set BEFORE anything imports airflow, one thread for BLAS.

Every test session gets its own AIRFLOW_HOME (SQLite metadata DB, no examples) and DAGs folder
``tests/dags``; the Airflow metadata DB is migrated once, lazily, by the ``airflow_db`` fixture.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Before airflow is imported anywhere: a private home, no example DAGs, quiet, one BLAS thread.
_HOME = Path(tempfile.mkdtemp(prefix="predictive-airflow-home-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)  # the session's processes are stopped by then
REPO = Path(__file__).resolve().parents[1]
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "tests" / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import pytest  # noqa: E402

from tests.airflow_harness import airflow_cli  # noqa: E402


def pytest_collection_modifyitems(config, items) -> None:
    """Files that start real Airflow run first (a stable sort keeps the rest in order).

    ``make test`` runs two files at a time (``-n 2 --dist loadfile``): started first, the few long
    real-Airflow files run side by side while the short ones fill the gaps, instead of two of them
    ending the run alone.
    """
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """Migrate the session's SQLite metadata DB once (``airflow db migrate``)."""
    airflow_cli("db", "migrate", env={"AIRFLOW_HOME": str(airflow_home)})
    return airflow_home


@pytest.fixture
def store(tmp_path: Path):
    """A fresh SQLite ProfileStore in a temp folder."""
    from airflow_predictive.store import ProfileStore

    profile_store = ProfileStore.sqlite(tmp_path / "profile.db")
    yield profile_store
    profile_store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path: Path):
    """A fresh ProfileStore on SQLite, then on a throw-away PostgreSQL database."""
    from airflow_predictive.store import ProfileStore
    from tests.services import postgres_database

    if request.param == "sqlite":
        profile_store = ProfileStore.sqlite(tmp_path / "profile.db")
        yield profile_store
        profile_store.dispose()
    else:
        with postgres_database() as url:
            profile_store = ProfileStore(url)
            yield profile_store
            profile_store.dispose()

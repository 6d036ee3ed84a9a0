"""Who may see what under ``/predictive``: Airflow's permission model, in one real API server.

One api-server runs the simple auth manager in multi-team mode: two DAG bundles, one per team
(``team_a`` holds ``access_team_a``, ``team_b`` holds ``access_team_b``), and three users:

- ``admin`` (role admin): reads every DAG;
- ``alice`` (role viewer, team ``team_a``): reads ``access_team_a`` only;
- ``nobody`` (no role): logged in, permitted nothing.

The simple auth manager's roles alone cannot restrict reading: viewer, user, op and admin may all read
every DAG and pool. Teams are what it can restrict per DAG, and a user without a role is what it can
deny outright; that is why the test uses them. The test asserts each route's status for each user
(401 without a login), that ``/predictive/api/upcoming`` lists only the DAGs the user may read, that the
DAG tab hides pool-wide data from a user who may not read every DAG, and that the app serves no
``/docs``, ``/redoc`` or ``/openapi.json``.
"""

from __future__ import annotations

import html
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from airflow_predictive.store import ProfileStore
from tests.airflow_harness import AirflowDeployment, airflow_cli
from tests.ui.seed import POOL, RUN_ID, seed

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
BUNDLES = HERE / "access_dags"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
USERS = ("admin", "alice", "nobody")


def _bundle(team: str) -> dict:
    return {
        "name": f"{team}_dags",
        "classpath": LOCAL_BUNDLE,
        "kwargs": {"path": str(BUNDLES / team), "refresh_interval": 0},
        "team_name": team,
    }


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("access-airflow")
    store_path = home / "predictive" / "profile.db"
    store = ProfileStore.sqlite(store_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    expected = seed(store, now.replace(minute=now.minute - now.minute % 5))
    store.dispose()
    env = {
        "AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path),
        "AIRFLOW__CORE__MULTI_TEAM": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:viewer:team_a,nobody:",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([_bundle("team_a"), _bundle("team_b")]),
        "AIRFLOW__CORE__TEAM_NAME_CACHE_TTL": "0",
    }
    dep = AirflowDeployment(home, BUNDLES, components=("api-server",), env=env)
    passwords = {
        "admin": dep.password,
        "alice": secrets.token_urlsafe(12),
        "nobody": secrets.token_urlsafe(12),
    }
    (home / "passwords.json").write_text(json.dumps(passwords))
    # The teams must exist before any process syncs the bundles that name them.
    airflow_cli("db", "migrate", env=dep.env)
    for team in ("team_a", "team_b"):
        airflow_cli("teams", "create", team, env=dep.env)
    with dep:
        # Serialize both bundles' DAGs without a dag-processor: the DAG pages read the metadata DB.
        airflow_cli("dags", "reserialize", env=dep.env)
        tokens = {}
        for user in USERS:
            response = httpx.post(
                f"{dep.base_url}/auth/token",
                json={"username": user, "password": passwords[user]},
                timeout=30,
            )
            assert response.status_code in (200, 201), (user, response.text)
            tokens[user] = response.json()["access_token"]
        yield dep, tokens, expected


def _get(dep: AirflowDeployment, tokens: dict[str, str], user: str | None, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tokens[user]}"} if user else {}
    return httpx.get(dep.base_url + path, headers=headers, timeout=60)


RUN = f"/predictive/runs/access_team_a/{RUN_ID}"
# path: the status for (admin, alice, nobody); without a login every path answers 401.
EXPECTED = {
    # Pool-wide: read on every DAG (alice reads only team_a's DAG, nobody reads none).
    "/predictive/": (200, 403, 403),
    f"/predictive/pools/{POOL}": (200, 403, 403),
    "/predictive/pools/no-such-pool": (404, 403, 403),
    "/predictive/api/overview": (200, 403, 403),
    "/predictive/api/ledger": (200, 403, 403),
    RUN: (200, 403, 403),
    # Per DAG: read on that DAG.
    "/predictive/dags/access_team_a": (200, 200, 403),
    "/predictive/dags/access_team_b": (200, 403, 403),
    "/predictive/api/upcoming/access_team_a": (200, 200, 403),
    "/predictive/api/upcoming/access_team_b": (200, 403, 403),
    "/predictive/upcoming/access_team_b": (200, 403, 403),
    "/predictive/runs/access_team_b/manual__1": (200, 403, 403),
    # Filtered to the DAGs the user may read.
    "/predictive/api/upcoming": (200, 200, 200),
    # Counts only: how many DAGs exist and how many the caller may read (the allocator's check).
    "/predictive/api/visibility": (200, 200, 200),
    # Served from the installed plotly package to any logged-in user (no data in it).
    "/predictive/static/plotly.min.js": (200, 200, 200),
}


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_route_status_per_user(deployment, path: str) -> None:
    dep, tokens, _ = deployment
    got = tuple(_get(dep, tokens, user, path).status_code for user in USERS)
    assert got == EXPECTED[path], (path, dict(zip(USERS, got, strict=True)))
    assert _get(dep, tokens, None, path).status_code == 401, path


@pytest.mark.parametrize("path", ["/predictive/docs", "/predictive/redoc", "/predictive/openapi.json"])
def test_no_api_docs_served(deployment, path: str) -> None:
    dep, tokens, _ = deployment
    for user in (None, "admin"):
        response = _get(dep, tokens, user, path)
        assert response.status_code in (401, 404), (path, user, response.status_code)
        assert "swagger" not in response.text.lower() and "openapi" not in response.text.lower()


def test_upcoming_lists_only_readable_dags(deployment) -> None:
    dep, tokens, _ = deployment
    listed = {}
    for user in USERS:
        body = _get(dep, tokens, user, "/predictive/api/upcoming").json()
        listed[user] = sorted(d["dag_id"] for d in body["dags"]) + sorted(
            s["dag_id"] for s in body["skipped"]
        )
    assert listed == {
        "admin": ["access_team_a", "access_team_b"],
        "alice": ["access_team_a"],
        "nobody": [],
    }


def test_dag_tab_shows_pool_wide_data_only_to_who_reads_every_dag(deployment) -> None:
    dep, tokens, expected = deployment
    admin = _get(dep, tokens, "admin", "/predictive/dags/access_team_a").text
    alice = _get(dep, tokens, "alice", "/predictive/dags/access_team_a").text
    assert 'id="upcoming-runs"' in admin and 'id="upcoming-runs"' in alice
    reasons = [html.escape(reason) for reason in expected["reasons"]]  # as the page writes them
    assert all(reason in admin for reason in reasons)
    assert not any(reason in alice for reason in reasons)


def test_the_allocator_reads_running_tasks_only_as_a_user_who_sees_every_dag(deployment) -> None:
    # A user who sees some DAGs would see only their tasks: a VM running another DAG's task would look
    # idle. So the running-task reader refuses, and the cycle then releases nothing.
    from airflow_predictive.airflow_api.client import AirflowApiClient, fetch_running_tasks
    from airflow_predictive.contracts.airflow_api import AirflowApiError

    dep, tokens, _ = deployment
    seen = {u: _get(dep, tokens, u, "/predictive/api/visibility").json() for u in USERS}
    assert seen["admin"] == {"reads_every_dag": True, "dags_total": 2, "dags_readable": 2}
    assert seen["alice"] == {"reads_every_dag": False, "dags_total": 2, "dags_readable": 1}
    assert seen["nobody"]["reads_every_dag"] is False and seen["nobody"]["dags_readable"] == 0
    with AirflowApiClient(dep.base_url, token=tokens["admin"]) as client:
        assert fetch_running_tasks(client) == []  # nothing runs here, and admin may say so
    with (
        AirflowApiClient(dep.base_url, token=tokens["alice"]) as client,
        pytest.raises(AirflowApiError, match="sees 1 of 2 DAGs"),
    ):
        fetch_running_tasks(client)

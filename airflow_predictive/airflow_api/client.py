"""A small client of Airflow's public REST API v2 (httpx): token auth, pagination, server clock.

The profiler never reads the metadata database: in Airflow 3 task code cannot, and the REST API is the
supported, permission-checked way to see history from a task, a trigger or an outside process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from airflow_predictive.contracts.airflow_api import (
    UPCOMING_PATH,
    VISIBILITY_PATH,
    AirflowApiError,
    validate_upcoming,
)
from airflow_predictive.planning.busy import HELD_STATES, RunningTask

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100


class AirflowApiClient:
    """A small client of the Airflow REST API v2: token auth, retries of an expired token, pagination.

    :param base_url: the API server, e.g. ``http://127.0.0.1:8080`` (no trailing ``/api/v2``).
    :param username: user for ``POST /auth/token`` (with ``password``).
    :param password: password for ``POST /auth/token``; never logged.
    :param token: a pre-issued access token (used instead of username/password); never logged.
    :param timeout: seconds per HTTP request.
    :param page_size: items per page when paginating.
    :param transport: an httpx transport (tests serve malformed pages through ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise AirflowApiError(
                f"Airflow API base URL must start with http:// or https://, got {base_url!r}"
            )
        if not token and not (username and password):
            raise AirflowApiError(
                "Airflow API credentials missing: give a token, or a username and a password"
            )
        self.base_url = base_url.rstrip("/").removesuffix("/api/v2")
        self._username = username
        self._password = password
        self._token = token
        self._token_is_preissued = bool(token)
        self.page_size = page_size
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        #: Server time from the last response's ``Date`` header: the collector's clock (no skew).
        self.server_time: datetime | None = None

    def __repr__(self) -> str:
        return f"AirflowApiClient({self.base_url})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowApiClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- auth and requests

    def _fetch_token(self) -> str:
        try:
            response = self._http.post(
                "/auth/token", json={"username": self._username, "password": self._password}
            )
        except httpx.HTTPError as exc:
            raise AirflowApiError(f"Airflow API at {self.base_url} is unreachable: {exc}") from None
        if response.status_code in (401, 403):
            raise AirflowApiError(
                f"Airflow API at {self.base_url} refused the credentials of user {self._username!r}"
            )
        if response.status_code >= 400:
            raise AirflowApiError(f"POST {self.base_url}/auth/token answered HTTP {response.status_code}")
        token = (response.json() or {}).get("access_token")
        if not token:
            raise AirflowApiError(f"POST {self.base_url}/auth/token returned no access_token")
        return token

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET ``/api/v2/<path>`` and return its JSON object.

        :param path: path under ``/api/v2`` (leading slash optional).
        :param params: query parameters.
        """
        url = "/api/v2/" + path.lstrip("/")
        for attempt in range(2):
            if self._token is None:
                self._token = self._fetch_token()
            try:
                response = self._http.get(
                    url, params=dict(params or {}), headers={"Authorization": f"Bearer {self._token}"}
                )
            except httpx.HTTPError as exc:
                raise AirflowApiError(f"Airflow API at {self.base_url} is unreachable: {exc}") from None
            self._note_server_time(response)
            if response.status_code == 401 and attempt == 0 and not self._token_is_preissued:
                self._token = None  # expired: fetch a new one once
                continue
            if response.status_code >= 400:
                raise AirflowApiError(
                    f"GET {url} answered HTTP {response.status_code}: {response.text[:300]}"
                )
            try:
                body = response.json()
            except ValueError:
                raise AirflowApiError(f"GET {url} did not return JSON") from None
            if not isinstance(body, dict):
                raise AirflowApiError(f"GET {url} returned {type(body).__name__}, expected an object")
            return body
        raise AirflowApiError(f"GET {url}: token refused twice")

    def _note_server_time(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if not date:
            return
        with contextlib.suppress(TypeError, ValueError):
            self.server_time = parsedate_to_datetime(date).astimezone(UTC)

    def paginate(
        self, path: str, items_key: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of a collection endpoint, page by page.

        Uses keyset (cursor) pagination when the endpoint offers it (``next_cursor`` in the answer),
        else ``limit``/``offset``.

        :param path: path under ``/api/v2``.
        :param items_key: the list field of the answer, e.g. ``task_instances``.
        :param params: filters and ordering.
        """
        query = dict(params or {})
        query["limit"] = self.page_size
        offset = 0
        cursor: str | None = None
        use_cursor = items_key == "task_instances"  # the endpoint that documents cursor pagination
        while True:
            page_query = dict(query)
            if use_cursor:
                page_query["cursor"] = cursor or ""
            else:
                page_query["offset"] = offset
            page = self.get(path, page_query)
            items = page.get(items_key)
            if not isinstance(items, list):
                raise AirflowApiError(f"GET /api/v2/{path.lstrip('/')} answer has no list {items_key!r}")
            yield from (item for item in items if isinstance(item, dict))
            if use_cursor and "next_cursor" in page:
                cursor = page.get("next_cursor")
                if not cursor:
                    return
                continue
            use_cursor = False  # the server ignored the cursor: fall back to offsets
            if len(items) < self.page_size:
                return
            offset += len(items)

    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no token needed)."""
        try:
            response = self._http.get("/api/v2/monitor/health")
            self._note_server_time(response)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AirflowApiError(f"Airflow API at {self.base_url} is unreachable: {exc}") from None


def fetch_upcoming(client: AirflowApiClient, *, now: datetime, horizon: timedelta) -> dict[str, Any]:
    """``GET /predictive/api/upcoming`` through an authenticated REST API client.

    :param client: an authenticated client (its session and token are reused).
    :param now: list runs as of this time.
    :param horizon: how far ahead.
    :raises AirflowApiError: unreachable, refused, HTTP error, or not the upcoming-work JSON.
    """
    params = {
        "horizon_minutes": max(1, int(horizon.total_seconds() // 60)),
        "now": now.astimezone(UTC).isoformat(),
    }
    return validate_upcoming(plugin_get(client, UPCOMING_PATH, params))


def fetch_running_tasks(client: AirflowApiClient) -> list[RunningTask]:
    """Running and queued task instances of every DAG, refused unless the user can see every DAG.

    A user who may read only some DAGs would see only their tasks, and a VM running another DAG's task
    would look idle; so the plugin's visibility answer must say this user reads every current DAG.

    :param client: an authenticated client.
    :raises AirflowApiError: unreachable, refused, partial visibility, or unusable answers.
    """
    seen = plugin_get(client, VISIBILITY_PATH, {})
    if not seen.get("reads_every_dag"):
        raise AirflowApiError(
            f"the API user sees {seen.get('dags_readable', '?')} of {seen.get('dags_total', '?')} DAGs: give it "
            "read access on every DAG (FAB: 'can read on DAGs'), or its view of running tasks is partial"
        )
    params = {"state": list(HELD_STATES)}
    rows = client.paginate("/dags/~/dagRuns/~/taskInstances", "task_instances", params)
    return [
        RunningTask(
            dag_id=str(r.get("dag_id") or ""),
            task_id=str(r.get("task_id") or ""),
            run_id=str(r.get("dag_run_id") or ""),
            map_index=int(r.get("map_index") if r.get("map_index") is not None else -1),
            hostname=str(r.get("hostname") or ""),
            queue=str(r.get("queue") or ""),
            state=str(r.get("state") or ""),
        )
        for r in rows
    ]


def plugin_get(client: AirflowApiClient, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """GET one of the provider plugin's JSON endpoints through an authenticated REST API client.

    The plugin app is mounted beside ``/api/v2``, not under it, so the request goes through the
    client's HTTP session and token rather than :meth:`AirflowApiClient.get` (which prefixes
    ``/api/v2``); an expired token is renewed once, as there.

    :param client: an authenticated client (its session and token are reused).
    :param path: the endpoint, e.g. ``/predictive/api/upcoming``.
    :param params: query parameters.
    :raises AirflowApiError: unreachable, refused, HTTP error, or not JSON.
    """
    for attempt in range(2):
        if client._token is None:
            client._token = client._fetch_token()
        try:
            response = client._http.get(
                path, params=params, headers={"Authorization": f"Bearer {client._token}"}
            )
        except httpx.HTTPError as exc:
            raise AirflowApiError(f"{path} at {client.base_url} is unreachable: {exc}") from None
        if response.status_code == 401 and attempt == 0 and not client._token_is_preissued:
            client._token = None
            continue
        if response.status_code == 404:
            raise AirflowApiError(
                f"GET {path} answered HTTP 404: is the airflow-predictive plugin installed on "
                f"the API server at {client.base_url}?"
            )
        if response.status_code >= 400:
            raise AirflowApiError(f"GET {path} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError:
            raise AirflowApiError(f"GET {path} did not return JSON") from None
    raise AirflowApiError(f"GET {path}: token refused twice")

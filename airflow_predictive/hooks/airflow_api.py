"""AirflowApiHook: read task and DAG-run history from Airflow's public REST API v2.

The profiler never reads the metadata database: in Airflow 3 task code cannot, and the REST API is the
supported, permission-checked way to see history from a task, a trigger or an outside process.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from airflow_predictive.airflow_api.client import DEFAULT_PAGE_SIZE, AirflowApiClient, AirflowApiError

__all__ = ["AirflowApiClient", "AirflowApiError", "AirflowApiHook", "client_from_connection"]


class AirflowApiHook(BaseHook):
    """Connect to an Airflow REST API v2 named by an Airflow connection (conn type ``predictive_airflow_api``).

    Host is the base URL (``http://127.0.0.1:8080``, or host + port + schema ``https``). Either login and
    password (exchanged for a token at ``POST /auth/token``), or extra ``{"token": "..."}`` for a
    pre-issued token. Secrets are never logged.

    :param predictive_airflow_api_conn_id: the Airflow connection id.
    :param page_size: items per page when paginating.
    """

    conn_name_attr = "predictive_airflow_api_conn_id"
    default_conn_name = "predictive_airflow_api_default"
    conn_type = "predictive_airflow_api"
    hook_name = "Predictive Airflow REST API"

    def __init__(
        self,
        predictive_airflow_api_conn_id: str = default_conn_name,
        page_size: int = DEFAULT_PAGE_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.predictive_airflow_api_conn_id = predictive_airflow_api_conn_id
        self.page_size = page_size

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema"],
            "relabeling": {"host": "Base URL", "login": "Username"},
            "placeholders": {"host": "http://127.0.0.1:8080", "extra": '{"token": "<pre-issued token>"}'},
        }

    def get_client(self) -> AirflowApiClient:
        """Build an :class:`AirflowApiClient` from the connection."""
        try:
            conn = self.get_connection(self.predictive_airflow_api_conn_id)
        except Exception as exc:
            raise AirflowApiError(
                f"Airflow API connection {self.predictive_airflow_api_conn_id!r} is not defined: create it "
                f"with conn type predictive_airflow_api ({exc.__class__.__name__})"
            ) from None
        return client_from_connection(conn, page_size=self.page_size)

    def test_connection(self) -> tuple[bool, str]:
        try:
            with self.get_client() as client:
                client.get("/version")
        except Exception as exc:
            return False, str(exc)
        return True, "Airflow REST API reachable and credentials accepted"


def client_from_connection(conn: Any, *, page_size: int = DEFAULT_PAGE_SIZE) -> AirflowApiClient:
    """Build a client from an Airflow ``Connection`` (host/port/schema/login/password/extra)."""
    extra = conn.extra_dejson or {}
    host = (conn.host or "").rstrip("/")
    if not host:
        raise AirflowApiError(f"connection {conn.conn_id!r} has no host: set it to the API server URL")
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
        host = f"{scheme}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return AirflowApiClient(
        host,
        username=conn.login or None,
        password=conn.password or None,
        token=extra.get("token") or None,
        timeout=float(extra.get("timeout", 30)),
        page_size=page_size,
    )

"""What the provider expects of the Airflow REST API: its error, a client's shape, the upcoming-work JSON.

The profiler's collector and the forecast cycle use these; the adapter
(:mod:`airflow_predictive.airflow_api.client`) implements them over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

#: The provider plugin's upcoming-work endpoint, mounted beside ``/api/v2`` on the API server.
UPCOMING_PATH = "/predictive/api/upcoming"

#: The plugin's answer to "does this user see every DAG?" (``reads_every_dag``, ``dags_total``,
#: ``dags_readable``): the allocator releases no VM on a partial view of the running tasks.
VISIBILITY_PATH = "/predictive/api/visibility"


class AirflowApiError(RuntimeError):
    """The REST API is unreachable, refused our credentials, or answered something unusable."""


class ApiClient(Protocol):
    """The calls the collector makes: one GET, a paginated GET, and the server's clock."""

    server_time: datetime | None

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def paginate(
        self, path: str, items_key: str, params: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]: ...


def validate_upcoming(body: Any) -> dict[str, Any]:
    """Check the shape the structural forecast relies on; raise a message naming what is wrong.

    :param body: the decoded JSON answer.
    """
    if not isinstance(body, dict) or not isinstance(body.get("dags"), list):
        raise AirflowApiError(f"GET {UPCOMING_PATH} answer has no list 'dags'")
    for dag in body["dags"]:
        if not isinstance(dag, dict) or not isinstance(dag.get("dag_id"), str):
            raise AirflowApiError(f"GET {UPCOMING_PATH}: a DAG entry has no dag_id: {str(dag)[:200]}")
        for key in ("tasks", "upcoming", "running"):
            if not isinstance(dag.get(key, []), list):
                raise AirflowApiError(
                    f"GET {UPCOMING_PATH}: DAG {dag['dag_id']!r} field {key!r} is not a list"
                )
    return body

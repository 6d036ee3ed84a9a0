"""``ForecastPageLink``: the operator extra link from a forecast/allocate/evaluate task to its page."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator

URL_PREFIX = "/predictive"


def run_page_path(dag_id: str, run_id: str, task_id: str | None = None) -> str:
    """Path of the forecast page of one DAG run (and task) under the API server.

    :param dag_id: the DAG id.
    :param run_id: the DAG run id (quoted: run ids contain ``:`` and ``+``).
    :param task_id: the task whose view to select, if any.
    """
    path = f"{URL_PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
    return f"{path}?{urlencode({'task_id': task_id})}" if task_id else path


def _base_url() -> str:
    # [api] base_url is where users reach the UI (it may carry a sub-path behind a proxy); without it a
    # root-relative link still works for a UI served at "/".
    try:
        from airflow.configuration import conf

        return (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:
        return ""


class ForecastPageLink(BaseOperatorLink):
    """Link a task instance to the ``/predictive`` page of its DAG run (forecast, plan, ledger, accuracy)."""

    name = "Forecast page"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the URL of this run's forecast page.

        :param operator: the task the link belongs to.
        :param ti_key: the task instance key (dag_id, task_id, run_id).
        """
        return _base_url() + run_page_path(ti_key.dag_id, ti_key.run_id, ti_key.task_id)

"""The Airflow plugin: forecast pages on the API server, UI entries, the worker listener, extra links.

Airflow loads this class from the ``airflow.plugins`` entry point (and from ``plugins/predictive.py``).
The FastAPI app (:mod:`airflow_predictive.plugins.app`) is mounted at ``/predictive`` on the API server;
every route requires an authenticated Airflow user and the permission Airflow's auth manager grants
(read on the DAG for a DAG's data, read on every DAG for pool-wide data; see that module).
``external_views`` add a navigation entry and a tab on each DAG page, both embedding those pages.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_predictive.links import ForecastPageLink

# The worker listener that samples task resource usage (profiling room).
from airflow_predictive.plugins import listener as usage_listener
from airflow_predictive.plugins.app import URL_PREFIX, create_app

app = create_app()

# Destinations valid in Airflow 3.3: nav, dag, dag_run, task, task_instance, base. An invalid one
# silently drops the whole plugin from the UI, so tests/ui checks GET /api/v2/plugins lists both.
EXTERNAL_VIEWS = [
    {
        "name": "Predictive capacity",
        "href": f"{URL_PREFIX}/",
        "destination": "nav",
        "url_route": "predictive",
        "category": "browse",
    },
    {
        "name": "Capacity forecast",
        "href": f"{URL_PREFIX}/dags/{{DAG_ID}}",
        "destination": "dag",
        "url_route": "predictive-dag",
    },
]


class PredictivePlugin(AirflowPlugin):
    """Forecast pages (FastAPI app at ``/predictive``), their UI entries, the usage listener, extra links."""

    name = "predictive"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Predictive capacity"}]
    external_views = EXTERNAL_VIEWS
    listeners = [usage_listener]
    operator_extra_links = [ForecastPageLink()]

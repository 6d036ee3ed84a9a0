"""The FastAPI app the plugin mounts at ``/predictive`` on the Airflow API server.

Pages: ``/`` (every pool), ``/pools/{pool}``, ``/dags/{dag_id}`` (the DAG tab), ``/runs/{dag_id}/{run_id}``
(where operator extra links point). JSON: ``/api/overview``, ``/api/pools/{pool}``, ``/api/ledger``.
``/static/plotly.min.js`` serves plotly.js from the installed ``plotly`` package, so the page works
with no internet access. Every route depends on ``requires_authenticated()``: without a logged-in
Airflow user (Bearer token or the UI's ``_token`` cookie) the answer is 401.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from airflow_predictive import config
from airflow_predictive.feedback import pages
from airflow_predictive.hooks.profile_store import configured_store
from airflow_predictive.links import URL_PREFIX

# "Upcoming DAG runs + task resource hints" (known work): it needs the metadata DB, so it lives here.
from airflow_predictive.plugins import upcoming
from airflow_predictive.plugins.upcoming import router as upcoming_router

__all__ = ["URL_PREFIX", "create_app"]

_store_lock = threading.Lock()
_stores: dict[str, Any] = {}


def get_store() -> Any:
    """The profile store named by ``[predictive]`` config, opened once per API-server process."""
    key = config.get("store_conn_id") or str(config.get_path("store_path"))
    with _store_lock:
        if key not in _stores:
            _stores[key] = configured_store()
        return _stores[key]


@lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """plotly.js exactly as the installed ``plotly`` package ships it (never a copy in this repo)."""
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def _auth() -> Any:
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return Depends(requires_authenticated())


def _root(request: Request) -> str:
    # The mount path as the browser sees it ("/predictive", or "/sub/predictive" behind a proxy).
    return request.scope.get("root_path", "").rstrip("/") or URL_PREFIX


def _now(request: Request) -> datetime:
    raw = request.query_params.get("now")
    if not raw:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise HTTPException(400, f"query parameter now={raw!r} is not an ISO 8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _collect(store: Any, **kwargs: Any) -> dict[str, Any]:
    """The page data, with the configured mode shown for a pool that has no plan yet."""
    return pages.collect(store, default_mode=config.get("default_mode"), **kwargs)


def create_app() -> FastAPI:
    """Build the app; routes open the store lazily so importing the plugin stays cheap."""
    app = FastAPI(
        title="Predictive capacity",
        description="Forecasts, provisioned capacity, the action ledger and accuracy of airflow-predictive.",
        dependencies=[_auth()],
    )

    @app.get("/", response_class=HTMLResponse)
    def overview_page(request: Request) -> HTMLResponse:
        data = _collect(get_store(), now=_now(request))
        return HTMLResponse(pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js"))

    @app.get("/pools/{pool}", response_class=HTMLResponse)
    def pool_page(pool: str, request: Request) -> HTMLResponse:
        data = _collect(get_store(), pools=[pool], now=_now(request))
        if not data["pools"]:
            raise HTTPException(404, f"no forecast, demand or capacity stored for pool {pool!r}")
        return HTMLResponse(pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js"))

    @app.get("/dags/{dag_id}", response_class=HTMLResponse)
    def dag_page(dag_id: str, request: Request) -> HTMLResponse:
        from airflow.utils.session import create_session

        now = _now(request)
        try:
            with create_session() as session:
                work = upcoming.collect(
                    session,
                    now=now,
                    horizon=timedelta(minutes=config.get_int("horizon_minutes")),
                    dag_id=dag_id,
                )
        except HTTPException as exc:
            work = {"error": exc.detail, "dags": []}
        store = get_store()
        # The capacity planned for this DAG: the pools its tasks run in (all pools if none has data yet).
        dag_pools = sorted(
            {
                t.get("capacity_pool")
                for d in work.get("dags", [])
                for t in d.get("tasks", [])
                if t.get("capacity_pool")
            }
        )
        data = _collect(store, pools=dag_pools or None, dag_id=dag_id, now=now)
        if not data["pools"]:
            data = _collect(store, dag_id=dag_id, now=now)
        return HTMLResponse(
            pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js", upcoming=work)
        )

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_page(dag_id: str, run_id: str, request: Request, task_id: str | None = None) -> HTMLResponse:
        data = _collect(get_store(), dag_id=dag_id, run_id=run_id, task_id=task_id, now=_now(request))
        return HTMLResponse(pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js"))

    @app.get("/api/overview")
    def overview_json(request: Request, pool: str | None = None) -> JSONResponse:
        return JSONResponse(_collect(get_store(), pools=[pool] if pool else None, now=_now(request)))

    @app.get("/api/ledger")
    def ledger_json(pool: str | None = None, limit: int = 200) -> JSONResponse:
        return JSONResponse({"actions": pages.ledger(get_store(), pool=pool, limit=limit)})

    @app.get("/static/plotly.min.js")
    def plotly_static() -> Response:
        return Response(
            plotly_js(),
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.include_router(upcoming_router)

    return app

"""The FastAPI app the plugin mounts at ``/predictive`` on the Airflow API server.

Pages: ``/`` (every pool), ``/pools/{pool}``, ``/dags/{dag_id}`` (the DAG tab), ``/runs/{dag_id}/{run_id}``
(where operator extra links point). JSON: ``/api/overview``, ``/api/ledger``, ``/api/upcoming``,
``/api/visibility`` (how many DAGs exist and how many the caller may read: counts, no names).
``/static/plotly.min.js`` serves plotly.js from the installed ``plotly`` package, so the page works
with no internet access. The app serves no ``/docs``, ``/redoc`` or ``/openapi.json`` (Swagger UI would
load from a CDN, and the schema would be served without a login).

Access follows Airflow's own permission model; the auth manager decides, as for Airflow's own UI:

- every route needs a logged-in Airflow user (Bearer token or the UI's ``_token`` cookie), else 401;
- per-DAG routes (``/dags/{dag_id}``, ``/runs/{dag_id}/...``, ``/api/upcoming/{dag_id}``) need read
  access on that DAG (``requires_access_dag("GET")``), else 403;
- ``/api/upcoming`` lists only the DAGs the user may read (see :mod:`.upcoming`);
- pool-wide data (``/``, ``/pools/{pool}``, ``/api/overview``, ``/api/ledger``, and the run page, which
  shows the whole ledger) needs :func:`reads_every_dag`, else 403. The DAG tab shows a pool's charts
  and ledger only to such a user; others see the DAG's own upcoming runs and tasks.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from airflow_predictive import config
from airflow_predictive.feedback import pages, run_view
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


def _dag_read() -> Any:
    """Read access on the DAG named by the path's ``dag_id``, as the auth manager decides (else 403)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET"))


def dag_visibility(user: Any) -> dict[str, Any]:
    """How many current DAGs exist and how many ``user`` may read; whether that is every one of them.

    :param user: the logged-in user (``get_user``).
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        current = set(session.scalars(select(DagModel.dag_id).where(DagModel.is_stale.is_(False))))
        readable = current & upcoming.readable_dag_ids(user, session)
    whole = get_auth_manager().is_authorized_dag(method="GET", user=user)
    return {
        "reads_every_dag": bool(whole and readable == current),
        "dags_total": len(current),
        "dags_readable": len(readable),
    }


def reads_every_dag(user: Any) -> bool:
    """Whether ``user`` may see pool-wide data: read access on the DAG resource as a whole.

    Forecasts, provisioned capacity, learned behaviour and the action ledger aggregate the work of every
    DAG whose tasks run in a pool, and ledger rows name the runs that made them. So pool-wide data needs
    what a user needs to see every DAG in Airflow: the auth manager grants ``GET`` on DAGs without naming
    one (the FAB auth manager: "can read on DAGs"; the simple auth manager: any role), and every current
    DAG is among the DAGs it lets the user read (``get_authorized_dag_ids``: per-DAG permissions, or
    teams in multi-team mode). Airflow's pool permission is not used: capacity pools are queues of
    workers, not Airflow pools, and reading Airflow pools shows no DAG's work.

    :param user: the logged-in user (``get_user``).
    """
    return bool(dag_visibility(user)["reads_every_dag"])


def _pool_wide() -> Any:
    def require_pool_wide_read(user: GetUserDep) -> None:
        if not reads_every_dag(user):
            raise HTTPException(403, "Forbidden: pool-wide data needs read access on every DAG")

    return Depends(require_pool_wide_read)


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


def configured_pools() -> list[Any] | None:
    """The pools of ``[predictive] pools_file`` in file order; None without one (nothing is folded).

    A pools file that does not load is the allocator's error to report; the page still renders,
    with every pool unfolded.
    """
    path = config.get_path("pools_file")
    if not path.is_file():
        return None
    try:
        return list(config.load_configured_pools(path).values())
    except Exception:
        return None


def _collect(store: Any, **kwargs: Any) -> dict[str, Any]:
    """The page data: the configured mode for a pool with no plan yet, configured pools first."""
    return pages.collect(
        store,
        default_mode=config.get("default_mode"),
        configured=configured_pools(),
        interval=config.interval(),
        **kwargs,
    )


def run_window(dag_id: str, run_id: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """When a DAG run started and ended (now while it runs), from Airflow's metadata database; else
    from the time in its run id (a run the store knows from another deployment, or a test's seed);
    else unknown (None, None): the page then shows only plans whose id names the run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
        if run is not None and (run.start_date or run.run_after):
            start = run.start_date or run.run_after
            return start, run.end_date or now
    return run_view.window_from_run_id(run_id) or (None, None)


def create_app() -> FastAPI:
    """Build the app; routes open the store lazily so importing the plugin stays cheap."""
    app = FastAPI(
        title="Predictive capacity",
        description="Forecasts, provisioned capacity, the action ledger and accuracy of airflow-predictive.",
        dependencies=[_auth()],
        # No Swagger UI (loaded from a CDN), ReDoc or schema: nothing unauthenticated, nothing external.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )

    @app.get("/", response_class=HTMLResponse, dependencies=[_pool_wide()])
    def overview_page(request: Request) -> HTMLResponse:
        data = _collect(get_store(), now=_now(request))
        return HTMLResponse(pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js"))

    @app.get("/pools/{pool}", response_class=HTMLResponse, dependencies=[_pool_wide()])
    def pool_page(pool: str, request: Request) -> HTMLResponse:
        data = _collect(get_store(), pools=[pool], now=_now(request))
        if not data["pools"]:
            raise HTTPException(404, f"no forecast, demand or capacity stored for pool {pool!r}")
        return HTMLResponse(pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js"))

    @app.get("/dags/{dag_id}", response_class=HTMLResponse, dependencies=[_dag_read()])
    def dag_page(dag_id: str, request: Request, user: GetUserDep) -> HTMLResponse:
        from airflow.utils.session import create_session

        now = _now(request)
        try:
            with create_session() as session:
                work = upcoming.collect(
                    session,
                    now=now,
                    horizon=timedelta(minutes=config.get_int("horizon_minutes")),
                    dag_id=dag_id,
                    pools=upcoming.readable_pools(user, session),
                )
        except HTTPException as exc:
            work = {"error": exc.detail, "dags": []}
        if not reads_every_dag(user):
            # The DAG's own work only: the pools' charts and ledger carry every other DAG's work too.
            data = {
                "generated_at": now.isoformat(),
                "history_hours": 24,
                "dag_id": dag_id,
                "pools": [],
                "ledger": [],
                "restricted": "The pools' forecasts, capacity and action ledger need read access on every "
                "DAG: they carry the work of all DAGs that run in a pool.",
            }
            return HTMLResponse(
                pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js", upcoming=work)
            )
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
        configured = configured_pools()
        if configured is not None:
            # A pool the pools file does not name (the control loop's own "default" queue) plans nothing.
            dag_pools = [p for p in dag_pools if p in {c.name for c in configured}]
        data = _collect(store, pools=dag_pools or None, dag_id=dag_id, now=now)
        if not data["pools"]:
            data = _collect(store, dag_id=dag_id, now=now)
        return HTMLResponse(
            pages.render_page(data, plotly_src=f"{_root(request)}/static/plotly.min.js", upcoming=work)
        )

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=[_dag_read(), _pool_wide()])
    def run_page(dag_id: str, run_id: str, request: Request, task_id: str | None = None) -> HTMLResponse:
        # What this run did (forecasts, plans, actions), not the pools' pages (issue #20, item 10).
        start, end = run_window(dag_id, run_id, _now(request))
        run = run_view.collect_run(
            get_store(), dag_id=dag_id, run_id=run_id, start=start, end=end, task_id=task_id
        )
        return HTMLResponse(pages.render_run_page(run, plotly_src=f"{_root(request)}/static/plotly.min.js"))

    @app.get("/api/overview", dependencies=[_pool_wide()])
    def overview_json(request: Request, pool: str | None = None) -> JSONResponse:
        return JSONResponse(_collect(get_store(), pools=[pool] if pool else None, now=_now(request)))

    @app.get("/api/ledger", dependencies=[_pool_wide()])
    def ledger_json(pool: str | None = None, limit: int = 200) -> JSONResponse:
        return JSONResponse({"actions": pages.ledger(get_store(), pool=pool, limit=limit)})

    @app.get("/api/visibility", dependencies=[_auth()])
    def visibility_json(user: GetUserDep) -> JSONResponse:
        # the allocator's check that the running tasks it reads are every DAG's (counts only, no names)
        return JSONResponse(dag_visibility(user))

    @app.get("/static/plotly.min.js")
    def plotly_static() -> Response:
        return Response(
            plotly_js(),
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.include_router(upcoming_router)

    return app

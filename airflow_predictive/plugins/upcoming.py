"""Future work as the API server sees it: upcoming DAG runs from timetables, running runs, task hints.

``router`` is included by the provider's plugin app (mounted at ``/predictive``), so the endpoints are
``GET /predictive/api/upcoming`` (every unpaused DAG) and ``GET /predictive/api/upcoming/{dag_id}``.
It runs in the API server, which may read serialized DAGs from the metadata DB: tasks and DAGs cannot,
so the structural forecast gets this JSON over HTTP.

Access follows Airflow's own permission model, as its REST API does: every route requires a logged-in
user (401 without one); ``/api/upcoming/{dag_id}`` requires read access on that DAG (403 otherwise,
``requires_access_dag("GET")``); ``/api/upcoming`` lists only the DAGs the auth manager lets the user
read (``get_authorized_dag_ids``), and of the ``limits.pools`` only the pools it may read. The
profiler's technical user therefore sees every DAG it is allowed to read, and nothing else.

The pure part (:func:`describe_dag`, :func:`upcoming_runs`, :func:`task_hints`) takes a deserialized
DAG and plain values, so tests and the backtest build the same JSON from a DagBag without a server.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep

# The logged-in user (401 without one). The plugin's module loads this anyway: its routes need it.
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, Depends, HTTPException, Query

from airflow_predictive.templates.annotate import EXECUTOR_CONFIG_KEY

MB_PER_GIB = 1024
DEFAULT_HORIZON_MINUTES = 1440
MAX_RUNS_PER_DAG = 500


def _auth() -> Any:
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return Depends(requires_authenticated())


def _dag_read() -> Any:
    """Read access on the DAG named by the path's ``dag_id``, as the auth manager decides (else 403)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET"))


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


# ------------------------------------------------------------------------------------------ task hints


def _partial(task: Any, name: str, default: Any = None) -> Any:
    """Read an operator argument from a plain or a mapped (``partial_kwargs``) operator."""
    partial = getattr(task, "partial_kwargs", None)
    if isinstance(partial, Mapping) and name in partial:
        return partial[name]
    return getattr(task, name, default)


def _qty(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Mapping):  # serialized Resources: {"_name", "_units_str", "_qty"}
        return value.get("_qty", value.get("qty"))
    return getattr(value, "qty", value)


def _resources(task: Any) -> dict[str, float] | None:
    resources = _partial(task, "resources")
    if resources is None:
        return None
    get = resources.get if isinstance(resources, Mapping) else lambda key: getattr(resources, key, None)
    return {
        "cpus": float(_qty(get("cpus")) or 0),
        "ram_mb": float(_qty(get("ram")) or 0),
        "disk_mb": float(_qty(get("disk")) or 0),
        "gpus": float(_qty(get("gpus")) or 0),
    }


def task_hints(task: Any) -> dict[str, Any]:
    """Pool, queue and resource hints of one task, from its template stage or its ``resources``.

    ``source`` says where the numbers come from: ``template`` (bound stage), ``resources`` (the
    task's own Airflow resources) or ``default`` (neither: Airflow's 1 CPU / 512 MB default).

    :param task: an operator of a deserialized DAG (plain or mapped).
    """
    executor_config = _partial(task, "executor_config") or {}
    binding = executor_config.get(EXECUTOR_CONFIG_KEY) if isinstance(executor_config, Mapping) else None
    resources = _resources(task)
    queue = _partial(task, "queue") or "default"
    hints: dict[str, Any] = {
        "task_id": task.task_id,
        "upstream": sorted(task.upstream_task_ids),
        "mapped": hasattr(task, "partial_kwargs"),
        "pool": _partial(task, "pool") or "default_pool",
        "pool_slots": int(_partial(task, "pool_slots") or 1),
        "queue": queue,
        "resources": resources,
        "template": None,
        "stage": None,
    }
    if isinstance(binding, Mapping):
        hints.update(
            source="template",
            template=binding.get("template"),
            stage=binding.get("stage"),
            capacity_pool=binding.get("capacity_pool") or queue,
            cpu=float(binding.get("cpu", 1)),
            memory_gib=float(binding.get("memory_gib", 0.5)),
            storage_gib=float(binding.get("storage_gib", 0)),
            network_mbps=float(binding.get("network_mbps", 0)),
            duration_s=float(binding["duration_s"]) if binding.get("duration_s") else None,
            parallelism=int(binding.get("parallelism", 1)),
            interruptible=bool(binding.get("interruptible", False)),
            service=bool(binding.get("service", False)),
        )
        return hints
    source = "resources" if resources is not None else "default"
    resources = resources or {"cpus": 1.0, "ram_mb": 512.0, "disk_mb": 512.0, "gpus": 0.0}
    hints.update(
        source=source,
        capacity_pool=queue,
        cpu=resources["cpus"],
        memory_gib=resources["ram_mb"] / MB_PER_GIB,
        storage_gib=resources["disk_mb"] / MB_PER_GIB,
        network_mbps=0.0,
        duration_s=None,
        parallelism=1,
        interruptible=False,
        service=False,
    )
    return hints


# ------------------------------------------------------------------------------------- upcoming runs


def schedule_kind(timetable: Any) -> str:
    """How a DAG's runs are created: scheduled, asset_triggered, asset_or_time, manual, once, continuous.

    :param timetable: the DAG's core timetable.
    """
    name = type(timetable).__name__
    if name == "AssetOrTimeSchedule":
        return "asset_or_time"
    if "Asset" in name:
        return "asset_triggered"
    if name == "NullTimetable" or not getattr(timetable, "can_be_scheduled", True):
        return "manual"
    if name == "OnceTimetable":
        return "once"
    if name == "ContinuousTimetable":
        return "continuous"
    return "scheduled"


def upcoming_runs(
    dag: Any,
    *,
    now: datetime,
    horizon: timedelta,
    first: Any = None,
    max_runs: int = MAX_RUNS_PER_DAG,
) -> list[dict[str, Any]]:
    """Runs the timetable will create from ``first`` (or from now) until ``now + horizon``.

    Exceptions from the timetable propagate: the caller reports the DAG as skipped with the reason.

    :param dag: a deserialized (core) DAG.
    :param now: the current time (aware).
    :param horizon: how far ahead to list runs.
    :param first: the next run the scheduler will create (``DagRunInfo``, from the DAG model) if known.
    :param max_runs: stop after this many runs (a minutely DAG over a day is 1,440 runs).
    """
    import pendulum
    from airflow.timetables.base import TimeRestriction

    timetable = dag.timetable
    bounds = dag._time_restriction
    # catchup=True with an explicit earliest bound: "every slot from here on". catchup=False would make
    # the timetable read the wall clock itself, so a forecast "as of" another time would be wrong.
    restriction = TimeRestriction(bounds.earliest, bounds.latest, catchup=True)
    now = pendulum.instance(now)  # timetables do pendulum arithmetic on the bounds
    end = now + horizon
    info = first
    if info is None:
        # Not scheduled yet (new DAG or "as of" query): the first slot at or after now.
        earliest = max(filter(None, [bounds.earliest, now]))
        info = timetable.next_dagrun_info_v2(
            last_dagrun_info=None, restriction=TimeRestriction(earliest, bounds.latest, catchup=True)
        )
    runs: list[dict[str, Any]] = []
    while info is not None and info.run_after <= end and len(runs) < max_runs:
        interval = info.data_interval
        runs.append(
            {
                "run_after": _iso(info.run_after),
                # Due but not created yet (the scheduler is behind or down): runs as soon as it can.
                "overdue": info.run_after < now,
                "data_interval_start": _iso(interval.start) if interval else None,
                "data_interval_end": _iso(interval.end) if interval else None,
            }
        )
        following = timetable.next_dagrun_info_v2(last_dagrun_info=info, restriction=restriction)
        if following is not None and following.run_after <= info.run_after:
            raise ValueError(
                f"timetable {timetable.summary!r} did not move forward after {_iso(info.run_after)}"
            )
        info = following
    return runs


def describe_dag(
    dag: Any,
    *,
    now: datetime,
    horizon: timedelta,
    first: Any = None,
    running: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Everything the structural forecast needs about one DAG: limits, upcoming runs, running runs, tasks.

    :param dag: a deserialized (core) DAG.
    :param now: the current time (aware).
    :param horizon: how far ahead to list runs.
    :param first: the next run the scheduler will create, if known.
    :param running: the DAG's queued/running runs (see :func:`running_runs`).
    """
    timetable = dag.timetable
    kind = schedule_kind(timetable)
    runs = (
        upcoming_runs(dag, now=now, horizon=horizon, first=first)
        if kind in ("scheduled", "asset_or_time", "once")
        else []
    )
    return {
        "dag_id": dag.dag_id,
        "schedule_kind": kind,
        "asset_triggered": kind in ("asset_triggered", "asset_or_time"),
        "timetable": timetable.summary,
        "timetable_type": timetable.type_name,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "upcoming": runs,
        "running": list(running),
        "tasks": [task_hints(task) for task in dag.tasks],
    }


# ------------------------------------------------------------------------------------ metadata DB reads


def running_runs(session: Any, dag_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Queued/running DAG runs of ``dag_ids`` with, per task, its state and timing.

    :param session: a metadata DB session (API server).
    :param dag_ids: DAGs to read.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    if not dag_ids:
        return {}
    runs = session.scalars(
        select(DagRun).where(DagRun.dag_id.in_(dag_ids), DagRun.state.in_(["queued", "running"]))
    ).all()
    out: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        tis = session.execute(
            select(
                TaskInstance.task_id,
                TaskInstance.state,
                TaskInstance.start_date,
                TaskInstance.end_date,
            ).where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
        ).all()
        tasks: dict[str, dict[str, Any]] = {}
        for task_id, state, start, end in tis:
            entry = tasks.setdefault(task_id, {"states": [], "start_date": None, "end_date": None})
            entry["states"].append(str(state) if state else "none")
            if start and (entry["start_date"] is None or _iso(start) < entry["start_date"]):
                entry["start_date"] = _iso(start)
            if end and (entry["end_date"] is None or _iso(end) > entry["end_date"]):
                entry["end_date"] = _iso(end)
        out.setdefault(run.dag_id, []).append(
            {
                "run_id": run.run_id,
                "run_type": str(run.run_type),
                "state": str(run.state),
                "start_date": _iso(run.start_date),
                "tasks": {task_id: _task_state(entry) for task_id, entry in tasks.items()},
            }
        )
    return out


_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}


def _task_state(entry: dict[str, Any]) -> dict[str, Any]:
    states = entry.pop("states")
    if all(s in _DONE for s in states):
        state = "done"
    elif any(s in ("running", "deferred") for s in states):
        state = "running"
    elif any(s in ("queued", "scheduled") for s in states):
        state = "queued"
    else:
        state = "pending"
    return {"state": state, "instances": len(states), **entry}


def _limits(session: Any, pools: Collection[str] | None = None) -> dict[str, Any]:
    from airflow.configuration import conf
    from airflow.models.pool import Pool
    from sqlalchemy import select

    slots = {name: n for name, n in session.execute(select(Pool.pool, Pool.slots)).all()}
    if pools is not None:
        slots = {name: n for name, n in slots.items() if name in pools}
    return {"parallelism": conf.getint("core", "parallelism"), "pools": slots}


def collect(
    session: Any,
    *,
    now: datetime,
    horizon: timedelta,
    dag_id: str | None = None,
    dag_ids: Collection[str] | None = None,
    pools: Collection[str] | None = None,
) -> dict[str, Any]:
    """Future work of every unpaused DAG (or one DAG), read from serialized DAGs in the metadata DB.

    :param session: a metadata DB session.
    :param now: the current time (aware).
    :param horizon: how far ahead to list runs.
    :param dag_id: only this DAG (paused or not).
    :param dag_ids: only these DAGs (the ones the user may read); None: no restriction.
    :param pools: list only these Airflow pools under ``limits`` (the ones the user may read); None: all.
    """
    from airflow.models.dag import DagModel
    from airflow.models.serialized_dag import SerializedDagModel
    from sqlalchemy import select

    query = select(DagModel).where(DagModel.is_stale.is_(False))
    query = query.where(DagModel.dag_id == dag_id) if dag_id else query.where(DagModel.is_paused.is_(False))
    if dag_ids is not None:
        query = query.where(DagModel.dag_id.in_(sorted(dag_ids)))
    models = {m.dag_id: m for m in session.scalars(query).all()}
    if dag_id and dag_id not in models:
        raise HTTPException(404, f"DAG {dag_id!r} not found (or not parsed yet)")
    running = running_runs(session, sorted(models))
    serialized = {
        row.dag_id: row
        for row in SerializedDagModel.get_latest_serialized_dags(dag_ids=sorted(models), session=session)
    }
    dags: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in sorted(models):
        row = serialized.get(name)
        if row is None:
            skipped.append(
                {"dag_id": name, "reason": "no serialized DAG yet (waiting for the dag-processor)"}
            )
            continue
        try:
            dag = row.dag
            first = dag.timetable.next_run_info_from_dag_model(dag_model=models[name])
            entry = describe_dag(dag, now=now, horizon=horizon, first=first, running=running.get(name, ()))
        except Exception as exc:  # a timetable that cannot be evaluated skips only its own DAG
            skipped.append(
                {"dag_id": name, "reason": f"timetable cannot be evaluated: {type(exc).__name__}: {exc}"}
            )
            continue
        entry["is_paused"] = bool(models[name].is_paused)
        dags.append(entry)
    return {
        "now": _iso(now),
        "horizon_minutes": int(horizon.total_seconds() // 60),
        "limits": _limits(session, pools),
        "dags": dags,
        "skipped": skipped,
    }


# ------------------------------------------------------------------------------------------- routes

router = APIRouter(tags=["predictive"], dependencies=[_auth()])


def _parse_now(now: str | None) -> datetime:
    if not now:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(now)
    except ValueError:
        raise HTTPException(400, f"query parameter now={now!r} is not an ISO 8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


Horizon = Annotated[int, Query(ge=1, le=60 * 24 * 31, description="how far ahead to list runs")]
AsOf = Annotated[str | None, Query(description="evaluate as of this ISO 8601 time (default: now)")]


def readable_dag_ids(user: Any, session: Any) -> set[str]:
    """The DAG ids the auth manager lets ``user`` read."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session))


def readable_pools(user: Any, session: Any) -> set[str]:
    """The Airflow pool names the auth manager lets ``user`` read."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_pools(user=user, method="GET", session=session))


@router.get("/api/upcoming")
def upcoming(
    session: SessionDep,
    user: GetUserDep,
    horizon_minutes: Horizon = DEFAULT_HORIZON_MINUTES,
    now: AsOf = None,
) -> dict[str, Any]:
    """Upcoming and running work of every unpaused DAG the user may read, with task pool and resource hints."""
    return collect(
        session,
        now=_parse_now(now),
        horizon=timedelta(minutes=horizon_minutes),
        dag_ids=readable_dag_ids(user, session),
        pools=readable_pools(user, session),
    )


@router.get("/api/upcoming/{dag_id}", dependencies=[_dag_read()])
@router.get("/upcoming/{dag_id}", include_in_schema=False, dependencies=[_dag_read()])
def upcoming_for_dag(
    dag_id: str,
    session: SessionDep,
    user: GetUserDep,
    horizon_minutes: Horizon = DEFAULT_HORIZON_MINUTES,
    now: AsOf = None,
) -> dict[str, Any]:
    """Upcoming and running work of one DAG (paused or not); needs read access on that DAG."""
    return collect(
        session,
        now=_parse_now(now),
        horizon=timedelta(minutes=horizon_minutes),
        dag_id=dag_id,
        pools=readable_pools(user, session),
    )

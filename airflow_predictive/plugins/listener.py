"""Worker listener: sample each task's process tree from ``running`` to ``success``/``failed``.

Registered by the provider's plugin (``listeners=[airflow_predictive.plugins.listener]``): this module
IS the listener object, its ``@hookimpl`` functions run inside each task's own process on the worker.
It imports only Airflow's ``hookimpl`` at load time (psutil and the store are imported when a task
starts), never touches the metadata database, and never fails a task: any error while sampling or
recording is logged once per process as a warning and otherwise ignored.

Samples go to the ProfileStore named by ``[predictive] store_conn_id`` / ``store_path`` when the try
ends, with the try's aggregate usage (CPU mean/peak, RSS peak, disk and network bytes) on its
``task_runs`` row. A task that defers ends its process without a success/failure hook; what was
sampled until then is written at process exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from airflow.listeners import hookimpl

from airflow_predictive import config

log = logging.getLogger(__name__)

_lock = threading.Lock()
_active: dict[tuple, Any] = {}
_store: Any = None
_warned = False
_atexit_registered = False


def _warn_once(message: str, *args: Any) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("airflow-predictive profiler: " + message + " (further errors are not logged)", *args)


def _is_worker_ti(task_instance: Any) -> bool:
    # The API server also fires these hooks with an ORM TaskInstance when a user marks a state:
    # only the task's own process (a RuntimeTaskInstance from the task SDK) has a tree to sample.
    return type(task_instance).__module__.startswith("airflow.sdk")


def _key(ti: Any) -> tuple:
    map_index = getattr(ti, "map_index", -1)
    return (ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else map_index, ti.try_number)


def _hints(ti: Any) -> dict[str, Any] | None:
    resources = getattr(getattr(ti, "task", None), "resources", None)
    if resources is None:
        return None
    hints: dict[str, Any] = {"source": "task.resources"}
    for name in ("cpus", "ram", "disk", "gpus"):
        quantity = getattr(getattr(resources, name, None), "qty", None)
        if quantity is not None:
            hints[name] = quantity
    return hints


def _get_store() -> Any:
    global _store
    if _store is None:
        # Imported when a task starts sampling: every Airflow process loads the listener.
        from airflow_predictive.hooks.profile_store import configured_store

        _store = configured_store()
    return _store


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """Start sampling the task's process tree (a deferred task resuming keeps its sampler)."""
    global _atexit_registered
    try:
        if not _is_worker_ti(task_instance):
            return
        key = _key(task_instance)
        with _lock:
            if key in _active:
                return
        # Imported when a task starts sampling: every Airflow process loads the listener.
        from airflow_predictive.profiling.sampler import ProcessTreeSampler

        sampler = ProcessTreeSampler(
            interval=max(config.get_float("sample_interval_seconds"), 0.05),
            on_flush=_flusher(key),
        )
        task = getattr(task_instance, "task", None)
        info = {
            "sampler": sampler,
            "start": getattr(task_instance, "start_date", None) or datetime.now(UTC),
            "queue": getattr(task, "queue", None) or getattr(task_instance, "queue", None),
            "pool": getattr(task, "pool", None),
            "pool_slots": getattr(task, "pool_slots", None),
            "operator": type(task).__name__ if task is not None else None,
            "hints": _hints(task_instance),
        }
        sampler.start()
        with _lock:
            _active[key] = info
            if not _atexit_registered:
                atexit.register(_flush_all, "deferred")
                _atexit_registered = True
    except Exception as exc:
        _warn_once("could not start sampling %s: %s", getattr(task_instance, "task_id", "?"), exc)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Stop sampling and record the try's usage."""
    _finish(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    """Stop sampling and record the try's usage (a failed try used resources too)."""
    _finish(task_instance, "failed")


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    """Stop sampling a task that skipped itself."""
    _finish(task_instance, "skipped")


def _finish(task_instance: Any, state: str) -> None:
    try:
        if not _is_worker_ti(task_instance):
            return
        with _lock:
            info = _active.pop(_key(task_instance), None)
        if info is not None:
            _record(_key(task_instance), info, state, getattr(task_instance, "hostname", None))
    except Exception as exc:
        _warn_once("could not record usage of %s: %s", getattr(task_instance, "task_id", "?"), exc)


def _ident(key: tuple) -> dict[str, Any]:
    dag_id, run_id, task_id, map_index, try_number = key
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "try_number": try_number,
    }


def _write_samples(key: tuple, samples: list[dict[str, Any]]) -> None:
    if samples:
        ident = _ident(key)
        _get_store().add_usage_samples(
            [{**ident, **{k: v for k, v in s.items() if k != "elapsed"}} for s in samples]
        )


def _flusher(key: tuple):
    def flush(samples: list[dict[str, Any]]) -> None:
        try:
            _write_samples(key, samples)
        except Exception as exc:
            _warn_once("could not record usage of %s: %s", key[2], exc)

    return flush


def _flush_all(state: str) -> None:
    with _lock:
        pending = list(_active.items())
        _active.clear()
    for key, info in pending:
        try:
            _record(key, info, state, None)
        except Exception as exc:
            _warn_once("could not record usage of %s: %s", key[2], exc)


def _record(key: tuple, info: dict[str, Any], state: str, hostname: str | None) -> None:
    # Imported when a task starts sampling: every Airflow process loads the listener.
    from airflow_predictive.profiling.sampler import summarise

    sampler = info["sampler"]
    samples = sampler.stop()
    end = datetime.now(UTC)
    ident = _ident(key)
    start = info["start"]
    row: dict[str, Any] = {
        **ident,
        "state": state,
        "hostname": hostname or sampler.hostname,
        "queue": info["queue"],
        "pool": info["pool"],
        "pool_slots": info["pool_slots"],
        "operator": info["operator"],
        "start_date": start,
        **summarise(samples),
    }
    if state != "deferred":
        row["end_date"] = end
        row["duration"] = (end - start).total_seconds() if start else None
    if info["hints"] is not None:
        row["hints"] = info["hints"]
    store = _get_store()
    store.add_usage_samples([{**ident, **{k: v for k, v in s.items() if k != "elapsed"}} for s in samples])
    store.upsert_task_runs([row])

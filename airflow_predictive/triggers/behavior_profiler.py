"""BehaviorProfilerTrigger: the deferrable side of BehaviorProfilerSensor, polled in the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_predictive import config
from airflow_predictive.contracts.airflow_api import AirflowApiError
from airflow_predictive.hooks.airflow_api import AirflowApiHook


class BehaviorProfilerTrigger(BaseTrigger):
    """Ingest task history every ``poke_interval`` seconds until the profiling window is complete.

    Yields ``{"status": "success", "summary": {...}}``, or ``{"status": "error", "message": ...}`` when
    the REST API stayed unreachable for ``timeout`` seconds.

    :param api_conn_id: Airflow connection of the REST API (conn type ``predictive_airflow_api``).
    :param store_conn_id: Airflow connection of the profile store (empty: the ``[predictive]`` default).
    :param window_start: ISO timestamp, window start.
    :param window_end: ISO timestamp, window end.
    :param queue_pools: ``{queue: pool}``.
    :param collector_name: names the watermark.
    :param interval_minutes: demand bucket width (default ``[predictive] interval_minutes``).
    :param poke_interval: seconds between passes.
    :param timeout: seconds after which to give up.
    """

    def __init__(
        self,
        *,
        api_conn_id: str,
        window_start: str,
        window_end: str,
        store_conn_id: str | None = None,
        queue_pools: dict[str, str] | None = None,
        collector_name: str = "default",
        interval_minutes: float | None = None,
        poke_interval: float = 60.0,
        timeout: float = 3600.0,
    ) -> None:
        super().__init__()
        self.api_conn_id = api_conn_id
        self.store_conn_id = store_conn_id
        self.window_start = window_start
        self.window_end = window_end
        self.queue_pools = dict(queue_pools or {})
        self.collector_name = collector_name
        self.interval_minutes = interval_minutes
        self.poke_interval = float(poke_interval)
        self.timeout = float(timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "api_conn_id": self.api_conn_id,
                "store_conn_id": self.store_conn_id,
                "window_start": self.window_start,
                "window_end": self.window_end,
                "queue_pools": self.queue_pools,
                "collector_name": self.collector_name,
                "interval_minutes": self.interval_minutes,
                "poke_interval": self.poke_interval,
                "timeout": self.timeout,
            },
        )

    def _pass(self) -> dict[str, Any]:
        # Imported when the trigger runs: the triggerer imports this module to load the class.
        from airflow_predictive.hooks.profile_store import configured_store
        from airflow_predictive.runtime.profile_window import profile_window

        store = configured_store(self.store_conn_id or None)
        try:
            with AirflowApiHook(self.api_conn_id).get_client() as client:
                return profile_window(
                    client,
                    store,
                    start=datetime.fromisoformat(self.window_start),
                    end=datetime.fromisoformat(self.window_end),
                    queue_pools=self.queue_pools or None,
                    collector_name=self.collector_name,
                    interval=timedelta(minutes=self.interval_minutes)
                    if self.interval_minutes
                    else config.interval(),
                )
        finally:
            store.dispose()

    async def run(self) -> AsyncIterator[TriggerEvent]:

        deadline = time.monotonic() + self.timeout
        last_error = ""
        while True:
            try:
                summary = await asyncio.to_thread(self._pass)
                last_error = ""
                if summary.get("complete"):
                    yield TriggerEvent({"status": "success", "summary": summary})
                    return
            except AirflowApiError as exc:
                last_error = str(exc)
                self.log.warning("profiler pass failed: %s", last_error)
            if time.monotonic() >= deadline:
                reason = (
                    f"the Airflow REST API stayed unreachable: {last_error}"
                    if last_error
                    else f"the window ending {self.window_end} was not complete yet"
                )
                yield TriggerEvent(
                    {
                        "status": "error",
                        "message": f"BehaviorProfiler timed out after {timedelta(seconds=self.timeout)}: {reason}",
                    }
                )
                return
            await asyncio.sleep(self.poke_interval)

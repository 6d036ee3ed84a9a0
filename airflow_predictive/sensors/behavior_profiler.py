"""BehaviorProfilerSensor: ingest task history each poke; done when the profiling window is complete."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from airflow_predictive import config
from airflow_predictive.contracts.airflow_api import AirflowApiError
from airflow_predictive.hooks.airflow_api import AirflowApiHook
from airflow_predictive.triggers.behavior_profiler import BehaviorProfilerTrigger


class BehaviorProfilerSensor(BaseSensorOperator):
    """Ingest what is new since the watermark each poke; succeed when the window ending at the data
    interval end is complete, returning a compact summary (XCom) after rebuilding its demand series.

    :param api_conn_id: Airflow connection of the REST API (conn type ``predictive_airflow_api``);
        default ``[predictive] api_conn_id``.
    :param store_conn_id: connection of the profile store; default ``[predictive] store_conn_id``
        (empty: the SQLite file at ``store_path``).
    :param window: length of the profiling window that ends at the data interval end.
    :param window_end: override the window end (ISO timestamp, templated); default data interval end.
    :param queue_pools: ``{queue: capacity pool}``; default: the queues of the pools file
        (``[predictive] pools_file``); other queues: pool = queue name.
    :param collector_name: names the watermark, one per profiled deployment.
    :param interval: demand bucket width; default ``[predictive] interval_minutes``.
    :param deferrable: wait in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = ("window_end", "queue_pools")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        api_conn_id: str | None = None,
        store_conn_id: str | None = None,
        window: timedelta = timedelta(hours=1),
        window_end: str | None = None,
        queue_pools: dict[str, str] | None = None,
        collector_name: str = "default",
        interval: timedelta | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 60)
        kwargs.setdefault("timeout", 3600)
        super().__init__(**kwargs)
        if window <= timedelta(0):
            raise ValueError(f"window must be positive, got {window}")
        self.api_conn_id = api_conn_id
        self.store_conn_id = store_conn_id
        self.window = window
        self.window_end = window_end
        self.queue_pools = queue_pools
        self.collector_name = collector_name
        self.interval = interval
        self.deferrable = deferrable
        self._last_api_error = ""

    def _conn_id(self) -> str:
        if self.api_conn_id:
            return self.api_conn_id
        return config.get("api_conn_id")

    def _queue_pools(self) -> dict[str, str] | None:
        return self.queue_pools if self.queue_pools is not None else config.configured_queue_pools()

    def _window(self, context: Any) -> tuple[datetime, datetime]:
        end: Any = self.window_end or context.get("data_interval_end")
        if end is None:
            dag_run = context.get("dag_run")
            end = getattr(dag_run, "run_after", None) or datetime.now(UTC)
        end = datetime.fromisoformat(end) if isinstance(end, str) else end
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        return end - self.window, end

    def execute(self, context: Any) -> Any:
        if self.deferrable:
            start, end = self._window(context)
            self.defer(
                trigger=BehaviorProfilerTrigger(
                    api_conn_id=self._conn_id(),
                    store_conn_id=self.store_conn_id,
                    window_start=start.isoformat(),
                    window_end=end.isoformat(),
                    queue_pools=self._queue_pools(),
                    collector_name=self.collector_name,
                    interval_minutes=self.interval.total_seconds() / 60 if self.interval else None,
                    poke_interval=float(self.poke_interval),
                    timeout=float(self.timeout),
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=float(self.timeout) + 60),
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            if self._last_api_error:
                raise AirflowSensorTimeout(
                    f"BehaviorProfiler timed out after {self.timeout}s because the Airflow REST API "
                    f"(connection {self._conn_id()!r}) was unreachable: {self._last_api_error}"
                ) from exc
            raise

    def poke(self, context: Any) -> PokeReturnValue:
        # Imported when the sensor runs: the DAG file imports this module at every parse.
        from airflow_predictive.hooks.profile_store import configured_store
        from airflow_predictive.runtime.profile_window import profile_window

        start, end = self._window(context)
        store = configured_store(self.store_conn_id)
        try:
            with AirflowApiHook(self._conn_id()).get_client() as client:
                summary = profile_window(
                    client,
                    store,
                    start=start,
                    end=end,
                    queue_pools=self._queue_pools(),
                    collector_name=self.collector_name,
                    interval=self.interval or config.interval(),
                )
        except AirflowApiError as exc:
            self._last_api_error = str(exc)
            self.log.warning("profiler pass failed: %s", exc)
            return PokeReturnValue(is_done=False)
        finally:
            store.dispose()
        self._last_api_error = ""
        self.log.info("profiler pass: %s", summary["ingested"])
        return PokeReturnValue(is_done=summary["complete"], xcom_value=summary)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "success":
            raise AirflowException(event.get("message") or f"BehaviorProfiler trigger failed: {event}")
        return event["summary"]

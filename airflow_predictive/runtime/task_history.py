"""Task-history collector: ingest task tries and DAG runs from the REST API v2 into the ProfileStore.

Each pass asks only for what changed since the watermark (``updated_at`` on the API server, minus a
small overlap); records are upserted on their natural key, so an overlap or a re-run of a pass stores
each try once and a try seen while running is updated when it ends. Retries are separate tries: for a
task instance on try ``n > 1`` the earlier tries come from its ``/tries`` endpoint. The watermark is
the API server's own clock (HTTP ``Date``), so a skewed profiler clock loses nothing.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from airflow_predictive.contracts.airflow_api import AirflowApiError, ApiClient
from airflow_predictive.contracts.stores import HistoryIngestStore, WatermarkReader, Watermarks
from airflow_predictive.profiling.records import Ingest, dag_run_record, parse_time, task_run_record

log = logging.getLogger(__name__)

WATERMARK = "profiler:{name}:updated_at"
COVERAGE = "profiler:{name}:coverage"


@dataclass
class CollectResult:
    """The outcome of one ingest pass (small and JSON-able through :meth:`as_dict`)."""

    task_runs: int = 0
    dag_runs: int = 0
    running: int = 0
    queued: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    adjusted: dict[str, int] = field(default_factory=dict)
    since: datetime | None = None
    until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_runs": self.task_runs,
            "dag_runs": self.dag_runs,
            "running": self.running,
            "queued": self.queued,
            "skipped": dict(self.skipped),
            "adjusted": dict(self.adjusted),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


class TaskHistoryCollector:
    """Ingest what is new since the watermark from one Airflow deployment.

    :param client: an :class:`~airflow_predictive.airflow_api.client.AirflowApiClient`.
    :param store: the ProfileStore to write to.
    :param name: names the watermark, so several deployments can feed one store.
    :param overlap: re-read this much before the watermark (commits that land late, 1-s ``Date``).
    :param dag_id_pattern: optional SQL LIKE pattern limiting the DAGs profiled.
    """

    def __init__(
        self,
        client: ApiClient,
        store: HistoryIngestStore,
        *,
        name: str = "default",
        overlap: timedelta = timedelta(minutes=2),
        dag_id_pattern: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.name = name
        self.overlap = overlap
        self.dag_id_pattern = dag_id_pattern

    @property
    def watermark(self) -> datetime | None:
        return parse_time(self.store.get_watermark(WATERMARK.format(name=self.name)))

    def collect(self) -> CollectResult:
        """Run one pass: fetch, normalise, upsert, advance the watermark and the coverage."""
        since = self.watermark
        ingest = Ingest()
        # The server clock at the start of the pass is the next watermark: anything that changes
        # while we page is re-read next time (upserts make that harmless).
        self.client.get("/version")
        pass_start = self.client.server_time or datetime.now(UTC)
        params: dict[str, Any] = {}
        if since is not None:
            params["updated_at_gte"] = _iso(since - self.overlap)
        if self.dag_id_pattern:
            params["dag_id_pattern"] = self.dag_id_pattern

        for item in self.client.paginate(
            "/dags/~/dagRuns/~/taskInstances", "task_instances", {**params, "order_by": "id"}
        ):
            task_run_record(item, ingest, server_now=pass_start)
            try_number = item.get("try_number")
            if isinstance(try_number, int) and try_number > 1:
                self._earlier_tries(item, ingest, pass_start)

        dag_items = list(self.client.paginate("/dags/~/dagRuns", "dag_runs", {**params, "order_by": "id"}))
        assets = self._asset_events(dag_items, ingest)
        for item in dag_items:
            key = (item.get("dag_id"), item.get("dag_run_id") or item.get("run_id"))
            dag_run_record(item, ingest, assets.get(key))

        task_runs = _dedupe(ingest.task_runs, ("dag_id", "run_id", "task_id", "map_index", "try_number"))
        dag_runs = _dedupe(ingest.dag_runs, ("dag_id", "run_id"))
        if len(task_runs) < len(ingest.task_runs):
            ingest.skipped["duplicate in the same pass"] += len(ingest.task_runs) - len(task_runs)
        if task_runs:
            self.store.upsert_task_runs(task_runs)
        if dag_runs:
            self.store.upsert_dag_runs(dag_runs)
        starts = [r.get("start_date") or r.get("queued_at") for r in task_runs]
        starts = [s for s in starts if s is not None]
        # First pass: history is observed from the hour of the first recorded try (nothing ran or
        # waited earlier in that hour; a try still queued counts from its queued time), so the bucket
        # holding it is not a gap. Later passes continue the
        # previous coverage seamlessly: the API keeps the history between passes.
        first = min(starts).replace(minute=0, second=0, microsecond=0) if starts else pass_start
        coverage_start = since or first
        extend_coverage(self.store, self.name, coverage_start, pass_start)
        self.store.set_watermark(WATERMARK.format(name=self.name), _iso(pass_start))
        result = CollectResult(
            task_runs=len(task_runs),
            dag_runs=len(dag_runs),
            running=sum(1 for r in task_runs if r.get("start_date") and r.get("end_date") is None),
            queued=sum(1 for r in task_runs if r.get("start_date") is None and r.get("state") == "queued"),
            skipped=dict(ingest.skipped),
            adjusted=dict(ingest.adjusted),
            since=since,
            until=pass_start,
        )
        if ingest.skipped:
            log.info("profiler pass skipped %s", dict(ingest.skipped))
        return result

    def _earlier_tries(self, item: dict[str, Any], ingest: Ingest, now: datetime) -> None:
        dag_id, task_id = item.get("dag_id"), item.get("task_id")
        run_id = item.get("dag_run_id") or item.get("run_id")
        if not (isinstance(dag_id, str) and isinstance(run_id, str) and isinstance(task_id, str)):
            return
        map_index = item.get("map_index", -1)
        path = f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/{quote(task_id, safe='')}"
        path += f"/{int(map_index)}/tries" if isinstance(map_index, int) and map_index >= 0 else "/tries"
        try:
            answer = self.client.get(path)
        except AirflowApiError as exc:
            if "HTTP 404" in str(exc):
                ingest.skip("tries of a deleted DAG or run (HTTP 404)")
                return
            raise
        for previous in answer.get("task_instances") or []:
            if isinstance(previous, dict) and previous.get("try_number") != item.get("try_number"):
                task_run_record(previous, ingest, server_now=now)

    def _asset_events(
        self, dag_items: list[dict[str, Any]], ingest: Ingest
    ) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
        """Consumed and produced asset events of the runs in this pass, from ``/assets/events``."""
        starts = [parse_time(i.get("start_date")) for i in dag_items]
        starts = [s for s in starts if s is not None]
        if not starts:
            return {}
        wanted = {(i.get("dag_id"), i.get("dag_run_id") or i.get("run_id")) for i in dag_items}
        found: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(
            lambda: {"consumed": [], "produced": []}
        )
        try:
            events = self.client.paginate(
                "/assets/events",
                "asset_events",
                {"timestamp_gte": _iso(min(starts)), "order_by": "timestamp"},
            )
            for event in events:
                asset = {"name": event.get("name"), "uri": event.get("uri")}
                producer = (event.get("source_dag_id"), event.get("source_run_id"))
                if producer in wanted:
                    found[producer]["produced"].append({**asset, "task_id": event.get("source_task_id")})
                for consumer in event.get("created_dagruns") or []:
                    key = (consumer.get("dag_id"), consumer.get("run_id"))
                    if key in wanted:
                        found[key]["consumed"].append(asset)
        except AirflowApiError as exc:
            # Asset events are an extra: without asset permissions the history is still useful.
            ingest.skip("asset events unavailable")
            log.warning("asset events not ingested: %s", exc)
            return {}
        return dict(found)


def _dedupe(records: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Keep the last record per key (a later page or the current try wins)."""
    by_key = {tuple(r[k] for k in keys): r for r in records}
    return list(by_key.values())


# ----------------------------------------------------------------- coverage (gaps are explicit)


def coverage(store: WatermarkReader, name: str = "default") -> list[tuple[datetime, datetime]]:
    """The time intervals the profiler has observed (outside them demand is unknown, not zero)."""
    raw = store.get_watermark(COVERAGE.format(name=name))
    if not raw:
        return []
    intervals = []
    for start, end in json.loads(raw):
        s, e = parse_time(start), parse_time(end)
        if s is not None and e is not None and e > s:
            intervals.append((s, e))
    return sorted(intervals)


def extend_coverage(
    store: Watermarks, name: str, start: datetime, end: datetime, *, max_intervals: int = 500
) -> list[tuple[datetime, datetime]]:
    """Add ``[start, end)`` to the observed intervals (merging overlaps) and store them.

    :param store: the ProfileStore.
    :param name: the collector name.
    :param start: interval start.
    :param end: interval end.
    :param max_intervals: keep only the newest intervals (older history then reads as a gap).
    """
    merged = merge_intervals([*coverage(store, name), (start, end)])[-max_intervals:]
    store.set_watermark(COVERAGE.format(name=name), json.dumps([[_iso(s), _iso(e)] for s, e in merged]))
    return merged


def merge_intervals(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged

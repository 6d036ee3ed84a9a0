"""Collector on bad pages: missing fields, clock skew, running runs, deleted DAGs, pagination, overlap.

The REST API is served by ``httpx.MockTransport`` here only to inject faults a healthy Airflow never
sends; the happy path runs against a real Airflow in test_integration_real_airflow.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pandas as pd
import pytest

from airflow_predictive.airflow_api.client import AirflowApiClient, AirflowApiError
from airflow_predictive.runtime.task_history import TaskHistoryCollector, coverage

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def ti(task_id: str, **extra) -> dict:
    item = {
        "dag_id": "etl",
        "dag_run_id": "manual__1",
        "task_id": task_id,
        "map_index": -1,
        "try_number": 1,
        "state": "success",
        "queue": "default",
        "pool": "default_pool",
        "pool_slots": 1,
        "operator": "PythonOperator",
        "hostname": "w1",
        "queued_when": (NOW - timedelta(minutes=10, seconds=5)).isoformat(),
        "start_date": (NOW - timedelta(minutes=10)).isoformat(),
        "end_date": (NOW - timedelta(minutes=9)).isoformat(),
        "duration": 60.0,
        "unexpected_field": {"nested": True},
    }
    item.update(extra)
    return item


class FakeAirflow:
    """Serves pages of task instances and DAG runs, counting requests; its clock is the Date header."""

    def __init__(self, tis: list[dict], dag_runs: list[dict], tries: dict | None = None) -> None:
        self.tis, self.dag_runs, self.tries = tis, dag_runs, tries or {}
        self.clock = NOW
        self.requests: list[httpx.Request] = []
        self.token_requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"date": format_datetime(self.clock, usegmt=True)}
        path = request.url.path
        if path == "/auth/token":
            self.token_requests += 1
            return httpx.Response(201, json={"access_token": "tok"}, headers=headers)
        if request.headers.get("authorization") != "Bearer tok":
            return httpx.Response(401, headers=headers)
        params = request.url.params
        if path == "/api/v2/version":
            return httpx.Response(200, json={"version": "3.3.2"}, headers=headers)
        if path == "/api/v2/dags/~/dagRuns/~/taskInstances":
            # cursor pagination: the cursor is the offset, as a string
            start = int(params.get("cursor") or 0)
            limit = int(params["limit"])
            page = self.tis[start : start + limit]
            nxt = str(start + limit) if start + limit < len(self.tis) else None
            return httpx.Response(
                200, json={"task_instances": page, "next_cursor": nxt, "total_entries": None}, headers=headers
            )
        if path == "/api/v2/dags/~/dagRuns":
            offset, limit = int(params.get("offset", 0)), int(params["limit"])
            return httpx.Response(
                200, json={"dag_runs": self.dag_runs[offset : offset + limit]}, headers=headers
            )
        if path == "/api/v2/assets/events":
            return httpx.Response(403, json={"detail": "forbidden"}, headers=headers)
        if path.endswith("/tries"):
            if path in self.tries:
                return httpx.Response(200, json={"task_instances": self.tries[path]}, headers=headers)
            return httpx.Response(404, json={"detail": "not found"}, headers=headers)
        return httpx.Response(404, headers=headers)


def client_for(api: FakeAirflow, page_size: int = 2) -> AirflowApiClient:
    return AirflowApiClient(
        "http://airflow.test",
        username="u",
        password="p",
        page_size=page_size,
        transport=httpx.MockTransport(api),
    )


def test_bad_items_are_counted_by_reason_and_good_ones_stored_once(store) -> None:
    tis = [
        ti("ok"),
        ti("ok"),  # the same try twice across pages: stored once
        {"state": "success"},  # no ids
        ti("never_started", start_date=None, end_date=None, state="scheduled"),
        ti("running", state="running", end_date=None, duration=None),
        ti("future", start_date=(NOW + timedelta(hours=1)).isoformat(), end_date=None, state="running"),
        ti("backwards", end_date=(NOW - timedelta(hours=2)).isoformat()),
        ti("finished_no_end", end_date=None),
        ti("bad_state", state=["x"]),
    ]
    dag_runs = [
        {
            "dag_id": "etl",
            "dag_run_id": "manual__1",
            "run_type": "manual",
            "triggering_user_name": "ann",
            "state": "success",
            "start_date": (NOW - timedelta(minutes=11)).isoformat(),
        },
        {"dag_run_id": "orphan"},
    ]
    api = FakeAirflow(tis, dag_runs)
    result = TaskHistoryCollector(client_for(api), store).collect()
    assert result.skipped == {
        "task instance without dag_id/run_id/task_id": 1,
        "task instance never started": 1,
        "finished task instance without end_date": 1,
        "task instance with a malformed state": 1,
        "dag run without dag_id/run_id": 1,
        "duplicate in the same pass": 1,
        "asset events unavailable": 1,
    }
    assert result.adjusted == {
        "clock skew: start in the future, clipped to server time": 1,
        "clock skew: end before start, clipped to start": 1,
    }
    runs = store.task_runs().set_index("task_id")
    assert sorted(runs.index) == ["backwards", "future", "ok", "running"]
    assert pd.isna(runs.loc["running", "end_date"]) and runs.loc["running", "state"] == "running"
    assert runs.loc["backwards", "end_date"] == runs.loc["backwards", "start_date"]
    assert result.running == 2
    assert store.dag_runs()["triggered_by"].tolist() == ["ann"]
    # pages of 2 through the cursor
    cursors = [r.url.params.get("cursor") for r in api.requests if r.url.path.endswith("taskInstances")]
    assert cursors == ["", "2", "4", "6", "8"]


def test_watermark_makes_the_next_pass_incremental_and_updates_running_tries(store) -> None:
    api = FakeAirflow([ti("t", state="running", end_date=None, duration=None)], [])
    collector = TaskHistoryCollector(client_for(api), store, overlap=timedelta(minutes=2))
    collector.collect()
    assert store.task_runs()["state"].tolist() == ["running"]
    api.clock = NOW + timedelta(minutes=5)
    api.tis = [ti("t", end_date=(NOW + timedelta(minutes=4)).isoformat(), duration=840.0)]
    collector.collect()
    runs = store.task_runs()
    assert len(runs) == 1 and runs["state"].tolist() == ["success"] and runs["duration"].tolist() == [840.0]
    last = [r for r in api.requests if r.url.path.endswith("taskInstances")][-1]
    assert last.url.params["updated_at_gte"] == (NOW - timedelta(minutes=2)).isoformat()
    # observed time: from the hour of the first try, across both passes without a hole
    assert coverage(store) == [(datetime(2026, 3, 2, 11, 0, tzinfo=UTC), NOW + timedelta(minutes=5))]


def test_retries_are_separate_tries_and_a_deleted_dag_is_counted(store) -> None:
    tries_path = "/api/v2/dags/etl/dagRuns/manual__1/taskInstances/flaky/tries"
    first_try = ti("flaky", try_number=1, state="failed")
    api = FakeAirflow(
        [ti("flaky", try_number=2), ti("gone", dag_id="deleted_dag", try_number=3)],
        [],
        tries={tries_path: [first_try, ti("flaky", try_number=2)]},
    )
    result = TaskHistoryCollector(client_for(api), store).collect()
    runs = store.task_runs()
    flaky = runs[runs["task_id"] == "flaky"].sort_values("try_number")
    assert flaky["try_number"].tolist() == [1, 2]
    assert flaky["state"].tolist() == ["failed", "success"]
    assert result.skipped["tries of a deleted DAG or run (HTTP 404)"] == 1


def test_unreachable_api_and_refused_credentials_give_clear_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401)

    refused = AirflowApiClient(
        "http://airflow.test", username="u", password="p", transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(AirflowApiError, match="refused the credentials of user 'u'"):
        refused.get("/version")
    down = AirflowApiClient("http://127.0.0.1:9", username="u", password="secret-pw", timeout=2)
    with pytest.raises(AirflowApiError, match="unreachable") as info:
        down.get("/version")
    assert "secret-pw" not in str(info.value)
    with pytest.raises(AirflowApiError, match="credentials missing"):
        AirflowApiClient("http://x", username="u")
    with pytest.raises(AirflowApiError, match="must start with http"):
        AirflowApiClient("127.0.0.1:8080", token="t")

"""The control loop's forecast task combines known future work from the upcoming-work endpoint.

DemandForecastOperator runs as in the DAG (``execute``), reading the endpoint over HTTP through the
REST API connection from a small local server that speaks the API server's token protocol. Order
selection is skipped (``max_selections=0``, seasonal-naive fallback) so the statistical part is
deterministic and the difference between ``residual`` and ``none`` is exactly the known work.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from airflow_predictive_tools.bench.forecasting import generate_history

from airflow_predictive.forecasting.engine import Forecaster
from airflow_predictive.hooks.profile_store import configured_store
from airflow_predictive.operators.demand_forecast import DemandForecastOperator, describe_known_work
from airflow_predictive.profiling.demand_series import build_demand
from airflow_predictive.runtime.known_work import flag_changed_bases, forecast_with_known_work
from airflow_predictive.store import ProfileStore

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
SID = "pool=etl/resource=cpu"
TOKEN = "token-for-tests"


def stage(task_id: str, cpu: float, duration_s: float, upstream: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "upstream": list(upstream),
        "queue": "etl",
        "pool": "default_pool",
        "pool_slots": 1,
        "source": "template",
        "cpu": cpu,
        "memory_gib": 1.0,
        "storage_gib": 0.0,
        "network_mbps": 0.0,
        "duration_s": duration_s,
        "parallelism": 1,
    }


def upcoming_work(run_after: datetime) -> dict[str, Any]:
    """The endpoint's answer: one DAG, a 10-minute 1-vCPU stage then a 30-minute 16-vCPU stage."""
    return {
        "now": NOW.isoformat(),
        "horizon_minutes": 1440,
        "limits": {"parallelism": 32, "pools": {"default_pool": 128}},
        "dags": [
            {
                "dag_id": "train_daily",
                "schedule_kind": "scheduled",
                "max_active_runs": 1,
                "max_active_tasks": 16,
                "upcoming": [{"run_after": run_after.isoformat(), "overdue": False}],
                "running": [],
                "tasks": [stage("prepare", 1.0, 600), stage("train", 16.0, 1800, ("prepare",))],
            }
        ],
        "skipped": [],
    }


class FakeApiServer:
    """POST /auth/token and GET /predictive/api/upcoming, like the API server with the plugin."""

    def __init__(self, answer: dict[str, Any], status: int = 200) -> None:
        self.answer, self.status, self.requests = answer, status, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(201, {"access_token": TOKEN})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                server.requests.append((url.path, parse_qs(url.query), self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, {"detail": "not authenticated"})
                elif url.path != "/predictive/api/upcoming":
                    self._send(404, {"detail": "not found"})
                else:
                    self._send(server.status, server.answer if server.status < 400 else {"detail": "boom"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "profile.db"
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__STORE_PATH", str(path))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__POOLS_FILE", str(tmp_path / "no-pools.yaml"))
    return path


def use_api(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    conn = {"conn_type": "predictive_airflow_api", "host": url, "login": "admin", "password": "pw"}
    monkeypatch.setenv("AIRFLOW_CONN_PREDICTIVE_AIRFLOW_API_DEFAULT", json.dumps(conn))


def seed_demand(path: Path) -> None:
    store = ProfileStore.sqlite(path)
    history = generate_history(1, days=3, seed=3, end=NOW - timedelta(minutes=5))
    history["series_id"] = SID
    store.write_demand(history)
    store.dispose()


def forecast(combination: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run the forecast task for the etl cpu series at NOW; return its summary and stored forecast."""
    operator = DemandForecastOperator(
        task_id="forecast",
        series_ids=[SID],
        now=NOW.isoformat(),
        max_selections=0,
        refit_fraction=0.0,
        combination=combination,
    )
    summary = operator.execute({})
    store = configured_store()
    try:
        latest = store.latest_forecasts([SID]).set_index("ts")
    finally:
        store.dispose()
    return summary, latest


def at(frame: pd.DataFrame, minutes: int, column: str = "mean") -> float:
    return float(frame.loc[pd.Timestamp(NOW + timedelta(minutes=minutes)), column])


def test_forecast_includes_the_stages_of_an_upcoming_scheduled_run(store_path, monkeypatch):
    seed_demand(store_path)
    run_after = NOW + timedelta(hours=1)
    with FakeApiServer(upcoming_work(run_after)) as api:
        use_api(monkeypatch, api.url)
        alone_summary, alone = forecast("none")
        summary, combined = forecast("residual")

    assert alone_summary["combination"] == "none" and len(api.requests) == 1  # none does not ask
    path, query, _ = api.requests[0]
    assert path == "/predictive/api/upcoming" and query["now"] == [NOW.isoformat()]
    assert summary["combination"] == "residual" and summary["known_work"]["status"] == "ok"
    assert summary["known_work"]["upcoming_runs"] == 1 and summary["known_work"]["known_peak"][SID] >= 16
    assert set(combined["model"]) == {"combined"} and "combined" not in set(alone["model"])
    assert (combined.index == alone.index).all()  # same buckets: the statistical forecast's
    extra = combined["mean"] - alone["mean"]
    # Nothing known before the run; prepare (1 vCPU) for its 10 minutes; train (16 vCPUs) for 30. The
    # store keeps float32 (7 significant digits), so sums of stored values are compared to 1e-4.
    assert extra[: pd.Timestamp(run_after - timedelta(minutes=5))].abs().max() < 1e-9
    assert [round(at(combined, m) - at(alone, m), 4) for m in (60, 65)] == [1.0, 1.0]
    assert [round(at(combined, m) - at(alone, m), 4) for m in (70, 85, 95)] == [16.0] * 3
    assert extra[pd.Timestamp(run_after + timedelta(minutes=40)) :].abs().max() < 1e-9
    for column in ("q0.5", "q0.95", "q0.99"):
        assert at(combined, 80, column) >= at(alone, 80, column) + 16 - 1e-4
    assert "known work of 1 DAG(s), 1 upcoming" in describe_known_work(summary)


def test_past_runs_of_a_scheduled_dag_are_not_counted_twice(store):
    """History holds three daily runs of the DAG: the residual model must not forecast them again."""
    runs, dag_runs = [], []
    for day in (3, 2, 1):
        run_after = NOW + timedelta(hours=1) - timedelta(days=day)
        run_id = f"scheduled__{run_after.isoformat()}"
        dag_runs.append(
            {
                "dag_id": "train_daily",
                "run_id": run_id,
                "run_type": "scheduled",
                "state": "success",
                "start_date": run_after,
                "end_date": run_after + timedelta(minutes=40),
            }
        )
        for task_id, offset, minutes, cpu in (("prepare", 0, 10, 1.0), ("train", 10, 30, 16.0)):
            start = run_after + timedelta(minutes=offset)
            runs.append({"dag_id": "train_daily", "run_id": run_id, "task_id": task_id, "map_index": -1,
                         "try_number": 1, "state": "success", "queue": "etl", "start_date": start,
                         "end_date": start + timedelta(minutes=minutes), "duration": minutes * 60.0,
                         "cpu_mean": cpu, "rss_peak_mb": 1024.0})  # fmt: skip
    store.upsert_task_runs(runs)
    store.upsert_dag_runs(dag_runs)
    base = generate_history(1, days=3, seed=3, end=NOW - timedelta(minutes=5))
    base["series_id"] = SID
    start, end = base["ts"].min().to_pydatetime(), NOW
    scheduled = build_demand(store.task_runs(), start=start, end=end, now=NOW)
    scheduled = scheduled[scheduled["series_id"] == SID].set_index("ts")["value"]
    total = base.set_index("ts")
    total["value"] += scheduled.reindex(total.index, fill_value=0.0)
    store.write_demand(total.reset_index())

    forecaster = Forecaster(select_workers=0)
    options = {"now": NOW, "forecaster": forecaster, "max_selections": 0, "refit_fraction": 0.0}
    alone = forecast_with_known_work(store, [SID], combination="none", **options)
    alone_frame = store.latest_forecasts([SID]).set_index("ts")
    combined = forecast_with_known_work(
        store,
        [SID],
        combination="residual",
        fetch=lambda now, h: upcoming_work(NOW + timedelta(hours=1)),
        **options,
    )
    combined_frame = store.latest_forecasts([SID]).set_index("ts")

    assert alone["combination"] == "none" and combined["combination"] == "residual"
    assert combined["known_work"]["subtracted_task_runs"] == 6
    assert combined["known_work"]["residual_series"] == 1 and combined["known_work"]["reselect"] == [SID]
    # Statistical alone repeats yesterday's train stage; combined = residual (without it) + the stage.
    assert at(alone_frame, 80) > 16
    for minutes in (70, 80, 95):
        assert at(combined_frame, minutes) == pytest.approx(at(alone_frame, minutes), abs=1e-6)
    assert at(combined_frame, 80) < at(alone_frame, 80) + 8  # not the stage twice


def test_a_model_is_reselected_when_its_history_basis_changes(store):
    state = {"kind": "arima"}
    store.save_model_states(
        [{"series_id": SID, "model": "auto_arima", "state": state, "fitted_at": NOW, "needs_reselect": False}]
    )
    assert flag_changed_bases(store, {SID: "total"}) == []  # selected on total demand, as before
    assert flag_changed_bases(store, {SID: "residual"}) == [SID]
    assert store.model_states([SID])[SID]["needs_reselect"] is True
    store.mark_reselect([SID], False)  # what the next cycle's selection does
    assert flag_changed_bases(store, {SID: "residual"}) == []
    assert flag_changed_bases(store, {SID: "total"}) == [SID]


@pytest.mark.parametrize("status", [None, 500])
def test_cycle_forecasts_without_known_work_when_the_endpoint_fails(store_path, monkeypatch, caplog, status):
    seed_demand(store_path)
    if status is None:
        use_api(monkeypatch, "http://127.0.0.1:9")  # nothing listens there
        summary, latest = forecast("residual")
    else:
        with FakeApiServer({}, status=status) as api:
            use_api(monkeypatch, api.url)
            summary, latest = forecast("residual")
    known = summary["known_work"]
    assert summary["combination"] == "none" and known["status"] == "unavailable"
    assert ("127.0.0.1:9" if status is None else "HTTP 500") in known["reason"]
    assert len(latest) == 288 and "combined" not in set(latest["model"])
    assert "known future work unavailable" in caplog.text
    assert "statistical forecast alone" in describe_known_work(summary)


def test_unknown_combination_is_a_config_error(store_path, monkeypatch):
    from airflow_predictive.config import ConfigError

    monkeypatch.setenv("AIRFLOW__PREDICTIVE__COMBINATION", "average")
    operator = DemandForecastOperator(task_id="forecast", series_ids=[SID], now=NOW.isoformat())
    with pytest.raises(ConfigError, match="combination must be one of residual, none, got 'average'"):
        operator.execute({})

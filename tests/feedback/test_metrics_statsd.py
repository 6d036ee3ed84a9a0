"""One control-loop cycle under `airflow dags test` sends its metrics to a StatsD listener on 127.0.0.1.

Airflow is configured with ``[metrics] statsd_on`` pointing at a UDP socket this test owns; the DAG
``ui_metrics_cycle`` forecasts the pool (DemandForecastOperator) and evaluates it
(ForecastEvaluationOperator) on a store holding demand, past forecasts, capacity and a ledger with an
applied and a failed action. Every metric family of the cycle must arrive, named per pool and resource.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from airflow_predictive.runtime import metrics
from airflow_predictive.store import ProfileStore
from tests.airflow_harness import airflow_cli
from tests.ui.seed import POOL, SERIES, seed


def _receive(sock: socket.socket) -> list[str]:
    lines = []
    sock.settimeout(0.5)
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return lines
        lines += data.decode().splitlines()


def test_one_cycle_emits_metrics_to_statsd(airflow_db, tmp_path) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    seeded_at = now - timedelta(hours=2) - timedelta(minutes=now.minute % 5)
    store_path = tmp_path / "profile.db"
    store = ProfileStore.sqlite(store_path)
    seed(store, seeded_at)
    # What happened after the seeded forecast was issued: demand up to now (the forecast is scored).
    ts = pd.date_range(seeded_at, now, freq="5min", inclusive="left")
    store.write_demand(
        pd.DataFrame({"series_id": SERIES, "ts": ts, "value": 11 + np.cos(np.arange(len(ts)))})
    )
    store.dispose()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        env = {
            "AIRFLOW_HOME": str(airflow_db),
            "AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path),
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(sock.getsockname()[1]),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }
        proc = airflow_cli("dags", "test", "ui_metrics_cycle", env=env)
        output = proc.stdout + proc.stderr
        assert "Could not configure StatsClient" not in output, output[-3000:]
        assert "state=failed" not in output and "Task failed" not in output, output[-6000:]
        lines = _receive(sock)
    finally:
        sock.close()

    names = {line.split(":", 1)[0] for line in lines}
    expected = {
        f"airflow.{metrics.FORECAST_MEAN}.{POOL}.cpu",
        f"airflow.{metrics.FORECAST_UPPER}.{POOL}.cpu",
        f"airflow.{metrics.CAPACITY_PROVISIONED}.{POOL}.cpu",
        f"airflow.{metrics.UNMET_DEMAND}.{POOL}.cpu",
        f"airflow.{metrics.IDLE_CAPACITY}.{POOL}.cpu",
        f"airflow.{metrics.COVERAGE}.{POOL}.cpu",
        f"airflow.{metrics.MASE}.{POOL}.cpu",
        f"airflow.{metrics.ACTIONS_APPLIED}.{POOL}",
        f"airflow.{metrics.ACTIONS_FAILED}.{POOL}",
        f"airflow.{metrics.FIT_TIME}",
        f"airflow.{metrics.RECALIBRATIONS}",
        f"airflow.{metrics.ALERTS}.action_failed",
    }
    missing = expected - names
    assert not missing, (
        f"metrics not received: {sorted(missing)}; got {sorted(n for n in names if 'predictive' in n)}"
    )
    # The ledger held one applied and one failed action: the counters carry them.
    assert f"airflow.{metrics.ACTIONS_FAILED}.{POOL}:1|c" in lines
    assert f"airflow.{metrics.ACTIONS_APPLIED}.{POOL}:1|c" in lines
    capacity = [
        line for line in lines if line.startswith(f"airflow.{metrics.CAPACITY_PROVISIONED}.{POOL}.cpu:")
    ]
    assert capacity and capacity[-1].split(":")[1].split("|")[0] == "16.0"

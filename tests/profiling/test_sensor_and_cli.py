"""Sensor and trigger fail clearly when the API is unreachable; the CLI seeds history and rejects bad input."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_predictive import config
from airflow_predictive.cli import main
from airflow_predictive.sensors.behavior_profiler import BehaviorProfilerSensor
from airflow_predictive.triggers.behavior_profiler import BehaviorProfilerTrigger

UNREACHABLE = json.dumps(
    {
        "conn_type": "predictive_airflow_api",
        "host": "http://127.0.0.1:9",
        "login": "u",
        "password": "s3cret-pass",
    }
)


@pytest.fixture
def unreachable_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PREDICTIVE_AIRFLOW_API_DEFAULT", UNREACHABLE)
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__STORE_PATH", str(tmp_path / "profile.db"))


def test_trigger_serializes_to_json_and_times_out_with_the_reason(unreachable_api) -> None:
    trigger = BehaviorProfilerTrigger(
        api_conn_id="predictive_airflow_api_default",
        window_start="2026-03-02T09:00:00+00:00",
        window_end="2026-03-02T10:00:00+00:00",
        queue_pools={"q": "p"},
        poke_interval=0.1,
        timeout=0.5,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_predictive.triggers.behavior_profiler.BehaviorProfilerTrigger"
    assert BehaviorProfilerTrigger(**json.loads(json.dumps(kwargs))).serialize() == (classpath, kwargs)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first_event())
    assert payload["status"] == "error"
    assert "REST API stayed unreachable" in payload["message"] and "127.0.0.1:9" in payload["message"]
    assert "s3cret-pass" not in payload["message"]


def test_sensor_times_out_naming_the_unreachable_api(unreachable_api) -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout

    sensor = BehaviorProfilerSensor(
        task_id="profile", poke_interval=0.1, timeout=0.5, mode="poke", window=timedelta(minutes=5)
    )
    context = {"data_interval_end": datetime(2026, 3, 2, 10, tzinfo=UTC), "ti": None}
    with pytest.raises(AirflowSensorTimeout, match="REST API .* was unreachable: .*127.0.0.1:9"):
        sensor.execute(context)


def test_sensor_rejects_an_empty_window() -> None:
    with pytest.raises(ValueError, match="window must be positive"):
        BehaviorProfilerSensor(task_id="bad", window=timedelta(0))


def test_seed_history_writes_history_demand_and_summaries(tmp_path: Path, capsys) -> None:
    from airflow_predictive.store import ProfileStore

    path = tmp_path / "demo.db"
    code = main(
        [
            "seed-history",
            "--store",
            str(path),
            "--days",
            "3",
            "--now",
            "2026-03-04T12:00:00+00:00",
            "--interval-minutes",
            "15",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["generated"] is True and out["task_runs"] > 100
    store = ProfileStore.sqlite(path)
    assert "pool=etl/resource=cpu" in store.series_ids()
    assert store.summaries("users")
    store.dispose()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["seed-history", "--days", "0"], "--days must be at least 1"),
        (["seed-history", "--now", "yesterday"], "Invalid isoformat"),
        (["profile", "--api-url", "127.0.0.1:8080", "--username", "u"], "must start with http"),
        (["profile", "--api-url", "http://127.0.0.1:9", "--queue-pool", "nopool"], "QUEUE=POOL"),
        (["bench", "sampler", "--intervals", "0"], "--intervals must be positive"),
    ],
)
def test_bad_input_is_one_clear_message_and_exit_code_2(argv, message, tmp_path: Path, capsys) -> None:
    if argv[0] in ("seed-history", "profile"):
        argv = [*argv, "--store", str(tmp_path / "s.db")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_queues_map_to_the_pools_of_the_pools_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pools_file = tmp_path / "pools.yaml"
    example = Path(__file__).resolve().parents[2] / "airflow_predictive" / "contracts" / "example_pools.yaml"
    pools_file.write_text(example.read_text())
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__POOLS_FILE", str(pools_file))
    mapping = config.configured_queue_pools()
    assert mapping and all(pool and queue for queue, pool in mapping.items())
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__POOLS_FILE", str(tmp_path / "missing.yaml"))
    assert config.configured_queue_pools() is None

"""Queue wait as a pool's service signal: measured per try, stored every cycle, judged against a target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from airflow.sdk import BaseNotifier

from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.feedback import service_level
from airflow_predictive.profiling.queue_wait import queue_waits, wait_stats
from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy, run_feedback_cycle
from airflow_predictive.runtime.profile_refresh import refresh_profile

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def tries(queue: str, count: int, wait_s: float, *, minutes_ago: float = 30, dag: str = "d") -> list[dict]:
    """``count`` one-minute tries of ``queue`` that started ``minutes_ago`` after waiting ``wait_s``."""
    start = NOW - timedelta(minutes=minutes_ago)
    return [
        {
            "dag_id": dag,
            "run_id": f"r-{queue}",
            "task_id": "t",
            "map_index": i,
            "try_number": 1,
            "state": "success",
            "queue": queue,
            "queued_at": start - timedelta(seconds=wait_s),
            "start_date": start,
            "end_date": start + timedelta(minutes=1),
            "duration": 60.0,
        }
        for i in range(count)
    ]


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for column in ("queued_at", "start_date", "end_date"):
        df[column] = pd.to_datetime(df[column], utc=True)
    return df


def test_each_try_waits_from_its_queued_time_to_its_start_in_its_queues_pool():
    rows = tries("io_q", 19, 5.0) + tries("io_q", 1, 95.0) + tries("etl", 3, 40.0, minutes_ago=90)
    waits = queue_waits(frame(rows), start=NOW - timedelta(hours=1), end=NOW, queue_pools={"io_q": "io"})
    assert set(waits["pool"]) == {"io"}  # etl's tries started before the window
    stats = wait_stats(waits["wait_s"])
    assert stats["tasks"] == 20 and stats["wait_p50_s"] == 5.0 and stats["wait_max_s"] == 95.0
    assert stats["waited_long_share"] == 0.05  # one try in twenty waited over 30 s
    assert stats["wait_p95_s"] == pytest.approx(9.5)  # numpy's linear interpolation between 5 and 95
    assert wait_stats([])["wait_p95_s"] is None


class FileNotifier(BaseNotifier):
    """Writes each alert's message to a file (a real notifier; SMTP and Slack need a network)."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path

    def notify(self, context) -> None:
        alert = context["predictive_alert"]
        with open(self.path, "a") as handle:
            handle.write(f"{alert['kind']}|{alert['message']}\n")


def test_the_feedback_cycle_stores_each_pools_queue_wait_and_alerts_when_a_target_is_missed(store, tmp_path):
    # io waits 90 s (target 60 s: missed); etl 5 s (met); quiet's 5 slow tries are too few to judge
    store.upsert_task_runs(tries("io", 30, 90.0) + tries("etl", 30, 5.0) + tries("quiet", 5, 300.0))
    sent = tmp_path / "alerts.txt"
    result = run_feedback_cycle(
        store,
        now=NOW,
        notifiers={service_level.QUEUE_WAIT_ABOVE_TARGET: FileNotifier(sent)},
        emit_metrics=False,
        policy=FeedbackPolicy(queue_wait_targets={"io": 60.0, "etl": 60.0, "quiet": 60.0}),
    )

    stored = store.evaluations(
        ["pool=io/resource=slots", "pool=etl/resource=slots", "pool=quiet/resource=slots"]
    )
    by = stored.pivot_table(index="series_id", columns="metric", values="value", aggfunc="last")
    assert by.loc["pool=io/resource=slots", service_level.QUEUE_WAIT_P95] == 90.0
    assert by.loc["pool=io/resource=slots", service_level.QUEUE_WAITED_LONG] == 1.0
    assert by.loc["pool=etl/resource=slots", service_level.QUEUE_WAIT_P95] == 5.0
    assert by.loc["pool=io/resource=slots", service_level.QUEUE_WAIT_TARGET_MET] == 0.0
    assert by.loc["pool=etl/resource=slots", service_level.QUEUE_WAIT_TARGET_MET] == 1.0
    assert pd.isna(by.loc["pool=quiet/resource=slots"].get(service_level.QUEUE_WAIT_TARGET_MET))
    assert by.loc["pool=quiet/resource=slots", service_level.QUEUE_WAIT_TASKS] == 5.0

    (alert,) = [a for a in result.alerts if a.kind == service_level.QUEUE_WAIT_ABOVE_TARGET]
    assert [p["pool"] for p in alert.details["pools"]] == ["io"]
    assert sent.read_text().strip() == ("queue_wait_above_target|io: p95 90 s over 30 tasks, target 60 s")


def test_without_a_target_queue_wait_is_measured_and_never_alerts(store):
    store.upsert_task_runs(tries("io", 30, 600.0))
    result = run_feedback_cycle(store, now=NOW, emit_metrics=False)
    assert not [a for a in result.alerts if a.kind == service_level.QUEUE_WAIT_ABOVE_TARGET]
    stored = store.evaluations(["pool=io/resource=slots"])
    assert service_level.QUEUE_WAIT_TARGET_MET not in set(stored["metric"])
    assert stored[stored["metric"] == service_level.QUEUE_WAIT_P95]["value"].tolist() == [600.0]


def test_a_pool_states_its_queue_wait_target_and_a_bad_one_is_refused():
    base = {
        "name": "io",
        "project": "predictive-test",
        "zone": "us-central1-a",
        "machine_type": "n2-standard-2",
    }
    assert CapacityPool(**base).service_level.queue_wait_p95_seconds is None
    pool = CapacityPool(**base, service_level={"queue_wait_p95_seconds": 60})
    assert pool.service_level.queue_wait_p95_seconds == 60.0
    with pytest.raises(ValueError, match="queue_wait_p95_seconds"):
        CapacityPool(**base, service_level={"queue_wait_p95_seconds": 0})
    with pytest.raises(ValueError, match="queue_wait_p99"):
        CapacityPool(**base, service_level={"queue_wait_p99": 60})


def test_the_profile_refresh_summarises_each_pools_queue_wait_for_the_page(store):
    store.upsert_task_runs(
        tries("io", 20, 45.0, minutes_ago=30) + tries("io", 20, 1.0, minutes_ago=300, dag="older")
    )
    refresh_profile(store, interval=timedelta(minutes=5), now=NOW, end=NOW, summary_days=2)
    recent = store.summaries("queue_pressure")["io"]["queue_wait"]
    assert recent["1h"]["tasks"] == 20 and recent["1h"]["wait_p95_s"] == 45.0
    assert recent["24h"]["tasks"] == 40 and recent["24h"]["waited_long_share"] == 0.5

"""The psutil sampler follows a process tree; the listener records usage and never fails a task."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_predictive.plugins import listener
from airflow_predictive.profiling.sampler import ProcessTreeSampler, summarise

BUSY_CHILD = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: sum(range(5000))"


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def test_sampler_sees_the_cpu_of_a_child_process_and_the_memory_of_the_root() -> None:
    sampler = ProcessTreeSampler(interval=0.25)
    sampler.start()
    block = bytearray(80 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    root_before, children_before = time.process_time(), _children_cpu()
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD])
    while child.poll() is None:  # reaped late: the exited child is a zombie for a while
        time.sleep(0.4)
    samples = sampler.stop()
    del block
    usage = summarise(samples)
    cpu_seconds = sum(s["cpu_cores"] * s["elapsed"] for s in samples)
    child_cpu = _children_cpu() - children_before
    root_cpu = time.process_time() - root_before
    # the child's CPU is counted once, even across the zombie window between its exit and its reaping
    assert child_cpu * 0.8 <= cpu_seconds <= child_cpu + root_cpu + 0.3
    assert usage["cpu_peak"] >= usage["cpu_mean"] > 0.1
    assert usage["rss_peak_mb"] >= 80
    assert len(samples) >= 4 and all(s["hostname"] for s in samples)


def _runtime_ti(task_id: str, try_number: int = 1):
    from airflow.sdk import BaseOperator
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    task = BaseOperator(task_id=task_id, queue="cpu-bound", resources={"cpus": 2, "ram": 1024})
    # Built like the task runner builds it in the worker's task process (no validation needed here).
    return RuntimeTaskInstance.model_construct(
        dag_id="dag",
        run_id="run_1",
        task_id=task_id,
        map_index=-1,
        try_number=try_number,
        hostname="worker-7",
        queue="cpu-bound",
        start_date=datetime.now(UTC),
        task=task,
    )


@pytest.fixture
def store_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def configure(path: Path) -> Path:
        monkeypatch.setenv("AIRFLOW__PREDICTIVE__STORE_PATH", str(path))
        monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL_SECONDS", "0.1")
        monkeypatch.setattr(listener, "_store", None)
        monkeypatch.setattr(listener, "_warned", False)
        return path

    yield configure
    if listener._store is not None:
        listener._store.dispose()


def test_listener_records_samples_and_the_tries_aggregate_usage(store_at, tmp_path: Path) -> None:
    from airflow_predictive.store import ProfileStore

    path = store_at(tmp_path / "profile.db")
    ti = _runtime_ti("work")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    listener.on_task_instance_running(previous_state=None, task_instance=ti)  # resumed: one sampler
    (sampling,) = listener._active.values()
    wall, cpu = time.monotonic(), time.process_time()
    # Work for 1.5 s and until the sampler has taken three samples: on a loaded machine its thread may
    # get fewer turns in 1.5 s than the 0.1 s interval promises (a state, not a duration, ends the loop).
    while time.monotonic() < wall + 1.5 or len(sampling["sampler"].samples) < 3:
        assert time.monotonic() < wall + 60, "the sampler took fewer than three samples in 60 s"
        sum(range(1000))
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    listener.on_task_instance_success(previous_state=None, task_instance=ti)
    store = ProfileStore.sqlite(path)
    runs = store.task_runs()
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["state"] == "success" and row["queue"] == "cpu-bound" and row["hostname"] == "worker-7"
    # CPU seconds, not rates: on a shared machine the share of a core the process gets varies
    recorded_cpu_seconds = row["cpu_mean"] * row["duration"]
    assert 0.6 * cpu <= recorded_cpu_seconds <= cpu + 0.5, (recorded_cpu_seconds, cpu, wall)
    assert row["rss_peak_mb"] > 10
    assert '"cpus": 2' in row["hints"]
    assert len(store.usage_samples()) >= 3
    store.dispose()


def test_listener_on_a_worker_without_store_access_warns_once_and_never_raises(
    store_at, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    store_at(blocker / "sub" / "profile.db")
    caplog.set_level(logging.WARNING, logger=listener.__name__)
    for try_number in (1, 2):
        ti = _runtime_ti("work", try_number)
        listener.on_task_instance_running(previous_state=None, task_instance=ti)
        listener.on_task_instance_failed(previous_state=None, task_instance=ti, error=RuntimeError("x"))
    warnings = [r for r in caplog.records if r.name == listener.__name__]
    assert len(warnings) == 1 and "could not record usage" in warnings[0].getMessage()


def test_listener_ignores_state_changes_marked_in_the_api_server() -> None:
    class OrmTaskInstance:  # what the API server passes when a user marks a state
        dag_id, run_id, task_id, map_index, try_number = "d", "r", "t", -1, 1

    listener.on_task_instance_running(previous_state=None, task_instance=OrmTaskInstance())
    assert not listener._active


def test_long_tasks_flush_samples_while_running_and_none_twice() -> None:
    flushed: list[dict] = []
    sampler = ProcessTreeSampler(interval=0.05, on_flush=flushed.extend, flush_seconds=0.2)
    sampler.start()
    time.sleep(0.7)
    during = len(flushed)
    samples = sampler.stop()
    assert during >= 3  # visible before the task ends
    assert sampler.flushed == len(flushed) <= len(samples)
    assert [s["ts"] for s in flushed] == [s["ts"] for s in samples[: len(flushed)]]

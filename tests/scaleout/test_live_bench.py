"""``bench live``'s short version: a scheduled run's first stage finds its worker waiting under
``predictive``, and waits for one under ``queue`` (KEDA's rule).

The benchmark's own harness (``airflow_predictive_tools.bench.live``) runs once for the module: real
Airflow with CeleryExecutor on PostgreSQL and Redis, the Compute Engine emulator as its own process
whose RUNNING VMs run real Celery workers (10 s boot here), the control-loop DAG
(``dags/predictive_scaling.py``) for ``predictive`` and the bench's 5-second KEDA loop for ``queue``,
side by side on one deployment. The workload: one scheduled DAG whose first run is the first whole
minute after the control loop's first cycle can have booted a VM. Every process is stopped by its PID.
"""

from __future__ import annotations

import pytest

from tests.services import ensure_postgres, redis_database

pytestmark = [pytest.mark.celery, pytest.mark.integration]

BROKER_DB = 10


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from airflow_predictive_tools.bench.live import LiveSettings, run
    from airflow_predictive_tools.bench.live_policies import PoolSettings

    settings = LiveSettings(
        policies=("predictive", "queue"),
        minutes=1,
        seed=3,
        boot_seconds=10,
        pools=PoolSettings(lead_minutes=1.5),
        warmup_minutes=1.7,
        drain_minutes=4,
        sample_seconds=2,
        short=True,
    )
    with redis_database(BROKER_DB) as broker:
        yield run(
            settings, home=tmp_path_factory.mktemp("live"), postgres_url=ensure_postgres(), broker_url=broker
        )


def _first_run(live, policy):
    stages = live["policies"][policy]["first_stage"]
    assert len(stages) == 1, live["policies"][policy]
    return stages[0]


def test_predictive_has_the_worker_running_before_the_first_stage_is_queued(live) -> None:
    first = _first_run(live, "predictive")
    assert first["ready_before_queued"], first
    assert live["policies"]["predictive"]["queue_wait"]["tries"] == 3  # extract + a fan-out of two


def test_queue_starts_the_worker_only_after_the_first_stage_is_queued(live) -> None:
    first = _first_run(live, "queue")
    assert first["worker_started"] and not first["ready_before_queued"], first
    assert live["policies"]["queue"]["actions"].get("launch_instances", 0) >= 1


def test_no_task_lost_and_no_busy_vm_released(live) -> None:
    assert live["workload"]["finished"], live["workload"]
    for policy, metrics in live["policies"].items():
        assert metrics["tasks_lost"] == 0, (policy, metrics)
        assert metrics["busy_vms_released"] == 0, (policy, metrics)

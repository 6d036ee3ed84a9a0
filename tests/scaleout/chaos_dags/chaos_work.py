"""Tasks that run for tens of seconds on the pool ``chaos``'s queue: the chaos test's workload."""

from __future__ import annotations

import time
from datetime import timedelta

from airflow.sdk import dag, task

TASKS = 10
SECONDS = 20


@dag(
    dag_id="chaos_work",
    schedule=None,
    catchup=False,
    max_active_tasks=TASKS,
    default_args={"queue": "chaos", "retries": 4, "retry_delay": timedelta(seconds=2)},
)
def chaos_work():
    @task
    def work(k: int) -> int:
        time.sleep(SECONDS)
        return k

    work.expand(k=list(range(TASKS)))


chaos_work()

"""A small workload whose tasks burn measurable CPU and memory, for the profiler's integration test.

Each task returns what it did, measured from inside (wall time, CPU seconds of its process tree,
allocated MB), so the test can compare the profiler's records with the truth.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta

from airflow.sdk import dag, task

BURN_SECONDS = float(os.environ.get("PREDICTIVE_TEST_BURN_SECONDS", "8"))


def _burn(seconds: float) -> None:
    # Lower priority: on a small shared machine the API server must stay responsive meanwhile.
    os.nice(10)
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        for i in range(20_000):
            total += i * i % 7


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["predictive-test"])
def workload_profiler():
    @task(queue="cpu-bound", resources={"cpus": 1, "ram": 256})
    def burn_cpu() -> dict:
        t0, wall, cpu = time.time(), time.monotonic(), time.process_time()
        _burn(BURN_SECONDS)
        return {
            "wall": time.monotonic() - wall,
            "cpu": time.process_time() - cpu,
            "t0": t0,
            "t1": time.time(),
        }

    @task(queue="memory-bound", resources={"cpus": 0.5, "ram": 1024})
    def hold_memory() -> dict:
        t0, wall = time.time(), time.monotonic()
        block = bytearray(300 * 2**20)
        for i in range(0, len(block), 4096):  # touch every page so it is resident
            block[i] = 1
        time.sleep(BURN_SECONDS)
        del block
        return {"wall": time.monotonic() - wall, "mb": 300, "t0": t0, "t1": time.time()}

    @task(queue="cpu-bound")
    def burn_in_child() -> dict:
        # The busy work runs in a child process: the sampler must follow the process tree.
        t0, wall = time.time(), time.monotonic()
        code = (
            f"import time\nend=time.monotonic()+{BURN_SECONDS}\nwhile time.monotonic()<end: sum(range(10000))"
        )
        os.nice(10)  # inherited by the child
        before = os.times()
        subprocess.run([sys.executable, "-c", code], check=True)
        after = os.times()
        child_cpu = (after.children_user + after.children_system) - (
            before.children_user + before.children_system
        )
        return {"wall": time.monotonic() - wall, "cpu": child_cpu, "t0": t0, "t1": time.time()}

    @task(retries=1, retry_delay=timedelta(seconds=1))
    def flaky(**context) -> dict:
        if context["ti"].try_number == 1:
            raise RuntimeError("first try fails on purpose: the profiler must keep both tries")
        return {"try": context["ti"].try_number}

    # The two CPU burners run one after the other (2 cores, shared): each gets a core to itself.
    burn_cpu() >> burn_in_child()
    hold_memory()
    flaky()


workload_profiler()

"""A simulated day of the control loop: the DAG's own operators, cycle after cycle, on a simulated clock.

The demo cannot wait a day, and ``airflow dags test`` per cycle would spend the day starting Airflow. So
each cycle runs the work of the operators of ``dags/predictive_scaling.py`` (``execute_at``, which their
tasks' ``execute`` calls with the run's time) in order, forecast -> allocate -> evaluate, with the cycle's
time as ``now``: the same store, forecaster, planner, Compute
Engine client against the emulator, and feedback loop. Only the clock is simulated; the profiling step
is the generated history, which the store already holds up to the demo's end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk.log import configure_logging

from airflow_predictive import config
from airflow_predictive.operators.demand_forecast import DemandForecastOperator, series_chunks
from airflow_predictive.operators.forecast_evaluation import ForecastEvaluationOperator
from airflow_predictive.operators.preemptive_allocate import PreemptiveAllocateOperator

#: Order selections per mapped forecast task, as the DAG sets them.
MAX_SELECTIONS = 20


def cycle_times(end: datetime, *, hours: float, every: timedelta) -> list[datetime]:
    """The simulated cycles: ``hours`` before ``end`` up to (not including) ``end``, ``every`` apart.

    :param end: when the simulated day ends (the demo's real control-loop run happens then).
    :param hours: how long the simulated stretch is.
    :param every: the simulated cycle length.
    """
    count = int(timedelta(hours=hours) / every)
    return [end - every * (count - k) for k in range(count)]


def run_day(
    end: datetime,
    *,
    hours: float = 24,
    every: timedelta = timedelta(minutes=60),
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the control loop's forecast, allocate and evaluate at every cycle of the simulated stretch.

    :param end: the end of the stretch (the cycles stop one ``every`` before it).
    :param hours: length of the stretch.
    :param every: simulated cycle length (the DAG's schedule is ``[predictive] interval_minutes``; the
        demo runs fewer, longer cycles to fit in its few minutes).
    :param say: where the one-line-per-few-hours progress goes.
    :return: cycles run, allocation failures (recorded in the ledger too), and seconds taken.
    """
    # The operators' task logs (tables per cycle) would bury the demo's account: this process logs
    # warnings only from here on (Airflow's own logging set-up; `airflow dags test` logs as usual).
    configure_logging(log_level="WARNING")
    queue_pools = config.configured_queue_pools()
    chunks = series_chunks(sorted(set(queue_pools.values())) if queue_pools else None)
    started = time.monotonic()
    failures: list[str] = []
    times = cycle_times(end, hours=hours, every=every)
    for k, now in enumerate(times):
        failure = _cycle(now, chunks)
        if failure:
            failures.append(f"{now:%H:%M}: {failure}")
        if k % max(1, len(times) // 6) == 0 or k == len(times) - 1:
            say(f"   cycle {k + 1:>3}/{len(times)} at {now:%Y-%m-%d %H:%M} UTC")
    return {"cycles": len(times), "failures": failures, "seconds": round(time.monotonic() - started, 1)}


def _cycle(now: datetime, chunks: list[list[str]]) -> str | None:
    """One control-loop cycle at ``now``; an allocation failure is returned (the loop goes on, as the DAG)."""
    for i, chunk in enumerate(chunks):
        DemandForecastOperator(
            task_id=f"forecast_{i}", series_ids=chunk, max_selections=MAX_SELECTIONS
        ).execute_at(now)
    failure = None
    try:
        PreemptiveAllocateOperator(task_id="allocate").execute_at(now)
    except RuntimeError as exc:  # failed actions: recorded in the ledger, the next cycle converges
        failure = str(exc)
    ForecastEvaluationOperator(task_id="evaluate").execute_at(now)
    return failure

"""Task tries replayed through a fleet's worker slots: the queue wait a sizing rule would have given.

A pool's unmet slot demand says how many tasks found no free slot, not how long they waited; a
queue-wait service level (``queue_wait_p95_seconds``) is about the wait. So the choice replays the
pool's recorded tries, each at its queued time and for its own run time, through the slots a
candidate's fleet held step by step, first in first out (a Celery worker takes the oldest queued
message when a slot frees), and reads each try's wait. A try starts once the slots running tries hold
leave room for it; a step with fewer slots than are busy stops nothing (the release protocol never
stops a busy worker), it only starts nothing.

What it does not model: a downstream task is queued when its upstream ends, so a wait upstream delays
its arrival; replayed at its recorded time it arrives as early as it did on the fleet that ran it.

What Airflow adds beyond the slots: a try with a free slot still waits for the scheduler to send it
and a worker to take it, and a worker booting counts as held before it serves. :func:`pickup_s`
measures that on the pool's own tries: their measured waits against their replay on the fleet the
pool really held, over the same window (bench live, 2026-12-07: the replay read 3-6 s low where no try
lacked a slot, 8-10% low where tries waited for capacity).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

#: Slots a try may exceed the free ones by and still start: float noise.
_EPS = 1e-9


@dataclass(frozen=True)
class Tries:
    """A pool's task tries over a replayed window, in seconds from the window's first step.

    :param queued_s: when each try was queued (negative: before the window; it then holds its slots
        from the window's start for what was left of its run).
    :param run_s: how long each ran (queued to start is the wait the replay decides).
    :param slots: slots each holds while queued and running (its ``pool_slots``, as the demand series
        counts them).
    :param slots_per_instance: task slots one of the pool's instances brings.
    :param waited_s: each try's measured wait, queued to started (NaN: not started, or not recorded;
        None: none measured).
    """

    queued_s: np.ndarray
    run_s: np.ndarray
    slots: np.ndarray
    slots_per_instance: float
    waited_s: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.queued_s)
        if len(self.run_s) != n or len(self.slots) != n:
            raise ValueError("queued_s, run_s and slots must hold one value per try")
        if self.waited_s is not None and len(self.waited_s) != n:
            raise ValueError("waited_s must hold one value per try")


def replay_waits(tries: Tries, instances: np.ndarray, step_s: float) -> np.ndarray:
    """Each try's wait (seconds) on a fleet of ``instances`` per step, first in first out.

    A try still waiting when the window ends waited until then (a lower bound of its wait).

    :param tries: the pool's tries.
    :param instances: instances serving in each step of the window.
    :param step_s: step width in seconds.
    """
    # plain floats: the loop runs once per try and candidate, and numpy scalars would triple its cost
    capacity = (np.asarray(instances, dtype=float) * tries.slots_per_instance).tolist()
    end_s = len(capacity) * step_s
    order = np.argsort(tries.queued_s, kind="stable")
    queued, run, slots = (
        np.asarray(a, dtype=float)[order].tolist() for a in (tries.queued_s, tries.run_s, tries.slots)
    )
    waits = []
    busy: list[tuple[float, float]] = []  # (ends at, slots)
    used = 0.0
    head = 0.0  # the previous try's start: none starts before an older one
    for arrived, ran, need in zip(queued, run, slots, strict=True):
        arrived = max(arrived, 0.0)
        t = max(arrived, head)
        while True:
            while busy and busy[0][0] <= t:
                used -= heapq.heappop(busy)[1]
            if t >= end_s:
                break
            if used + need <= capacity[int(t // step_s)] + _EPS:
                heapq.heappush(busy, (t + ran, need))
                used += need
                break
            # the next moment slots may free: a try ends or a new step brings more instances
            t = min(busy[0][0] if busy else math.inf, (math.floor(t / step_s) + 1) * step_s)
        waits.append(min(t, end_s) - arrived)
        head = t
    out = np.empty(len(order))
    out[order] = waits
    return out


#: Fewest tries measured and replayed a pickup needs; fewer, and none is added.
MIN_PICKUP_TRIES = 20


def pickup_s(tries: Tries, held: np.ndarray | None, step_s: float, scored: np.ndarray) -> float:
    """Seconds by which Airflow's measured queue-wait p95 exceeded the replay's on the fleet the pool
    really held (0: it did not, or too little to tell). A candidate's replayed p95 plus this is what
    the pool's users would have measured on it.

    A difference of p95s, not of each try's waits: the replay is FIFO across the pool, Airflow is not
    quite, so a try's own two waits need not pair up, while the two distributions' tails do.

    :param tries: the pool's tries, with their measured waits.
    :param held: instances the pool held in each step of the window (NaN: not recorded).
    :param step_s: step width in seconds.
    :param scored: which tries are judged (queued in the scored steps).
    """
    if held is None or tries.waited_s is None:
        return 0.0
    held = np.asarray(held, dtype=float)
    if held.size == 0 or np.isnan(held).any():
        return 0.0  # a step of unknown fleet: no replay of what the pool held
    measured = np.asarray(tries.waited_s, dtype=float)
    both = np.asarray(scored, dtype=bool) & np.isfinite(measured)
    if both.sum() < MIN_PICKUP_TRIES:
        return 0.0
    replayed = replay_waits(tries, held, step_s)
    gap = float(np.quantile(measured[both], 0.95) - np.quantile(replayed[both], 0.95))
    return max(0.0, gap)

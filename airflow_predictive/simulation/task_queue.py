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
    """

    queued_s: np.ndarray
    run_s: np.ndarray
    slots: np.ndarray
    slots_per_instance: float

    def __post_init__(self) -> None:
        n = len(self.queued_s)
        if len(self.run_s) != n or len(self.slots) != n:
            raise ValueError("queued_s, run_s and slots must hold one value per try")


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

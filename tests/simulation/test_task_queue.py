"""Task tries replayed through a fleet's worker slots: each try's queue wait, first in first out."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.simulation.task_queue import Tries, replay_waits

STEP = 300.0


def tries(
    queued: list[float], run: list[float], slots: list[float] | None = None, per_instance: float = 1.0
) -> Tries:
    return Tries(np.array(queued), np.array(run), np.array(slots or [1.0] * len(queued)), per_instance)


def test_a_try_that_finds_every_slot_busy_waits_until_the_first_one_frees():
    waits = replay_waits(tries([0, 10, 20], [100, 100, 100]), np.array([2, 2]), STEP)
    # two slots: the third try waits for the first to end at 100 s
    assert waits.tolist() == pytest.approx([0, 0, 80])


def test_a_try_queued_on_an_empty_fleet_waits_for_the_step_that_brings_an_instance():
    # no instance until the second step (a boot): queued at 30 s, it starts at 300 s
    waits = replay_waits(tries([30], [60]), np.array([0, 1, 1]), STEP)
    assert waits.tolist() == pytest.approx([270])


def test_a_smaller_fleet_stops_no_running_try_it_only_starts_none():
    # one try runs from 0 to 500 s; the fleet shrinks to zero at 300 s and is back at 600 s
    waits = replay_waits(tries([0, 310], [500, 10]), np.array([1, 0, 1]), STEP)
    assert waits.tolist() == pytest.approx([0, 290])  # the first was not stopped; the second waits for 600 s


def test_the_oldest_try_starts_first_even_when_a_younger_one_would_fit():
    # worker slots: 2 per instance. The two-slot try waits for both (from 100 s, runs to 300 s); the
    # one-slot try behind it, which would fit in the free slot at 20 s, does not jump the queue.
    got = replay_waits(tries([0, 10, 20], [100, 200, 10], [1, 2, 1], per_instance=2), np.array([1, 1]), STEP)
    assert got.tolist() == pytest.approx([0, 90, 280])


def test_a_try_still_waiting_when_the_window_ends_waited_until_then():
    waits = replay_waits(tries([0, 100], [1000, 5]), np.array([1, 1]), STEP)
    assert waits.tolist() == pytest.approx([0, 500])


def test_tries_and_their_run_times_must_pair_up():
    with pytest.raises(ValueError, match="one value per try"):
        Tries(np.zeros(2), np.zeros(1), np.ones(2), 1.0)

"""Task tries replayed through a fleet's worker slots: each try's queue wait, first in first out."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.simulation.task_queue import MIN_PICKUP_TRIES, Tries, pickup_s, replay_waits

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


def _measured(waited: list[float], queued: list[float] | None = None) -> Tries:
    queued = queued if queued is not None else [60.0 * i for i in range(len(waited))]
    return Tries(np.array(queued), np.full(len(waited), 10.0), np.ones(len(waited)), 1.0, np.array(waited))


def test_airflows_pickup_is_what_its_measured_waits_exceed_the_replay_by_on_the_fleet_it_held():
    # one ten-second try a minute on a worker that was always free: the replay says none waited, and
    # Airflow measured 3 s for most and 12 s for the slowest of them
    waited = [3.0] * 38 + [12.0] * 2
    tries = _measured(waited)
    held = np.ones(10)
    scored = np.ones(40, bool)
    assert replay_waits(tries, held, STEP).max() == 0.0
    assert pickup_s(tries, held, STEP, scored) == pytest.approx(np.quantile(waited, 0.95))
    # where the replay itself makes tries wait (no instance for the first 5 minutes), only the rest
    no_fleet_first = np.r_[0.0, np.ones(9)]
    replayed = replay_waits(tries, no_fleet_first, STEP)
    slow = [w + r for w, r in zip(waited, replayed, strict=True)]
    got = pickup_s(_measured(slow), no_fleet_first, STEP, scored)
    assert got == pytest.approx(np.quantile(slow, 0.95) - np.quantile(replayed, 0.95))


def test_no_pickup_without_enough_measured_tries_a_recorded_fleet_or_a_replay_that_read_low():
    held = np.ones(10)
    few = _measured([30.0] * (MIN_PICKUP_TRIES - 1) + [float("nan")] * 5)
    assert pickup_s(few, held, STEP, np.ones(MIN_PICKUP_TRIES + 4, bool)) == 0.0
    tries = _measured([30.0] * 40)
    assert pickup_s(tries, np.r_[np.nan, np.ones(9)], STEP, np.ones(40, bool)) == 0.0  # a step unknown
    assert pickup_s(tries, None, STEP, np.ones(40, bool)) == 0.0
    # tries the window does not judge do not count
    assert pickup_s(tries, held, STEP, np.r_[np.ones(10, bool), np.zeros(30, bool)]) == 0.0
    # measured shorter than replayed (the replay's FIFO is stricter than Airflow): nothing taken off
    assert pickup_s(_measured([0.0] * 40), np.zeros(10), STEP, np.ones(40, bool)) == 0.0

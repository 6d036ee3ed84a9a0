"""Sharper tails at short leads: error quantiles conditioned on the block of the day and recent surprises."""

from __future__ import annotations

import numpy as np

from airflow_predictive.forecasting import tails

INTERVAL_S = 300
PERIOD = 288
LEVELS = (0.5, 0.9, 0.95)
#: Bucket number of a UTC midnight (epoch day 19,723 = 2024-01-01).
MIDNIGHT = 19_723 * PERIOD
LEADS = (1, 3, 6, 12)


def _quantiles(errors: np.ndarray) -> list[float]:
    return np.quantile(errors, LEVELS).tolist()


def _hour(buckets: np.ndarray) -> np.ndarray:
    return (buckets % PERIOD) * 24 // PERIOD


def _bursty_errors(days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-step errors of a series that is calm all day but bursts upward from 12:00 to 16:00 UTC."""
    rng = np.random.default_rng(seed)
    buckets = MIDNIGHT + np.arange(days * PERIOD)
    bursty = (_hour(buckets) >= 12) & (_hour(buckets) < 16)
    errors = rng.normal(0.0, 0.1, buckets.size) + np.where(bursty, rng.exponential(1.0, buckets.size), 0.0)
    return buckets, errors


def _learn(buckets: np.ndarray, errors: np.ndarray) -> dict:
    # the same errors at every short lead (independent noise: the lead changes nothing here)
    table = tails.learn(
        {h: (errors[h:], np.arange(h, errors.size)) for h in LEADS},
        surprise=errors,
        buckets=buckets,
        period=PERIOD,
        interval_s=INTERVAL_S,
        quantiles=_quantiles,
    )
    assert table is not None
    return table


def test_a_series_bursty_from_12_to_16_gets_wider_tails_there_and_narrower_elsewhere():
    buckets, errors = _bursty_errors(days=7, seed=3)
    table = _learn(buckets, errors)
    pooled_q90 = float(np.quantile(errors, 0.9))
    calm = np.full(12, float(np.median(errors)))  # a last hour like most: the middle regime

    def q90_at(hour: int) -> float:
        first = MIDNIGHT + 7 * PERIOD + hour * 12  # the day after the window, at ``hour``:00
        return float(tails.offsets(table, surprise=calm, first_bucket=first, steps=24)[1, LEVELS.index(0.9)])

    assert q90_at(13) > 2 * pooled_q90
    for quiet in (2, 8, 20):
        assert q90_at(quiet) < 0.5 * pooled_q90

    # and the held-out day is covered near nominal in the burst hours, which the pooled quantile misses
    held_buckets, held = _bursty_errors(days=14, seed=4)
    in_burst = (_hour(held_buckets) >= 12) & (_hour(held_buckets) < 16)
    assert np.mean(held[in_burst] > pooled_q90) > 0.4
    assert np.mean(held[in_burst] > q90_at(13)) < 0.15


def test_recent_positive_surprises_widen_the_upper_tail_at_the_same_hour():
    """Upward episodes at random hours: after an hour of positive surprises the upper tail is wider."""
    rng = np.random.default_rng(5)
    buckets = MIDNIGHT + np.arange(7 * PERIOD)
    errors = rng.normal(0.0, 0.1, buckets.size)
    for start in rng.choice(buckets.size - 24, size=30, replace=False):
        errors[start : start + 24] += rng.exponential(1.0, 24)  # a two-hour episode
    table = _learn(buckets, errors)
    first = MIDNIGHT + 7 * PERIOD + 10 * 12
    calm = np.zeros(12)
    upward = np.full(12, 1.0)
    q = LEVELS.index(0.95)
    after_calm = tails.offsets(table, surprise=calm, first_bucket=first, steps=24)[1, q]
    after_upward = tails.offsets(table, surprise=upward, first_bucket=first, steps=24)[1, q]
    assert after_upward > 2 * after_calm


def test_short_histories_keep_the_pooled_quantiles():
    buckets, errors = _bursty_errors(days=7, seed=3)
    few = {1: (errors[: tails.MIN_ERRORS - 1], np.arange(1, tails.MIN_ERRORS))}
    assert (
        tails.learn(
            few, surprise=errors, buckets=buckets, period=PERIOD, interval_s=INTERVAL_S, quantiles=_quantiles
        )
        is None
    )


def test_only_leads_up_to_an_hour_are_conditioned():
    assert tails.short_leads(np.array([1, 3, 6, 12, 24, 288]), INTERVAL_S) == [1, 3, 6, 12]
    table = _learn(*_bursty_errors(days=7, seed=3))
    assert tails.offsets(table, surprise=np.zeros(12), first_bucket=MIDNIGHT, steps=288).shape == (
        12,
        len(LEVELS),
    )


def test_the_feedback_loops_width_correction_scales_the_conditional_tails_too(selected, demand, origin):
    """The feedback loop multiplies the stored offsets and records its factor; the conditional table is
    stored as learned, so the forecaster applies the recorded factor to it."""
    forecaster, states = selected
    sid, state = next(iter(states.items()))
    assert "tails" in state["calibration"]
    history = demand[demand["ts"] <= origin]
    window = forecaster.windows(history, origin)[sid]
    before = forecaster.predict_window(window, state)
    corrected = {**state, "calibration": {**state["calibration"], "feedback_factor": 2.0}}
    after = forecaster.predict_window(window, corrected)
    short = max(tails.short_leads(np.array(state["calibration"]["h"]), forecaster.interval_s))
    q99 = forecaster.quantiles.index(0.99)
    np.testing.assert_allclose(
        after.quantiles[:short, q99] - after.mean[:short],
        2.0 * (before.quantiles[:short, q99] - before.mean[:short]),
        rtol=1e-9,
    )


def _nightly_spike_errors(days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-step errors of a series that spikes upward every night from 01:00 to 02:00 UTC only (the
    Alibaba 2018 trace's nightly spikes keep to an hour like this)."""
    rng = np.random.default_rng(seed)
    buckets = MIDNIGHT + np.arange(days * PERIOD)
    spiky = _hour(buckets) == 1
    errors = rng.normal(0.0, 0.1, buckets.size) + np.where(spiky, rng.exponential(1.0, buckets.size), 0.0)
    return buckets, errors


def test_an_hour_that_spikes_every_night_widens_that_hour_and_not_the_rest_of_its_night():
    """Headroom for an hour's spikes is paid only in that hour: the hours beside it keep calm tails."""
    buckets, errors = _nightly_spike_errors(days=7, seed=6)
    table = _learn(buckets, errors)
    calm = np.full(12, float(np.median(errors)))
    q = LEVELS.index(0.9)

    def q90_at(hour: int) -> float:
        first = MIDNIGHT + 7 * PERIOD + hour * 12
        return float(tails.offsets(table, surprise=calm, first_bucket=first, steps=24)[1, q])

    spike_q90 = q90_at(1)
    for beside in (0, 2, 3):
        assert q90_at(beside) < 0.25 * spike_q90
    held_buckets, held = _nightly_spike_errors(days=14, seed=7)
    in_spike = _hour(held_buckets) == 1
    assert np.mean(held[in_spike] > spike_q90) < 0.15


def test_a_table_stored_before_the_factors_were_kept_apart_gives_the_same_offsets():
    """A model state saved by the previous release holds each bucket's scale (block x regime) itself."""
    table = _learn(*_bursty_errors(days=7, seed=3))
    old = {k: v for k, v in table.items() if not k.endswith("_regime")}
    for side in ("up", "down"):
        old[side] = tails._scale(np.array(table[side]), np.array(table[f"{side}_regime"])).tolist()
    for surprise in (np.zeros(12), np.full(12, 1.0)):
        np.testing.assert_allclose(
            tails.offsets(old, surprise=surprise, first_bucket=MIDNIGHT + 13 * 12, steps=24),
            tails.offsets(table, surprise=surprise, first_bucket=MIDNIGHT + 13 * 12, steps=24),
        )

"""A pool whose service-level choice reads the seasonal-naive baseline plans from yesterday's demand,
computed from the store's demand; the choice replays that baseline over the days before, and follows
it where it served the pool's level at less capacity than the forecasts issued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from airflow_predictive.contracts.capacity import PoolState
from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, quantile_column
from airflow_predictive.forecasting.models import BASELINE_DAYS, seasonal_naive_baseline
from airflow_predictive.planning.planner import plan
from airflow_predictive.runtime.allocation_cycle import PlanningInputs
from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy, close_feedback_cycle
from airflow_predictive.runtime.service_level_choice import following, pool_evidence, stored_choices
from airflow_predictive.simulation.choice import SEASONAL_NAIVE, Choice, Score, score_candidates
from tests.allocation.conftest import make_pool

NOW = datetime(2026, 12, 6, 11, 55, tzinfo=UTC)
SID = "pool=etl/resource=cpu"
PER_DAY = 288


def _day() -> np.ndarray:
    """16 vCPUs, and 80 from 12:00 to 12:30 with a few bursts through the day; the same every day."""
    day = np.full(PER_DAY, 16.0)
    day[144:150] = 80.0
    day[np.random.default_rng(2).random(PER_DAY) < 0.05] = 40.0
    return day


def _fill(store, days: float, forecast_scale: float | None = None) -> np.ndarray:
    """``days`` of :func:`_day` up to ``NOW``; forecasts over the last 36 hours (every 5 minutes, six
    buckets ahead) of the demand that followed times ``forecast_scale`` (None: a flat 16 vCPUs)."""
    steps = round(days * PER_DAY)
    ts = pd.date_range(end=NOW, periods=steps + 1, freq="5min", inclusive="left")[-steps:]
    first = int((ts[0] - ts[0].normalize()) / pd.Timedelta("5min"))
    values = np.tile(_day(), int(days) + 2)[first : first + steps]
    store.write_demand(pd.DataFrame({"series_id": SID, "ts": ts, "value": values}))
    rows = []
    for i in range(steps - 36 * 12, steps):
        for lead in range(6):
            ahead = values[min(i + lead, steps - 1)]
            value = 16.0 if forecast_scale is None else ahead * forecast_scale
            row = {"series_id": SID, "issued_at": ts[i], "ts": ts[i] + lead * pd.Timedelta("5min")}
            row.update({"mean": value, "model": "test", "fallback": ""})
            row.update({quantile_column(q): value for q in DEFAULT_QUANTILES})
            rows.append(row)
    store.write_forecasts(pd.DataFrame(rows))
    return values


def _following(pool, candidate: str):
    """The pool as a stored choice of ``candidate`` sizes it (the allocation cycle's ``following``)."""
    scores = (Score("reactive", 0.0, 1.0), Score(candidate, 0.0, 1.0))
    return following(pool, Choice(candidate, 0.0, scores, "test", NOW))


def test_the_baseline_is_yesterdays_demand_with_the_spread_of_its_day_to_day_changes():
    rng = np.random.default_rng(0)
    values = np.tile(_day(), BASELINE_DAYS + 2) + rng.normal(0, 1, PER_DAY * (BASELINE_DAYS + 2))
    got = seasonal_naive_baseline(values, 300, steps=12, levels=(0.5, 0.95))
    np.testing.assert_allclose(got.mean, values[-PER_DAY : -PER_DAY + 12])
    changes = values[-BASELINE_DAYS * PER_DAY :][PER_DAY:] - values[-BASELINE_DAYS * PER_DAY :][:-PER_DAY]
    spread = got.quantiles[:, 1] - got.mean
    assert np.allclose(spread, spread[0]) and abs(spread[0] - np.quantile(changes, 0.95)) < 0.1
    # only the last BASELINE_DAYS days count: an older day of other demand changes nothing
    older = np.r_[np.full(PER_DAY, 500.0), values[-BASELINE_DAYS * PER_DAY :]]
    same = seasonal_naive_baseline(older, 300, steps=12, levels=(0.5, 0.95))
    np.testing.assert_allclose(same.quantiles, got.quantiles)


def test_a_pool_following_the_baseline_holds_yesterdays_noon_peak_the_issued_forecast_missed(store):
    pool = make_pool(lead_time_minutes={"boot": 5})
    _fill(store, days=BASELINE_DAYS + 0.5)  # stored forecasts: a flat 16 vCPUs
    issued = _following(pool, "q0.99 guard 0.9")
    baseline = _following(pool, "yesterday q0.99 guard 0.9")
    assert baseline.policy.forecast == SEASONAL_NAIVE

    def planned(p) -> int:
        inputs = PlanningInputs.read(store, [p], NOW)
        made = plan(inputs.forecast_of(p), PoolState(), p, NOW, recent_demand=inputs.demand_of(p))
        return sum(a.amount for a in made.actions)

    forecast = PlanningInputs.read(store, [baseline], NOW).forecast_of(baseline)
    assert set(forecast["model"]) == {"seasonal_naive"}
    assert pd.Timestamp(forecast["ts"].min()) == pd.Timestamp(NOW).floor("5min")
    # 12:00 was 80 vCPUs yesterday: ten n2-standard-8 before noon, where the issued forecast holds
    # the 16 vCPUs (three with the guard's headroom: 16 / 0.9)
    assert planned(issued) == 3
    assert planned(baseline) >= 10
    # the pool reads the days the baseline needs, not only its stabilisation window
    demand = PlanningInputs.read(store, [baseline], NOW).demand_of(baseline)
    assert pd.to_datetime(demand["ts"], utc=True).min() <= pd.Timestamp(NOW - timedelta(days=BASELINE_DAYS))


def test_the_choice_follows_the_baseline_where_demand_repeats_and_the_forecasts_missed_it(store):
    pool = make_pool(lead_time_minutes={"boot": 5})
    _fill(store, days=BASELINE_DAYS + 2.5, forecast_scale=0.3)
    evidence = pool_evidence(store, pool, now=NOW, interval=timedelta(minutes=5))
    assert evidence is not None and set(evidence.baseline_forecasts) == set(
        range(evidence.start, len(evidence.index))
    )
    by_name = {s.candidate: s for s in score_candidates(evidence)}
    # the issued forecasts, a third of the demand, leave more unmet than the reactive rule; yesterday's
    # demand, the same as today's, leaves none
    assert by_name["q0.99 guard 0.9"].unmet_pct > by_name["reactive"].unmet_pct > 0
    assert by_name["yesterday q0.99 guard 0.9"].unmet_pct == 0.0
    close_feedback_cycle(store, now=NOW, policy=FeedbackPolicy(capacity_pools=(pool,)), emit_metrics=False)
    choice = stored_choices(store)["etl"]
    assert choice.candidate.startswith("yesterday ") and choice.met
    followed = following(pool, choice)
    assert followed.policy.forecast == SEASONAL_NAIVE
    assert f"service-level choice {choice.candidate}" in followed.policy.chosen


def test_without_a_day_of_demand_before_the_replay_the_baseline_is_not_replayed(store):
    """The store's demand starts 16 hours before the first issued forecast: yesterday's demand of the
    first replayed day would be filled gaps, so the baseline's candidates are not replayed."""
    pool = make_pool(lead_time_minutes={"boot": 5})
    _fill(store, days=2.2, forecast_scale=0.3)
    evidence = pool_evidence(store, pool, now=NOW, interval=timedelta(minutes=5))
    assert evidence is not None and evidence.baseline_forecasts == {}
    assert not any(s.candidate.startswith("yesterday ") for s in score_candidates(evidence))

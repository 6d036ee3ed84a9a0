"""The feedback loop makes each pool's service-level choice from the store's demand and issued forecasts,
stores it with its scores and the reactive counterfactual, and the planner follows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.contracts.capacity import PoolState
from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, quantile_column
from airflow_predictive.feedback import learning
from airflow_predictive.feedback.pages import collect, render_page
from airflow_predictive.planning.planner import plan
from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy, close_feedback_cycle
from airflow_predictive.runtime.service_level_choice import (
    SUMMARY_KIND,
    binding_resource,
    due_pools,
    following,
    stored_choices,
)
from airflow_predictive.simulation.choice import TIE_SHARE, Choice, Score
from tests.allocation.conftest import make_pool

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
SID = "pool=etl/resource=cpu"


def _demand(steps: int, bursts: float = 0.05) -> np.ndarray:
    """A daily cycle of 20-100 vCPUs with one-step bursts of +50% in a share ``bursts`` of the steps."""
    hours = np.arange(steps) * 5 / 60
    level = 60.0 - 40.0 * np.cos(2 * np.pi * hours / 24)
    return level * (1 + 0.5 * (np.random.default_rng(1).random(steps) < bursts))


def _fill(
    store, forecast_scale: float, sid: str = SID, demand_scale: float = 1.0, bursts: float = 0.05
) -> None:
    """Two days and a bit of demand (:func:`_demand` x ``demand_scale``); a forecast issued every 5
    minutes over the last 36 hours whose quantiles are the demand that followed, times
    ``forecast_scale``."""
    start = NOW - timedelta(days=2, hours=1)
    ts = pd.date_range(start, NOW, freq="5min", inclusive="left")
    values = _demand(len(ts), bursts) * demand_scale
    store.write_demand(pd.DataFrame({"series_id": sid, "ts": ts, "value": values}))
    rows = []
    for i in range(len(ts) - 36 * 12, len(ts)):
        for lead in range(6):
            value = values[min(i + lead, len(ts) - 1)] * forecast_scale
            row = {"series_id": sid, "issued_at": ts[i], "ts": ts[i] + lead * pd.Timedelta("5min")}
            row.update({"mean": value, "model": "test", "fallback": ""})
            row.update({quantile_column(q): value for q in DEFAULT_QUANTILES})
            rows.append(row)
    store.write_forecasts(pd.DataFrame(rows))


def test_the_loop_chooses_a_forecast_rule_that_saw_the_bursts_stores_it_and_the_planner_follows_it(any_store):
    pool = make_pool(lead_time_minutes={"boot": 5})
    _fill(any_store, forecast_scale=1.0)
    policy = FeedbackPolicy(capacity_pools=(pool,))
    result = close_feedback_cycle(any_store, now=NOW, policy=policy, emit_metrics=False)
    choice = result.choices["etl"]
    assert choice.candidate != "reactive" and choice.met
    stored = any_store.summaries(SUMMARY_KIND)["etl"]
    assert stored["candidate"] == choice.candidate
    reactive = next(s for s in stored["scores"] if s["candidate"] == "reactive")
    chosen = next(s for s in stored["scores"] if s["candidate"] == choice.candidate)
    assert chosen["unmet_pct"] <= reactive["unmet_pct"]
    assert chosen["capacity_hours"] < reactive["capacity_hours"]
    # within a day the choice holds: the next cycle replays nothing
    later = close_feedback_cycle(any_store, now=NOW + timedelta(hours=1), policy=policy, emit_metrics=False)
    assert later.choices == {}
    # the planner sizes the pool by the chosen candidate and says so in the plan and its actions
    followed = following(pool, stored_choices(any_store)["etl"])
    assert followed.policy.quantile == float(choice.candidate.split()[0][1:])
    forecast = any_store.latest_forecasts([SID])
    p = plan(forecast, PoolState(), followed, NOW, recent_demand={"cpu": [60.0]})
    assert f"service-level choice {choice.candidate}" in p.summary["sizing"]
    assert p.actions and f"service-level choice {choice.candidate}" in p.actions[0].reason
    # the pool's page shows the choice against the reactive counterfactual
    data = collect(any_store, now=NOW, configured=[pool])
    learned = data["pools"][0]["learning"]
    assert learned["service_level"] == "unmet demand no higher than the reactive rule's"
    assert learned["sizing_choice"].startswith(
        f"{choice.candidate} (chosen 2026-12-06 12:00 UTC; replayed unmet"
    )
    assert "<th>sizing chosen</th>" in render_page(data, plotly_src="plotly.js")


def test_with_forecasts_far_below_demand_the_pool_runs_the_reactive_rule(store):
    pool = make_pool(lead_time_minutes={"boot": 5})
    _fill(store, forecast_scale=0.3)
    close_feedback_cycle(store, now=NOW, policy=FeedbackPolicy(capacity_pools=(pool,)), emit_metrics=False)
    choice = stored_choices(store)["etl"]
    assert choice.candidate == "reactive"
    p = plan(None, PoolState(), following(pool, choice), NOW, recent_demand={"cpu": [48.0]})
    assert p.summary["sizing"].startswith("reactive rule (recent_demand); service-level choice reactive")
    assert [a.amount for a in p.actions] == [10]  # ceil(48 / (0.6 x 8))


def test_a_pool_bound_by_task_slots_is_chosen_on_its_slots_not_its_cpu(store):
    # I/O-bound tasks on 4-slot workers: 0.4-2 vCPUs of 8 (one VM's worth), 4-20 slots running or
    # queued (1-5 workers). The slots' forecasts sat far below their demand, the cpu's were exact: a
    # choice replayed on cpu would follow a forecast rule that leaves the queue waiting.
    pool = make_pool(lead_time_minutes={"boot": 5}, slots_per_instance=4)
    _fill(store, forecast_scale=1.0, demand_scale=0.02)
    _fill(store, forecast_scale=0.3, sid="pool=etl/resource=slots", demand_scale=0.2)
    close_feedback_cycle(store, now=NOW, policy=FeedbackPolicy(capacity_pools=(pool,)), emit_metrics=False)
    choice = stored_choices(store)["etl"]
    assert (choice.resource, choice.candidate) == ("slots", "reactive")
    # slots are planned full: the reactive rule at less headroom, and forecast rules that differ only by
    # their utilisation, are not replayed; the capacity is the slots' (2 days at 1-5 workers)
    assert {s.candidate for s in choice.scores} == {
        "reactive", "q0.9 guard 0.9", "q0.95 guard 0.9", "q0.99 guard 0.9",
        "q0.95 guard 0.8", "q0.99 guard 0.8", "q0.99 guard 0.7", "q0.8 guard 0.9 floor 1d",
    }  # fmt: skip
    assert 100 < choice.reactive.capacity_hours < 5 * 48
    assert "replayed on slots" in following(pool, choice).policy.chosen
    assert "replayed on slots" in learning.choice_text(store.summaries(SUMMARY_KIND)["etl"])
    # with exact slot forecasts and a pool that buys at most 0.5% unmet, the reactive rule on slots
    # (tasks / slots per worker, no headroom) misses it and the pool follows the cheapest forecast rule
    exact = make_pool(
        name="io", lead_time_minutes={"boot": 5}, slots_per_instance=4, service_level={"unmet_share": 0.005}
    )
    _fill(store, forecast_scale=1.0, sid="pool=io/resource=slots", demand_scale=0.2)
    close_feedback_cycle(store, now=NOW, policy=FeedbackPolicy(capacity_pools=(exact,)), emit_metrics=False)
    chosen = stored_choices(store)["io"]
    # (exact forecasts: the three quantiles at guard 0.9 tie, and a tie goes to the most protective)
    assert (chosen.resource, chosen.candidate, chosen.met) == ("slots", "q0.99 guard 0.9", True)
    assert chosen.reactive.unmet_pct > 0.5 and chosen.scores[1].unmet_pct == 0.0


def test_the_binding_resource_is_the_one_needing_the_most_instances():
    pool = make_pool(slots_per_instance=4)  # n2-standard-8: 8 vCPUs, 32 GiB, 4 slots
    index = pd.date_range(NOW, periods=100, freq="5min")
    observed = pd.DataFrame({"cpu": 24.0, "memory": 64.0, "slots": 8.0}, index=index)  # 3, 2, 2 VMs
    assert binding_resource(observed, pool) == "cpu"
    observed["slots"] = np.r_[np.full(90, 8.0), np.full(10, 40.0)]  # 10 VMs, but only in 10% of it
    assert binding_resource(observed, pool) == "slots"
    observed["slots"] = np.r_[np.full(97, 8.0), np.full(3, 40.0)]  # a spike in 3%: cpu binds the window
    assert binding_resource(observed, pool) == "cpu"
    assert binding_resource(observed[["slots"]], pool) == "slots"
    assert binding_resource(pd.DataFrame(index=index), pool) is None


def test_a_pool_without_a_day_of_issued_forecasts_keeps_its_own_settings(store):
    pool = make_pool(lead_time_minutes={"boot": 5})
    start = NOW - timedelta(days=2)
    ts = pd.date_range(start, NOW, freq="5min", inclusive="left")
    store.write_demand(pd.DataFrame({"series_id": SID, "ts": ts, "value": _demand(len(ts))}))
    result = close_feedback_cycle(
        store, now=NOW, policy=FeedbackPolicy(capacity_pools=(pool,)), emit_metrics=False
    )
    assert result.choices == {} and stored_choices(store) == {}
    assert following(pool, None) is pool


def test_a_days_choices_are_spread_over_the_cycles_oldest_and_new_pools_first():
    pools = [make_pool(name=f"p{i}") for i in range(4)]
    day_old = Choice("reactive", 0.0, (Score("reactive", 0.0, 1.0),), "", NOW - timedelta(days=1, hours=2))
    stale = Choice("reactive", 0.0, (Score("reactive", 0.0, 1.0),), "", NOW - timedelta(days=1))
    fresh = Choice("reactive", 0.0, (Score("reactive", 0.0, 1.0),), "", NOW - timedelta(hours=3))
    stored = {"p0": stale, "p1": fresh, "p3": day_old}
    # 4 pools at 5-minute cycles: one choice a cycle, the pool never chosen first, then the oldest
    assert [p.name for p in due_pools(pools, stored, now=NOW, interval=timedelta(minutes=5))] == ["p2"]
    del stored["p3"], stored["p1"]
    stored["p2"] = fresh
    assert [p.name for p in due_pools(pools, stored, now=NOW, interval=timedelta(minutes=5))] == ["p1"]
    stored["p1"] = stored["p3"] = fresh
    assert [p.name for p in due_pools(pools, stored, now=NOW, interval=timedelta(hours=12))] == ["p0"]


def test_the_replayed_evidence_reaches_back_the_day_a_seasonal_floor_candidate_reads(store):
    """A floor candidate plans from the demand a day before each replayed step: the evidence starts that
    much before the first issued forecast it replays."""
    from airflow_predictive.runtime.service_level_choice import pool_evidence

    pool = make_pool(lead_time_minutes={"boot": 5})
    _fill(store, forecast_scale=1.0)
    evidence = pool_evidence(store, pool, now=NOW, interval=timedelta(minutes=5))
    assert evidence is not None
    assert evidence.index[evidence.start] == pd.Timestamp(NOW - timedelta(hours=36))  # the first forecast
    assert evidence.index[0] <= pd.Timestamp(NOW - timedelta(days=3))  # the window, and a day before it


def test_a_choice_made_on_stuck_days_falls_back_to_the_reactive_rule_once_the_stores_demand_moves(any_store):
    """Two days at one value (an idle pool, a stuck metric): every candidate leaves nothing unmet and the
    choice takes the cheapest. It holds while demand stays; the first bucket off the value puts the pool
    on the reactive rule, in the allocation cycle's read of the choices, until the next choice."""
    from airflow_predictive.runtime.allocation_cycle import as_chosen

    pool = make_pool(lead_time_minutes={"boot": 5})
    ts = pd.date_range(NOW - timedelta(days=2, hours=1), NOW, freq="5min", inclusive="left")
    any_store.write_demand(pd.DataFrame({"series_id": SID, "ts": ts, "value": 40.0}))
    rows = [
        {"series_id": SID, "issued_at": t, "ts": t + lead * pd.Timedelta("5min"), "mean": 42.0}
        | {"model": "test", "fallback": ""}
        | {quantile_column(q): 42.0 for q in DEFAULT_QUANTILES}
        for t in ts[-36 * 12 :]
        for lead in range(6)
    ]
    any_store.write_forecasts(pd.DataFrame(rows))
    close_feedback_cycle(
        any_store, now=NOW, policy=FeedbackPolicy(capacity_pools=(pool,)), emit_metrics=False
    )
    choice = stored_choices(any_store)["etl"]
    assert choice.stuck_value == 40.0 and choice.candidate != "reactive", choice.reason
    page = learning.choice_text(any_store.summaries(SUMMARY_KIND)["etl"])
    assert "replayed days stuck at 40: holds while demand stays there" in page

    def sized(now: datetime) -> str:
        [followed] = as_chosen(any_store, [pool], now=now)
        return followed.policy.chosen

    assert sized(NOW + timedelta(minutes=12)).startswith(f"service-level choice {choice.candidate} of")
    still = pd.DataFrame({"series_id": SID, "ts": [NOW, NOW + timedelta(minutes=5)], "value": 40.0})
    any_store.write_demand(still)
    assert sized(NOW + timedelta(minutes=12)).startswith(f"service-level choice {choice.candidate} of")
    moved = pd.DataFrame({"series_id": SID, "ts": [NOW + timedelta(minutes=10)], "value": 90.0})
    any_store.write_demand(moved)
    words = sized(NOW + timedelta(minutes=17))
    assert words.startswith("service-level choice reactive: demand left 40"), words
    [followed] = as_chosen(any_store, [pool], now=NOW + timedelta(minutes=17))
    p = plan(None, PoolState(), followed, NOW, recent_demand={"cpu": [90.0]})
    assert [a.amount for a in p.actions] == [19]  # ceil(90 / (0.6 x 8)): the reactive rule's headroom
    # the stored choice is unchanged: the fall-back is read from demand, and the next choice replaces it
    assert stored_choices(any_store)["etl"] == choice


def _tries(queue: str, ts: pd.DatetimeIndex, slots: np.ndarray, waited_s: float = 0.0) -> list[dict]:
    """One five-minute try per busy slot of each step, queued at the step's start and started
    ``waited_s`` later: a slot demand series the tries themselves make up."""
    wait = pd.Timedelta(seconds=waited_s)
    return [
        {"dag_id": "d", "run_id": f"{queue}-{i}", "task_id": f"t{k}", "state": "success", "queue": queue}
        | {"queued_at": t, "start_date": t + wait, "end_date": t + wait + pd.Timedelta("5min")}
        for i, (t, n) in enumerate(zip(ts, slots, strict=True))
        for k in range(round(n))
    ]


def _io_pool(store, waited_s: float = 0.0):
    """A worker pool bound by its task slots (4 per worker) whose users were promised a p95 queue wait
    of 2 minutes; bursts of tries in a fifth of the steps, each measured waiting ``waited_s``, and
    exact slot forecasts. Returns the pool and the steps."""
    pool = make_pool(
        name="io",
        lead_time_minutes={"boot": 5},
        slots_per_instance=4,
        service_level={"queue_wait_p95_seconds": 120},
    )
    sid = "pool=io/resource=slots"
    _fill(store, forecast_scale=1.0, sid=sid, demand_scale=0.2, bursts=0.2)
    demand = store.demand([sid]).sort_values("ts")
    ts = pd.DatetimeIndex(pd.to_datetime(demand["ts"], utc=True))
    store.upsert_task_runs(_tries("io", ts, demand["value"].to_numpy(float), waited_s=waited_s))
    return pool, ts


def test_a_queue_wait_level_replays_the_pools_own_tries_and_holds_the_least_capacity_that_met_it(store):
    pool, ts = _io_pool(store)
    # another queue's flood: not the pool's tries, it must not lengthen the pool's replayed waits
    store.upsert_task_runs(_tries("other", ts, np.full(len(ts), 50.0)))
    close_feedback_cycle(store, now=NOW, policy=FeedbackPolicy(capacity_pools=(pool,)), emit_metrics=False)
    choice = stored_choices(store)["io"]
    by_name = {s.candidate: s for s in choice.scores}
    assert all(s.wait_p95_s is not None for s in choice.scores)
    # the reactive rule (tasks / slots, one boot lead behind) leaves a burst's tries waiting a step: it
    # misses the level, and the pool holds the least capacity whose tries waited no longer (a tie within
    # 1% goes to the most protective)
    assert by_name["reactive"].wait_p95_s > 120
    chosen = by_name[choice.candidate]
    assert choice.met and chosen.wait_p95_s <= 120 and choice.candidate != "reactive"
    met = [s.capacity_hours for s in choice.scores if s.wait_p95_s <= 120]
    assert chosen.capacity_hours <= min(met) * (1 + TIE_SHARE)
    text = learning.choice_text(store.summaries(SUMMARY_KIND)["io"])
    assert "replayed queue wait p95" in text and "queue wait p95 at most 120 s" in choice.reason


def test_airflows_pickup_measured_on_the_fleet_the_pool_held_is_added_to_every_replayed_wait(store):
    # the same pool; its tries each measured a 45 s wait while the allocation cycle recorded it holding
    # far more slots than they needed: the 45 s are Airflow's pickup, which no fleet size removes
    pool, ts = _io_pool(store, waited_s=45.0)
    store.record_capacity([{"pool": "io", "resource": "slots", "ts": t, "value": 400.0} for t in ts])
    close_feedback_cycle(store, now=NOW, policy=FeedbackPolicy(capacity_pools=(pool,)), emit_metrics=False)
    choice = stored_choices(store)["io"]
    assert [s.wait_pickup_s for s in choice.scores] == [pytest.approx(45.0)] * len(choice.scores)
    assert all(s.wait_p95_s >= 45.0 for s in choice.scores)
    assert "s of Airflow's pickup" in choice.reason
    text = learning.choice_text(store.summaries(SUMMARY_KIND)["io"])
    assert "(each with 45 s of Airflow's pickup, measured)" in text


def test_the_fleet_the_pool_held_is_read_from_the_allocation_cycles_records(any_store):
    store = any_store
    from airflow_predictive.runtime.service_level_choice import held_instances

    pool = make_pool(name="io", slots_per_instance=4)
    index = pd.date_range(NOW, periods=6, freq="5min")
    store.record_capacity(
        [
            {"pool": "io", "resource": "slots", "ts": NOW - timedelta(minutes=2), "value": 8.0},
            {"pool": "io", "resource": "cpu", "ts": NOW + timedelta(minutes=11), "value": 99.0},
            {"pool": "io", "resource": "slots", "ts": NOW + timedelta(minutes=12), "value": 16.0},
            {"pool": "other", "resource": "slots", "ts": NOW, "value": 400.0},
        ]
    )
    # each record holds until the next: 2 instances (8 slots / 4) until 12:12, then 4
    assert held_instances(store, pool, index).tolist() == [2.0, 2.0, 2.0, 4.0, 4.0, 4.0]
    # before the first record (within the lookback), nothing is known
    later = pd.date_range(NOW - timedelta(minutes=10), periods=3, freq="5min")
    assert np.isnan(held_instances(store, pool, later)[:2]).all()


def test_the_replayed_tries_are_the_pools_own_from_the_windows_start(store):
    from airflow_predictive.runtime.service_level_choice import pool_tries

    pool = make_pool(name="io", slots_per_instance=4, queue="io-queue")
    start, end = pd.Timestamp(NOW - timedelta(hours=2)), pd.Timestamp(NOW)
    minute = timedelta(minutes=1)

    def tried(run_id: str, queue: str, queued, started=None, ended=None, slots=1) -> dict:
        return {"dag_id": "d", "run_id": run_id, "task_id": "t", "queue": queue, "pool_slots": slots} | {
            "queued_at": queued, "start_date": started, "end_date": ended,
        }  # fmt: skip

    store.upsert_task_runs(
        [
            # queued and started before the window, ends 10 minutes into it: holds its slots from the start
            tried("early", "io-queue", start - 30 * minute, start - 20 * minute, start + 10 * minute),
            tried("done", "io-queue", start + 5 * minute, start + 6 * minute, start + 16 * minute, slots=2),
            tried("running", "io-queue", end - 10 * minute, end - 9 * minute),  # runs until the window ends
            tried("waiting", "io-queue", end - 5 * minute),  # never started: the median run, 10 minutes
            tried("other", "default", start + 5 * minute, start + 5 * minute, start + 15 * minute),
        ]
    )
    got = pool_tries(store, pool, start=start, end=end)
    order = np.argsort(got.queued_s)
    assert got.queued_s[order].tolist() == [-1800.0, 300.0, 6600.0, 6900.0]
    assert got.run_s[order].tolist() == [600.0, 600.0, 540.0, 600.0]
    assert got.slots[order].tolist() == [1.0, 2.0, 1.0, 1.0] and got.slots_per_instance == 4.0
    # each try's measured wait, queued to started (none for the one still waiting)
    assert got.waited_s[order][:3].tolist() == [600.0, 60.0, 60.0] and np.isnan(got.waited_s[order][3])

"""Metric definitions and the replay fleet, on hand-made traces with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_predictive import accuracy
from airflow_predictive.simulation import metrics
from airflow_predictive.simulation.backtest import (
    BacktestOptions,
    backtest_resources,
    backtest_trace,
    headline,
)
from airflow_predictive.simulation.policies import OraclePolicy
from airflow_predictive.simulation.replay import Fleet, ReplayContext, replay
from airflow_predictive.simulation.report import markdown_table, write_html, write_json


def test_unmet_and_idle_are_percent_of_total_demand():
    demand = np.array([10.0, 10.0, 20.0, 0.0])
    capacity = np.array([5.0, 15.0, 20.0, 4.0])
    # unmet: 5 at step 0; idle: 5 at step 1 and 4 at step 3; total demand 40.
    assert accuracy.unmet_percent(demand, capacity) == pytest.approx(12.5)
    assert accuracy.idle_percent(demand, capacity) == pytest.approx(22.5)


def test_capacity_hours_count_running_instances_times_interval():
    assert metrics.capacity_hours(np.array([2, 2, 4, 0]), 900) == pytest.approx(2.0)


def test_changes_count_steps_where_the_target_differs_from_the_previous_step():
    assert metrics.changes(np.array([3, 3, 4, 4, 2, 2])) == 2
    assert metrics.changes(np.array([3, 3, 4]), previous=1) == 2


def test_score_prices_capacity_hours_at_standard_and_spot_prices():
    m = metrics.score(
        np.array([1.0, 1.0]),
        np.array([2, 2]),
        np.array([2, 2]),
        instance_capacity=1.0,
        interval_s=3600,
        price_standard=0.5,
        price_spot=0.1,
    )
    assert (m.capacity_hours, m.cost, m.cost_spot) == (4.0, 2.0, pytest.approx(0.4))
    assert m.idle_pct == pytest.approx(100.0)
    assert m.unmet_pct == 0.0


def test_fleet_scale_out_serves_after_the_boot_delay_and_scale_in_cancels_booting_first():
    fleet = Fleet(running=1)
    fleet.resize(4, step=10, boot_steps=2)
    assert (fleet.running, fleet.booting_count) == (1, 3)
    fleet.advance(11)
    assert fleet.running == 1  # still booting: not capacity
    fleet.resize(2, step=11, boot_steps=2)
    assert (fleet.running, fleet.booting_count) == (1, 1)
    fleet.advance(12)
    assert (fleet.running, fleet.booting_count) == (2, 0)
    fleet.resize(0, step=12, boot_steps=2)
    assert fleet.running == 0


class _StepTo:
    """Target 1 instance, then 3 from step 5 on."""

    name = "step"

    def settings(self):
        return {}

    def prepare(self, context):
        pass

    def decide(self, step, fleet):
        return 3 if step >= 5 else 1


def _context(demand, *, start=2, boot_steps=1, capacity=1.0, max_instances=40):
    index = pd.date_range("2024-01-01", periods=len(demand), freq="5min", tz="UTC")
    return ReplayContext(
        demand=np.asarray(demand, dtype=float),
        index=index,
        interval_s=300,
        instance_capacity=capacity,
        boot_steps=boot_steps,
        max_instances=max_instances,
        start=start,
    )


def test_replay_records_running_instances_after_boot_delay():
    context = _context([1.0] * 10, start=2, boot_steps=2)
    result = replay(_StepTo(), context)
    # Scored steps 2..9; the scale-out decided at step 5 serves from step 7.
    assert list(result.targets) == [1, 1, 1, 3, 3, 3, 3, 3]
    assert list(result.running) == [1, 1, 1, 1, 1, 3, 3, 3]


def test_oracle_meets_all_demand_with_the_fewest_instances():
    demand = [1.0, 1.0, 1.0, 3.0, 3.0, 1.0, 1.0, 2.5, 1.0, 1.0]
    result = replay(OraclePolicy(), _context(demand, start=2, boot_steps=1))
    running = result.running
    assert list(running) == [1, 3, 3, 1, 1, 3, 1, 1]
    assert accuracy.unmet_percent(np.array(demand[2:]), running * 1.0) == 0.0


def test_backtest_of_a_known_trace_returns_the_json_contract(tmp_path):
    index = pd.date_range("2024-01-01", periods=4 * 288, freq="5min", tz="UTC")
    demand = pd.Series(10 + 5 * np.sin(np.arange(len(index)) * 2 * np.pi / 288), index=index)
    demand.name = "sine"
    demand.attrs.update(interval_s=300, source="sine.csv")
    options = BacktestOptions(policies=("oracle",), sweep=True, history="3d")
    result = backtest_trace(demand, options)
    assert result["trace"] == "sine"
    assert (result["interval_s"], result["scored_steps"], result["boot_delay_s"]) == (300, 288, 300)
    oracle = result["policies"]["oracle"]
    assert set(oracle) >= {"unmet_pct", "idle_pct", "capacity_hours", "cost", "changes", "settings"}
    assert oracle["unmet_pct"] == 0.0
    # One instance = p99 / 20; the oracle holds ceil(demand / instance) for 24 h.
    instance = float(np.percentile(demand, 99)) / 20
    need = np.ceil(demand.to_numpy()[864:] / instance)
    assert oracle["capacity_hours"] == pytest.approx(need.sum() / 12, rel=0.02)
    write_json([result], tmp_path / "one.json")
    assert json.loads((tmp_path / "one.json").read_text())["trace"] == "sine"
    write_json([result, result], tmp_path / "two.json")
    assert isinstance(json.loads((tmp_path / "two.json").read_text()), list)
    assert "| sine | oracle |" in markdown_table([result])
    write_html([result], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "plotly" in page.lower() and "sine" in page


def test_headline_interpolates_the_frontier_at_reactive_capacity_and_unmet():
    result = {
        "policies": {"reactive": {"capacity_hours": 150.0, "unmet_pct": 2.0}},
        "frontiers": {
            "predictive": [
                {"capacity_hours": 100.0, "unmet_pct": 4.0},
                {"capacity_hours": 200.0, "unmet_pct": 0.0},
            ]
        },
    }
    line = headline(result)
    assert line["unmet_pct_at_reactive_capacity_hours"] == pytest.approx(2.0)
    assert line["capacity_hours_at_reactive_unmet_pct"] == pytest.approx(150.0)


def test_a_pools_recorded_demand_backtests_like_a_trace(store):
    from airflow_predictive.simulation.backtest import backtest_pool_history

    index = pd.date_range("2024-01-01", periods=2 * 288, freq="5min", tz="UTC")
    frame = pd.DataFrame(
        {
            "series_id": "pool=etl/resource=cpu",
            "ts": index,
            "value": 4 + 2 * np.sin(np.arange(len(index)) * 2 * np.pi / 288),
        }
    )
    store.write_demand(frame)
    result = backtest_pool_history(store, "etl", BacktestOptions(policies=("oracle",), history="1d"))
    assert result["trace"] == "pool=etl/resource=cpu"
    assert result["scored_steps"] == 288


def test_targets_table_states_which_target_each_trace_meets():
    from airflow_predictive.simulation.report import targets_table

    def result(name, acf, p, r, s):
        keys = ("capacity_hours", "unmet_pct")
        return {
            "trace": name,
            "daily_autocorrelation": acf,
            "policies": {
                "predictive": dict(zip(keys, p, strict=True)),
                "reactive": dict(zip(keys, r, strict=True)),
                "seasonal": dict(zip(keys, s, strict=True)),
            },
        }

    table = targets_table(
        [
            result("cyclic-ok", 0.8, (70.0, 1.0), (100.0, 1.5), (75.0, 1.2)),
            result("cyclic-miss", 0.8, (70.0, 2.0), (100.0, 1.5), (75.0, 1.2)),
            result("spiky-ok", 0.1, (102.0, 3.0), (100.0, 3.1), (80.0, 5.0)),
        ]
    )
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert rows["cyclic-ok"].rstrip("| ").endswith("yes")
    assert "no: unmet, vs seasonal" in rows["cyclic-miss"]
    assert rows["spiky-ok"].rstrip("| ").endswith("yes")
    assert rows["median of 2 daily-cycle traces"].rstrip("| ").endswith("yes")  # median 0.70x


def test_daily_autocorrelation_separates_cyclic_from_flat_noise():
    from airflow_predictive.simulation.backtest import daily_autocorrelation

    t = np.arange(3 * 288)
    assert daily_autocorrelation(np.sin(2 * np.pi * t / 288), 300) > 0.99
    noise = np.random.default_rng(0).normal(size=t.size)
    assert abs(daily_autocorrelation(noise, 300)) < 0.2


def _pool_series(resource: str, values: np.ndarray) -> pd.Series:
    index = pd.date_range("2024-01-01", periods=len(values), freq="5min", tz="UTC")
    series = pd.Series(values, index=index, name=f"pool=io/resource={resource}")
    series.attrs.update(interval_s=300, source=series.name)
    return series


def test_a_pool_of_io_waits_backtests_as_slot_bound_and_runs_what_its_slots_need():
    steps = np.arange(2 * 288)
    # every 2 hours, 30 tasks wait on I/O for a bucket: 30 slots, 1.5 vCPU; otherwise 2 slots, 0.1 vCPU
    burst = (steps % 24) == 12  # none on the first scored step, which no policy can boot for
    slots = _pool_series("slots", np.where(burst, 30.0, 2.0))
    cpu = _pool_series("cpu", np.where(burst, 1.5, 0.1))
    options = BacktestOptions(policies=("reactive", "oracle"), history="1d")
    result = backtest_resources({"cpu": cpu, "slots": slots}, {"cpu": 2.0, "slots": 4.0}, options)

    assert result["binding"] == "slots"
    oracle = result["policies"]["oracle"]
    # each burst: 8 instances for the slots, 1 for the cpu: 7 instances x 5 minutes x 12 bursts alone
    assert oracle["binding_hours"] == {"cpu": 0.0, "slots": 7.0}
    assert oracle["resources"]["slots"]["unmet_pct"] == 0.0
    # 8 instances for each burst's 30 slots, 1 otherwise: what a 4-slot worker fleet needs
    assert oracle["instance_hours"] == pytest.approx((12 * 8 + 276 * 1) / 12)
    # the reactive rule sees each burst a boot delay late: slots go unmet, cpu never does
    reactive = result["policies"]["reactive"]
    assert reactive["resources"]["slots"]["unmet_pct"] > 0 and reactive["resources"]["cpu"]["unmet_pct"] == 0
    # and plans slots full, as the planner does (tasks / slots per worker): one worker, and 8 for one
    # step after each burst, not the 13 of cpu's 0.6 utilisation (38 instance-hours)
    assert reactive["instance_hours"] == pytest.approx((288 + 12 * 7) / 12)
    # the same slot series with cpu's capacity alone (no slots) would provision 1 instance
    alone = backtest_trace(cpu, BacktestOptions(policies=("oracle",), history="1d", instance_capacity=2.0))
    assert alone["policies"]["oracle"]["capacity_hours"] == pytest.approx(288 / 12)


def test_a_pool_backtest_names_what_it_lacks_and_a_bad_capacity_is_refused():
    slots = _pool_series("slots", np.full(2 * 288, 2.0))
    with pytest.raises(ValueError, match="no capacity per instance for slots"):
        backtest_resources({"slots": slots}, {"cpu": 2.0})
    with pytest.raises(ValueError, match="--instance-capacity must be positive"):
        BacktestOptions(instance_capacity=0.0).validated()


def test_calibration_by_block_compares_each_block_with_sampling_noise():
    from airflow_predictive.simulation.metrics import calibration_by_block

    hours = np.repeat(np.arange(24), 100)
    actual = np.ones(hours.size)
    upper = np.full(hours.size, 2.0)
    # blocks 12-16: 30 of 400 buckets above the forecast (7.5%, within q0.9's 10%); 20-24: 80 (20%)
    upper[np.flatnonzero((hours >= 12) & (hours < 16))[:30]] = 0.5
    upper[np.flatnonzero(hours >= 20)[:80]] = 0.5
    found = calibration_by_block(hours, actual, upper, level=0.9)
    assert found["by_block"]["12-16"] == {
        "exceedance": 0.075,
        "n": 400,
        "noise_bound": 0.13,
        "binomial_bound": 0.13,
    }
    assert found["by_block"]["20-24"]["exceedance"] == 0.2
    assert found["worst_block"] == "20-24" and found["worst_within_noise"] is False
    assert found["exceedance"] == round(110 / 2400, 4)
    # by hour of day too: the first 30 buckets of 12-16 all fall in hour 12, the 80 of 20-24 in hour 20
    assert found["by_hour"]["12-13"]["exceedance"] == 0.3 and found["by_hour"]["13-14"]["exceedance"] == 0.0
    assert found["worst_hour"] == "20-21" and found["by_hour"]["20-21"]["exceedance"] == 0.8
    assert found["hours_beyond_noise"] == 2 and len(found["by_hour"]) == 24


def test_exceedances_that_cluster_by_day_widen_the_noise_bound():
    from airflow_predictive.simulation.metrics import calibration_by_block

    # 20 days x 48 buckets of one block (00-04): 12-13% above q0.9. In "spread" each day has 5 or 6
    # exceedances; in "clustered" two days exceed in nearly every bucket (a level the forecast
    # trailed) and the others in 2 of 48.
    days = np.repeat(np.arange(20), 48)
    hours = np.tile(np.repeat(np.arange(4), 12), 20)
    spread = np.zeros(days.size, bool)
    for d in range(20):
        spread[d * 48 : d * 48 + (6 if d < 16 else 5)] = True
    clustered = np.zeros(days.size, bool)
    clustered[: 2 * 48 - 11] = True  # 85 of the first two days' 96
    for d in range(2, 20):
        clustered[d * 48 : d * 48 + 2] = True  # 36 more: 121 of 960 in all (spread: 116)
    for hit, within in ((spread, False), (clustered, True)):
        found = calibration_by_block(hours, np.where(hit, 2.0, 0.0), np.ones(days.size), level=0.9, days=days)
        block = found["by_block"]["00-04"]
        # independent buckets: 0.1 + 2 sqrt(0.09 / 960) = 0.1194; both rates are above it
        assert block["binomial_bound"] == 0.1194 and block["exceedance"] > 0.1194
        assert found["worst_within_binomial"] is False and found["worst_within_noise"] is within
    # spread evenly, the days vary less than independent buckets would: the binomial bound holds
    assert (
        calibration_by_block(hours, spread * 2.0, np.ones(days.size), level=0.9, days=days)["by_block"][
            "00-04"
        ]["noise_bound"]
        == 0.1194
    )
    # two days of 85 of 96 carry the rate: the day-to-day spread is the noise, 20x the binomial's variance
    block = calibration_by_block(hours, clustered * 2.0, np.ones(days.size), level=0.9, days=days)[
        "by_block"
    ]["00-04"]
    assert block["noise_bound"] > 0.15 and block["design_effect"] > 10


def test_the_backtest_reports_calibration_across_the_day_at_the_boot_lead():
    """Demand that is calm all day but bursty from 12:00 to 16:00: the backtest scores the q0.9 and q0.95
    the predictive policy issued one boot lead ahead, by 4-hour block and by hour, and the markdown
    names the worst of each. (Whether the tails are sharp enough is measured on the shared traces and
    unit-tested in tests/forecasting/test_tails.py: one scored day is too few buckets to judge here.)"""
    rng = np.random.default_rng(7)
    index = pd.date_range("2024-01-01", periods=4 * 288, freq="5min", tz="UTC")
    hour = index.hour.to_numpy()
    bursty = (hour >= 12) & (hour < 16)
    values = 10 + 4 * np.sin(np.arange(len(index)) * 2 * np.pi / 288)
    values = values + rng.normal(0, 0.3, len(index)) + np.where(bursty, rng.exponential(4.0, len(index)), 0)
    demand = pd.Series(values, index=index, name="bursty")
    demand.attrs.update(interval_s=300, source="bursty.csv")
    result = backtest_trace(demand, BacktestOptions(policies=("predictive",), history="3d"))
    calibration = result["policies"]["predictive"]["calibration"]
    assert set(calibration) == {"q0.9", "q0.95"}
    q90 = calibration["q0.9"]
    # every scored step but the first: the forecasts issued in the scored day target the steps after
    assert sum(b["n"] for b in q90["by_block"].values()) == 288 - 1
    assert sum(h["n"] for h in q90["by_hour"].values()) == 288 - 1
    from airflow_predictive.simulation.report import calibration_table

    worst, hour = q90["worst_block"], q90["worst_hour"]
    assert (
        f"| bursty | {result['daily_autocorrelation']:.2f} | q0.9 | {q90['exceedance']} | {worst} | "
        f"{q90['by_block'][worst]['exceedance']} | {q90['by_block'][worst]['noise_bound']} | "
        f"{q90['by_block'][worst]['binomial_bound']} | {q90['by_block'][worst].get('design_effect', '-')} | {hour} | "
        f"{q90['by_hour'][hour]['exceedance']} | {q90['by_hour'][hour]['noise_bound']} | "
        f"{q90['hours_beyond_noise']} |"
    ) in calibration_table([result])

"""The policies run the production planner and forecaster, and the command behaves on good and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.cli import main
from airflow_predictive.forecasting.engine import Forecaster
from airflow_predictive.planning import planner
from airflow_predictive.simulation.policies import (
    PredictivePolicy,
    ReactivePolicy,
    SeasonalPolicy,
)
from airflow_predictive.simulation.replay import ReplayContext, replay


def _context(demand, *, start, boot_steps=1, capacity=1.0):
    index = pd.date_range("2024-01-01", periods=len(demand), freq="5min", tz="UTC")
    return ReplayContext(
        demand=np.asarray(demand, dtype=float),
        index=index,
        interval_s=300,
        instance_capacity=capacity,
        boot_steps=boot_steps,
        max_instances=40,
        start=start,
    )


def _daily(days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * 288)
    return 10 + 6 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.5, t.size).clip(-1, 1)


@pytest.fixture
def planner_calls(monkeypatch):
    calls = []
    real = planner.plan

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(planner, "plan", spy)
    return calls


def test_reactive_is_the_gce_rule_run_by_the_production_planner(planner_calls):
    # Demand 3 for a while, then 6: GCE wants ceil(6 / (0.6 * 1)) = 10 instances, at once.
    demand = [3.0] * 10 + [6.0] * 6 + [3.0] * 8
    result = replay(ReactivePolicy(), _context(demand, start=5))
    targets = list(result.targets)
    assert targets[0] == math.ceil(3 / 0.6)
    assert targets[6] == 10  # step 11 sees demand 6 at step 10
    # Scale-in waits for the 10-minute stabilisation window (two 5-minute buckets) to clear.
    drop = targets.index(5, 7)
    assert drop - 11 >= 2
    assert len(planner_calls) == len(targets)
    assert all("recent_demand" in c for c in planner_calls)


def test_seasonal_policy_plans_from_the_seasonal_naive_baseline(planner_calls):
    demand = _daily(2)
    result = replay(SeasonalPolicy(), _context(demand, start=288, capacity=1.0))
    assert len(planner_calls) == 288
    assert all(isinstance(c, dict) for c in planner_calls)
    # Yesterday's shape carries over: capacity follows the daily cycle.
    assert result.running.max() - result.running.min() >= 8


def test_predictive_calls_the_production_forecaster_and_planner(monkeypatch, planner_calls):
    selected, predicted = [], []
    real_select, real_predict = Forecaster.select, Forecaster.predict_window

    def select(self, *args, **kwargs):
        selected.append(1)
        return real_select(self, *args, **kwargs)

    def predict(self, *args, **kwargs):
        predicted.append(1)
        return real_predict(self, *args, **kwargs)

    monkeypatch.setattr(Forecaster, "select", select)
    monkeypatch.setattr(Forecaster, "predict_window", predict)
    demand = _daily(3, seed=1)[: 2 * 288 + 48]
    policy = PredictivePolicy()
    result = replay(policy, _context(demand, start=2 * 288))
    assert selected == [1]
    assert len(predicted) == 48 and len(planner_calls) == 48
    settings = policy.settings()
    assert settings["forecaster"] == "airflow_predictive.forecasting.engine.Forecaster"
    assert settings["planner"] == "airflow_predictive.planning.planner.plan"
    assert settings["quantile"] == 0.9  # the product default, not tuned here
    assert result.running.min() >= 1


def test_backtest_command_writes_json_and_report(tmp_path, capsys):
    index = pd.date_range("2024-01-01", periods=4 * 288, freq="5min")
    trace = tmp_path / "daily.csv"
    pd.DataFrame({"timestamp": index, "value": _daily(4)}).to_csv(trace, index=False)
    out, page = tmp_path / "bt.json", tmp_path / "bt.html"
    code = main(
        [
            "backtest",
            str(trace),
            "--policies",
            "reactive,oracle",
            "--json",
            str(out),
            "--report",
            str(page),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["trace"] == "daily" and result["scored_steps"] == 288
    assert set(result["policies"]) == {"reactive", "oracle"}
    reactive, oracle = result["policies"]["reactive"], result["policies"]["oracle"]
    assert oracle["capacity_hours"] < reactive["capacity_hours"]
    assert "reactive" in capsys.readouterr().out
    assert page.stat().st_size > 100_000  # plotly.js embedded: opens offline


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("timestamp,value\n2024-01-01 00:00,1\n2024-01-01 00:05,2\n", "fewer|not more than the history"),
        ("timestamp,value\n2024-01-01 00:00,x\n", "not numeric"),
    ],
)
def test_backtest_command_bad_input_exits_2_naming_file_and_problem(tmp_path, capsys, content, message):
    path = tmp_path / "t.csv"
    if content is not None:
        path.write_text(content)
    assert main(["backtest", str(path)]) == 2
    err = capsys.readouterr().err
    assert "t.csv" in err
    assert any(m in err for m in message.split("|"))


def test_without_a_daily_cycle_the_forecast_policies_fall_back_to_reactive_targets():
    # Noise around a level, with bursts: nothing recurs a day later, so prediction cannot help and the
    # production planner follows the reactive rule: the very targets the reactive baseline sets.
    rng = np.random.default_rng(3)
    demand = 10 + rng.gamma(2.0, 2.0, 4 * 288)
    demand[rng.choice(demand.size, 40, replace=False)] += 25
    context = _context(demand, start=3 * 288)
    reactive = replay(ReactivePolicy(), context)
    policy = SeasonalPolicy()
    seasonal = replay(policy, context)
    assert list(seasonal.targets) == list(reactive.targets)
    assert policy.settings()["steps_by_rule"] == {"reactive": 288}


def test_with_a_daily_cycle_the_forecast_policies_follow_their_forecast():
    policy = SeasonalPolicy()
    result = replay(policy, _context(_daily(4, seed=2), start=3 * 288))
    assert policy.settings()["steps_by_rule"] == {"forecast": 288}
    reactive = replay(ReactivePolicy(), _context(_daily(4, seed=2), start=3 * 288))
    assert result.running.sum() < reactive.running.sum()  # no 0.6 headroom on a predictable cycle


def _slots_backtest_args(tmp_path, policy: str) -> tuple[list[str], Path]:
    """A 4-day trace of task slots, 2 running and 30 every 2 hours, as backtest arguments and its JSON."""
    index = pd.date_range("2024-01-01", periods=4 * 288, freq="5min")
    slots = np.where(np.arange(len(index)) % 24 == 12, 30.0, 2.0)
    trace = tmp_path / "slots.csv"
    pd.DataFrame({"timestamp": index, "slots": slots}).to_csv(trace, index=False)
    out = tmp_path / "bt.json"
    return ["backtest", str(trace), "--value-column", "slots", "--policies", policy, "--json", str(out)], out


def test_a_slots_trace_backtests_with_the_slots_each_worker_runs(tmp_path):
    """``--instance-capacity 4``: one instance per 4 slots, whatever the trace's 99th percentile."""
    args, out = _slots_backtest_args(tmp_path, "oracle")
    assert main([*args, "--instance-capacity", "4"]) == 0
    result = json.loads(out.read_text())
    assert result["instance_capacity"] == 4.0
    # 12 bursts of 8 instances and 276 steps of 1 (2 slots), 5 minutes each
    assert result["policies"]["oracle"]["capacity_hours"] == pytest.approx((12 * 8 + 276) / 12)
    assert main([*args, "--instance-capacity", "0"]) == 2


def test_a_slots_trace_backtests_as_the_planner_sizes_slots_with_resource_slots(tmp_path, capsys):
    """``--resource slots``: the reactive rule is tasks / slots per worker (planned full, Airflow's KEDA
    rule), not cpu's 0.6 utilisation."""
    args, out = _slots_backtest_args(tmp_path, "reactive")
    assert main([*args, "--instance-capacity", "4", "--resource", "slots"]) == 0
    # one worker, and 8 for one step after each of the 12 bursts of 30 slots
    assert json.loads(out.read_text())["policies"]["reactive"]["capacity_hours"] == pytest.approx(31.0)
    assert main([*args, "--instance-capacity", "4"]) == 0  # as vCPUs at 0.6: 13 workers a burst
    assert json.loads(out.read_text())["policies"]["reactive"]["capacity_hours"] == pytest.approx(38.0)
    capsys.readouterr()
    assert main([*args, "--resource", "slots"]) == 2
    assert "--resource slots needs --instance-capacity" in capsys.readouterr().err

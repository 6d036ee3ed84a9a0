"""``bench target-bound``: what an explicit unmet target costs rules that read the hour and recent demand."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from airflow_predictive_tools.bench.target_bound import bound_trace, cheapest, unmet_by_size

from airflow_predictive.cli import main
from airflow_predictive.simulation.backtest import BacktestOptions

SHARE = 0.005


def _trace(name: str, spikes: np.ndarray) -> pd.Series:
    """Seven days of 5-minute demand at 10, at 40 where ``spikes`` is set."""
    index = pd.date_range("2026-01-01", periods=7 * 288, freq="5min", tz="UTC")
    return pd.Series(np.where(spikes, 40.0, 10.0), index=index, name=name)


def _rules(result: dict) -> dict[tuple[str, ...], dict]:
    return {tuple(r["signals"]): r for r in result["rules"]}


def test_the_dual_bound_lies_at_or_below_the_cheapest_sizes_that_meet_the_budget():
    rng = np.random.default_rng(3)
    demand = rng.gamma(2.0, 3.0, 40)
    cells = np.arange(40) % 3
    sizes = np.arange(8)
    count = np.bincount(cells)
    unmet = unmet_by_size(demand, cells, 2.0, sizes, 3)
    budget = 0.05 * demand.sum()
    best = min(
        float(np.dot(count, pick))
        for pick in itertools.product(range(sizes.size), repeat=3)
        if unmet[np.arange(3), list(pick)].sum() <= budget
    )
    bound, chosen = cheapest(count, unmet, sizes, budget)
    assert unmet[np.arange(3), chosen].sum() <= budget  # the fitted sizes meet the budget
    assert bound <= best + 1e-9
    assert bound >= 0.9 * best  # and the bound is close, not a trivial zero
    assert float(np.dot(count, sizes[chosen])) >= best - 1e-9


def test_a_spike_at_the_same_hour_every_day_is_met_for_less_than_the_reactive_rule():
    steps = np.arange(7 * 288)
    result = bound_trace(_trace("daily", (steps % 288) // 12 == 13), BacktestOptions(), SHARE)
    assert result["reactive_unmet_pct"] > 100 * SHARE  # the reactive rule misses each spike's start
    hour = _rules(result)[("hour",)]
    assert hour["bound_x_reactive"] < 0.8
    assert hour["two_fold_unmet_pct"] <= 100 * SHARE
    assert hour["two_fold_x_reactive"] < 0.8


def test_spikes_at_random_steps_cost_more_than_the_reactive_rule_to_meet_the_target():
    spikes = np.random.default_rng(11).random(7 * 288) < 0.02
    result = bound_trace(_trace("random", spikes), BacktestOptions(), SHARE)
    rules = _rules(result)
    assert result["reactive_unmet_pct"] > 100 * SHARE
    for few in (("hour",), ("last step",), ("hour", "last step")):
        assert rules[few]["bound_x_reactive"] > 1.0
    # With as many cells as steps the hindsight fit learns the spikes themselves; on days it did not see,
    # no rule meets the target for less than the reactive rule.
    for rule in rules.values():
        assert rule["two_fold_unmet_pct"] > 100 * SHARE or rule["two_fold_x_reactive"] > 1.0, rule


def test_a_target_the_full_pool_cannot_meet_is_reported_with_no_rules():
    steps = np.arange(7 * 288)
    trace = _trace("daily", (steps % 288) // 12 == 13)
    # 40 a spike, 2 an instance: 20 instances serve it; a pool of 10 leaves half of every spike unmet
    result = bound_trace(trace, BacktestOptions(max_instances=10), SHARE)
    assert result["least_unmet_pct"] > 100 * SHARE
    assert result["rules"] == []
    assert bound_trace(trace, BacktestOptions(), SHARE)["least_unmet_pct"] == 0


def test_the_command_writes_json_and_names_a_bad_target(tmp_path, capsys):
    steps = np.arange(7 * 288)
    trace = _trace("daily", (steps % 288) // 12 == 13)
    path = tmp_path / "daily.csv"
    trace.rename("value").to_frame().rename_axis("timestamp").to_csv(path)
    out = tmp_path / "bound.json"
    assert main(["bench", "target-bound", str(path), "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["traces"][0]["trace"] == "daily"
    assert {tuple(r["signals"]) for r in written["traces"][0]["rules"]} >= {("hour",), ("last step",)}
    capsys.readouterr()
    assert main(["bench", "target-bound", str(path), "--unmet-share", "0"]) == 2
    assert "--unmet-share" in capsys.readouterr().err


def test_a_history_shorter_than_a_day_and_an_hour_is_refused():
    steps = np.arange(7 * 288)
    with pytest.raises(ValueError, match="a day and an hour of history"):
        bound_trace(_trace("daily", (steps % 288) // 12 == 13), BacktestOptions(history="12h"), SHARE)

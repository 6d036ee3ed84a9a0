"""The combination backtest's verdict: a frontier point beaten outright or at equal capacity-hours."""

from airflow_predictive_tools.bench.combination import dominance


def point(q, hours, unmet):
    return {"quantile": q, "capacity_hours": hours, "unmet_pct": unmet}


def test_combined_frontier_left_and_below_beats_predictive_outright():
    pred = [point(0.5, 3163, 1.90), point(0.99, 4286, 0.16)]
    comb = [point(0.5, 2866, 0.79), point(0.99, 3055, 0.29)]
    assert dominance(pred, comb) == {
        "predictive_quantiles_beaten_outright": [0.5],
        "combined_beats_predictive": True,
    }


def test_worse_combined_frontier_does_not_win():
    pred = [point(0.5, 100, 1.0), point(0.9, 200, 0.5)]
    comb = [point(0.5, 150, 1.2), point(0.9, 250, 0.6)]
    assert dominance(pred, comb)["combined_beats_predictive"] is False

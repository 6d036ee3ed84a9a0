"""``airflow-predictive bench evaluate``: a small run on a real PostgreSQL, and bad input."""

from __future__ import annotations

import json

import pytest

from airflow_predictive.cli import main
from airflow_predictive.store.forecast_arrays import lead_steps_kept
from tests.services import ensure_postgres

SERIES, HOURS, REPEATS = 4, 1, 2
ISSUES = HOURS * 12  # one forecast issue per 5-minute cycle: 11:00 ... 11:55 before "now" (12:00)
STEPS = 288  # each issue forecasts a day of 5-minute buckets


def test_small_run_reports_what_it_seeded_scored_and_timed(tmp_path, capsys) -> None:
    out = tmp_path / "eval.json"
    argv = ["bench", "evaluate", "--series", str(SERIES), "--hours", str(HOURS), "--repeats", str(REPEATS)]
    assert main([*argv, "--postgres", ensure_postgres(), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result

    # What was seeded: 3 days of demand plus the two buckets after "now" (so the steady cycle's bucket is
    # observed), and ISSUES issues of STEPS steps per series.
    assert result["demand_rows"] == SERIES * (3 * 288 + 2)
    assert (result["forecast_issues"], result["forecast_steps"]) == (ISSUES, STEPS)
    assert result["forecast_rows"] == SERIES * ISSUES * STEPS

    # First cycle (no watermark): a day's window; of the issue made j buckets before now, the targets at
    # leads 1 .. j - 1 have ended (the bucket at now is still filling). Issues older than the newest
    # keep only the scored leads (1-6, 9, 12 within the hour): 0+1+2+3+4+5+6+6+6+7+7+7 rows per series.
    kept = lead_steps_kept(STEPS)
    assert result["first_cycle"] == {
        "window_buckets": 288,
        "scored_series": SERIES,
        "scored_forecast_rows": SERIES * sum(sum(lead < j for lead in kept) for j in range(1, ISSUES + 1)),
    }
    assert result["first_cycle"]["scored_forecast_rows"] == SERIES * 54
    # Steady cycle, 5 minutes later: the one bucket that ended since, at each issue's lead to it that is
    # kept (leads 1 .. 12 of the 12 issues: 8 of them).
    assert result["steady_cycle"] == {
        "window_buckets": 1,
        "scored_series": SERIES,
        "scored_forecast_rows": SERIES * 8,
    }

    # Timings: one per repeat and cycle, the reported figure their median (of two: the mean, to 0.01 s).
    first, steady = result["first_cycle_seconds_all"], result["steady_cycle_seconds_all"]
    assert len(first) == len(steady) == result["repeats"] == REPEATS
    assert all(t > 0 for t in first + steady)
    assert result["first_cycle_seconds"] == pytest.approx(sum(first) / REPEATS, abs=0.011)
    assert result["steady_cycle_seconds"] == pytest.approx(sum(steady) / REPEATS, abs=0.011)
    assert result["steady_seconds_per_series"] == pytest.approx(
        result["steady_cycle_seconds"] / SERIES, abs=0.002
    )
    assert (result["benchmark"], result["series"], result["forecast_hours"]) == ("evaluate", SERIES, HOURS)


def test_bad_input_exits_2(capsys) -> None:
    assert main(["bench", "evaluate", "--hours", "0"]) == 2
    assert "--hours" in capsys.readouterr().err

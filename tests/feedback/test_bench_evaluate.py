"""``airflow-predictive bench evaluate``: a small run on a real PostgreSQL, and bad input."""

from __future__ import annotations

import json

from airflow_predictive.cli import main
from tests.services import ensure_postgres


def test_small_run_reports_what_it_seeded_and_timed(tmp_path, capsys) -> None:
    out = tmp_path / "eval.json"
    argv = ["bench", "evaluate", "--series", "4", "--hours", "1", "--repeats", "1"]
    assert main([*argv, "--postgres", ensure_postgres(), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["forecast_rows"] == 4 * 12 * 288  # 12 five-minute issues of 288 steps per series
    assert result["first_cycle_seconds"] > 0 and result["steady_cycle_seconds"] > 0
    assert json.loads(capsys.readouterr().out) == result


def test_bad_input_exits_2(capsys) -> None:
    assert main(["bench", "evaluate", "--hours", "0"]) == 2
    assert "--hours" in capsys.readouterr().err

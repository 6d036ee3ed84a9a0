"""``backtest --jobs N`` runs traces in N processes and reports exactly what one process would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_predictive.cli import main
from airflow_predictive.simulation.backtest import backtest

TRACES = Path(__file__).resolve().parents[2] / "examples" / "traces"
# Shortest first on the command line: the pool starts the longest first, the results keep this order.
PATHS = [
    TRACES / "nab_rds_cpu_utilization_e47b3b.csv",
    TRACES / "nab_ec2_disk_write_bytes_1ef3de.csv",
]


def _scores(path: Path) -> list[tuple[str, dict]]:
    return [(r["trace"], r["policies"]) for r in json.loads(path.read_text())]


def test_two_jobs_report_the_same_scores_in_the_same_order_as_one(tmp_path):
    # The cheap policies: the processes, not the forecaster, are under test.
    args = ["backtest", *map(str, PATHS), "--policies", "reactive,oracle"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main([*args, "--json", str(one)]) == 0
    assert main([*args, "--jobs", "2", "--json", str(two)]) == 0
    assert [t for t, _ in _scores(two)] == [p.stem for p in PATHS]
    assert _scores(two) == _scores(one)


def test_jobs_below_one_is_refused_by_name():
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        backtest(PATHS, jobs=0)

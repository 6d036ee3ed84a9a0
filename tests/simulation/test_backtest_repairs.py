"""The backtest reports what the loader repaired in each trace: in the JSON, on stdout and in Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from airflow_predictive.cli import main
from airflow_predictive.simulation.backtest import repairs, series_from_demand

TRACES = Path(__file__).resolve().parents[2] / "examples" / "traces"
RETIMED = TRACES / "nab_ec2_disk_write_bytes_1ef3de.csv"  # NAB's daylight-saving hour: 12 rows at 03:00
FILLED = TRACES / "nab_elb_request_count_8c0756.csv"  # 8 missing 5-minute buckets
CLEAN = TRACES / "nab_rds_cpu_utilization_e47b3b.csv"  # nothing to repair


def test_repairs_are_reported_per_trace_in_the_json_stdout_and_markdown(tmp_path, capsys):
    out, md = tmp_path / "bt.json", tmp_path / "bt.md"
    # The oracle alone: the repairs do not depend on the policy and it replays in a second.
    args = ["backtest", str(RETIMED), str(FILLED), str(CLEAN), "--policies", "oracle"]
    assert main([*args, "--json", str(out), "--markdown", str(md)]) == 0

    repairs = {r["trace"]: r["repairs"] for r in json.loads(out.read_text())}
    assert repairs == {
        RETIMED.stem: {"filled": 0, "retimed": 12},
        FILLED.stem: {"filled": 8, "retimed": 0},
        CLEAN.stem: {"filled": 0, "retimed": 0},
    }
    stdout = capsys.readouterr().out
    lines = [line for line in stdout.splitlines() if "repaired" in line]
    assert lines == [
        f"{RETIMED.stem}: repaired 0 filled bucket(s) (linear interpolation), "
        "12 re-timed row(s) (repeated timestamps)",
        f"{FILLED.stem}: repaired 8 filled bucket(s) (linear interpolation), "
        "0 re-timed row(s) (repeated timestamps)",
    ]
    markdown = md.read_text()
    assert all(f"- {line}" in markdown for line in lines)
    assert CLEAN.stem + ": repaired" not in markdown


def test_a_pools_recorded_demand_reports_its_filled_buckets():
    ts = pd.date_range("2024-01-01", periods=6, freq="5min", tz="UTC").delete([2, 3])
    frame = pd.DataFrame({"series_id": "pool=etl/resource=cpu", "ts": ts, "value": 1.0})
    assert repairs(series_from_demand(frame, "pool=etl/resource=cpu")) == {"filled": 2, "retimed": 0}

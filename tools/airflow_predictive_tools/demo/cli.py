"""``airflow-predictive demo``: one control-loop cycle on embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any, bench: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the control loop through Airflow on embedded defaults (SQLite, the local Compute Engine "
        "emulator, generated history) and print what it did",
    )
    parser.add_argument("--home", default=".demo", help="working folder, emptied first (default: .demo)")
    parser.add_argument("--days", type=int, default=21, help="days of generated history (default 21)")
    parser.add_argument(
        "--day-hours",
        type=float,
        default=24,
        help="hours of control-loop cycles on a simulated clock before the real DAG run (default 24)",
    )
    parser.add_argument(
        "--cycle-minutes", type=float, default=60, help="simulated cycle length in minutes (default 60)"
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from airflow_predictive_tools.demo.runner import run_demo

    if args.days < 3:
        print("--days must be at least 3 (the backtest warms up on 3 days)", file=sys.stderr)
        return 2
    if args.day_hours < 0 or args.cycle_minutes <= 0:
        print("--day-hours must be >= 0 and --cycle-minutes > 0", file=sys.stderr)
        return 2
    try:
        run_demo(Path(args.home), days=args.days, day_hours=args.day_hours, cycle_minutes=args.cycle_minutes)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0

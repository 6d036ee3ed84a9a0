"""``airflow-predictive bench forecast`` and ``bench accuracy``: the forecasting engine's benchmarks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(commands, bench) -> None:
    """Add ``bench forecast`` and ``bench accuracy``.

    :param commands: top-level sub-parsers (unused).
    :param bench: ``bench`` sub-parsers.
    """
    speed = bench.add_parser(
        "forecast",
        help="speed: order selection, one forecast cycle, memory, speed-up over per-cycle auto_arima",
        description=(
            "Generate N realistic demand series (14 days, 5-minute buckets), run cold-start order "
            "selection, then one steady-state forecast cycle over all cores, and compare with a fresh "
            "auto_arima per series per cycle (timed on a sample, extrapolated)."
        ),
    )
    speed.add_argument("--series", type=int, default=1000, help="number of series (1000)")
    speed.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    speed.add_argument(
        "--select-sample",
        type=int,
        default=None,
        help="run order selection on this many series and extrapolate (default: all)",
    )
    speed.add_argument(
        "--baseline-sample",
        type=int,
        default=3,
        help="series on which each auto_arima baseline (tuned, and the naive m=24) is timed (3)",
    )
    speed.add_argument("--seed", type=int, default=0, help="random seed (0)")
    speed.add_argument(
        "--cycles", type=int, default=3, help="steady-state cycles; cycle_seconds is their median (3)"
    )
    speed.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON here")
    speed.set_defaults(func=run_speed)

    acc = bench.add_parser(
        "accuracy",
        help="accuracy: rolling-origin MASE, pinball, exceedance vs seasonal naive and auto_arima",
        description=(
            "Rolling-origin evaluation (horizons 1 h, 6 h, 24 h) of the engine's per-cycle path, seasonal "
            "naive and a fresh auto_arima per origin on trace files."
        ),
    )
    acc.add_argument("traces", nargs="+", metavar="TRACE.csv", help="trace files")
    acc.add_argument(
        "--origins",
        type=int,
        default=24,
        help="forecast origins per trace (24, at least 5; with 6 a single level shift on an origin moves the mean)",
    )
    acc.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    acc.add_argument("--time-column", default=None, help="time column (default: detected)")
    acc.add_argument("--value-column", default=None, help="demand column (default: per format)")
    acc.add_argument("--sep", default=None, help="column separator (default: sniffed)")
    acc.add_argument("--interval", default=None, help="bucket size, e.g. 5min (default: inferred)")
    acc.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON here")
    acc.set_defaults(func=run_accuracy)


def _write(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2, sort_keys=True)
    if out:
        Path(out).write_text(text + "\n")
    print(text)


def run_speed(args: argparse.Namespace) -> int:
    """Handle ``bench forecast``.

    :param args: parsed arguments.
    """
    if args.series < 1:
        print("--series must be at least 1", file=sys.stderr)
        return 2
    from airflow_predictive_tools.bench.forecasting import speed

    _write(
        speed(
            args.series,
            workers=args.workers,
            select_sample=args.select_sample,
            baseline_sample=args.baseline_sample,
            seed=args.seed,
            cycles=args.cycles,
        ),
        args.json_out,
    )
    return 0


def run_accuracy(args: argparse.Namespace) -> int:
    """Handle ``bench accuracy``.

    :param args: parsed arguments.
    """
    missing = [p for p in args.traces if not Path(p).is_file()]
    if missing:
        print(f"trace file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.origins < 5:
        print("--origins must be at least 5", file=sys.stderr)
        return 2
    from airflow_predictive_tools.bench.forecasting import accuracy

    result = accuracy(
        list(args.traces),
        origins=args.origins,
        workers=args.workers,
        time_column=args.time_column,
        value_column=args.value_column,
        sep=args.sep,
        interval=args.interval,
    )
    _write(result, args.json_out)
    errors = {path: t["error"] for path, t in result["traces"].items() if "error" in t}
    for path, error in errors.items():
        print(f"{path}: {error}", file=sys.stderr)
    return 2 if errors and len(errors) == len(result["traces"]) else 0

"""``airflow-predictive bench scaleout``: the control loop under CeleryExecutor, stage by stage, 1 vs N workers."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(text)
    return values


def add_postgres_argument(parser: argparse.ArgumentParser) -> None:
    """``--postgres``: the superuser URL benchmarks create their throw-away databases with."""
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL superuser URL (throw-away databases are created and dropped)",
    )


def register(commands, bench) -> None:
    """Add ``bench scaleout``.

    :param commands: top-level sub-parsers (unused).
    :param bench: ``bench`` sub-parsers.
    """
    parser = bench.add_parser(
        "scaleout",
        help="wall time of the control loop's stages under Celery with 1 vs N workers, and the store's size",
        description=(
            "Start Airflow with CeleryExecutor (PostgreSQL metadata, Redis broker) and a PostgreSQL "
            "profile store seeded in the steady state (history, model states, a day of forecasts); time "
            "the control loop's profile, forecast, allocate and evaluate stages for each series count "
            "with each number of workers (one slot each). First, measure the forecasts' rows and bytes "
            "per series after a simulated day of cycles on PostgreSQL."
        ),
    )
    parser.add_argument("--series", default="100,1000,5000", help="series counts (100,1000,5000)")
    parser.add_argument("--workers", default="1,2", help="worker counts (1,2)")
    parser.add_argument("--chunk", type=int, default=200, help="series per mapped task (200)")
    parser.add_argument("--repeats", type=int, default=1, help="cycles per point; median reported (1)")
    parser.add_argument("--days", type=int, default=3, help="days of seeded history per series (3)")
    parser.add_argument(
        "--size-sample",
        type=int,
        default=100,
        help="series of the simulated day for the store's size (100; 0 skips)",
    )
    parser.add_argument(
        "--min-heartbeat-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the workers' [workers] min_heartbeat_interval (default: Airflow's, 5): Airflow's task "
        "supervisor can idle that long after each task's process ends",
    )
    add_postgres_argument(parser)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/7", help="Redis URL (index flushed)")
    parser.add_argument("--home", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON here")
    parser.set_defaults(func=run_scaleout)


def run_scaleout(args: argparse.Namespace) -> int:
    """Handle ``bench scaleout``.

    :param args: parsed arguments.
    """
    try:
        series = _ints(args.series)
        workers = _ints(args.workers)
    except ValueError:
        print("--series and --workers take comma-separated positive integers, e.g. 100,1000", file=sys.stderr)
        return 2
    if args.min_heartbeat_interval is not None and args.min_heartbeat_interval <= 0:
        print("--min-heartbeat-interval must be a positive number of seconds", file=sys.stderr)
        return 2
    if args.chunk < 1 or args.repeats < 1 or args.days < 2 or args.size_sample < 0:
        print(
            "--chunk and --repeats must be at least 1, --days at least 2 and --size-sample at least 0",
            file=sys.stderr,
        )
        return 2
    from airflow_predictive_tools.bench.scaleout import run

    with tempfile.TemporaryDirectory(prefix="predictive-scaleout-") as tmp:
        result = run(
            series,
            workers,
            home=Path(args.home) if args.home else Path(tmp),
            postgres_url=args.postgres,
            broker_url=args.broker,
            chunk=args.chunk,
            repeats=args.repeats,
            days=args.days,
            size_sample=args.size_sample,
            min_heartbeat_interval=args.min_heartbeat_interval,
        )
    result["command"] = shlex.join(["airflow-predictive", *sys.argv[1:]])
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return 0

"""``airflow-predictive report``: write the forecast report page; ``evaluate``: run one feedback cycle."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta


def _timestamp(raw: str) -> datetime:
    """``--now`` as an aware datetime (naive means UTC); argparse turns the error into exit code 2."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO 8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _store(args: argparse.Namespace):
    from airflow_predictive.store import ProfileStore

    if args.store:
        return ProfileStore(args.store) if "://" in args.store else ProfileStore.sqlite(args.store)
    return ProfileStore.from_config()


def _report(args: argparse.Namespace) -> int:
    from airflow_predictive.feedback.report import write_report

    now = args.now or datetime.now(UTC)
    store = _store(args)
    try:
        path = write_report(store, args.output, now=now, pools=args.pool or None, history_hours=args.hours)
    finally:
        store.dispose()
    print(path)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from airflow_predictive import config
    from airflow_predictive.feedback.cycle import run_feedback_cycle

    now = args.now or datetime.now(UTC)
    store = _store(args)
    try:
        result = run_feedback_cycle(
            store,
            now=now,
            pools=args.pool or None,
            recalibrate=not args.dry_run,
            emit_metrics=False,
            retention=None if args.dry_run else timedelta(hours=config.get_int("forecast_retention_hours")),
        )
    finally:
        store.dispose()
    print(result.table())
    print(json.dumps(result.summary(), indent=1))
    return 0


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``report``, ``evaluate`` and ``bench evaluate`` to the ``airflow-predictive`` command.

    :param commands: top-level sub-parsers.
    :param bench: ``bench`` sub-parsers.
    """
    report = commands.add_parser("report", help="write the forecast report page (self-contained HTML)")
    report.add_argument("-o", "--output", default="predictive-report.html", help="HTML file to write")
    report.add_argument("--store", help="SQLAlchemy URL or SQLite file (default: [predictive] config)")
    report.add_argument("--pool", action="append", help="only this capacity pool (repeatable)")
    report.add_argument("--now", type=_timestamp, help="the report's 'now' (ISO 8601; default: current time)")
    report.add_argument("--hours", type=float, default=24, help="hours of history to draw")
    report.set_defaults(func=_report)

    evaluate = commands.add_parser("evaluate", help="score past forecasts, recalibrate, print the scores")
    evaluate.add_argument("--store", help="SQLAlchemy URL or SQLite file (default: [predictive] config)")
    evaluate.add_argument("--pool", action="append", help="only this capacity pool (repeatable)")
    evaluate.add_argument("--now", type=_timestamp, help="evaluate as of this time (ISO 8601)")
    evaluate.add_argument(
        "--dry-run", action="store_true", help="score only: change no calibration, prune no forecasts"
    )
    evaluate.set_defaults(func=_evaluate)

    from airflow_predictive.scaleout.cli import add_postgres_argument

    speed = bench.add_parser(
        "evaluate",
        help="time of one feedback cycle with N series and H hours of stored 5-minute forecasts",
        description=(
            "Seed a throw-away PostgreSQL profile store with demand and the forecasts a 5-minute loop "
            "stores over H hours, then time the first and the steady-state feedback cycle."
        ),
    )
    speed.add_argument("--series", type=int, default=20, help="demand series (20)")
    speed.add_argument("--hours", type=int, default=36, help="hours of stored forecast issues (36)")
    speed.add_argument("--repeats", type=int, default=3, help="cycles per measurement; median reported (3)")
    add_postgres_argument(speed)
    speed.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON here")
    speed.set_defaults(func=_bench_evaluate)


def _bench_evaluate(args: argparse.Namespace) -> int:
    if args.series < 1 or args.hours < 1 or args.repeats < 1:
        print("--series, --hours and --repeats must be at least 1", file=sys.stderr)
        return 2
    from airflow_predictive.feedback.bench import run

    result = run(
        series=args.series,
        hours=args.hours,
        repeats=args.repeats,
        postgres_url=args.postgres,
        log=lambda line: print(line, file=sys.stderr),
    )
    text = json.dumps(result, indent=2)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0

"""``airflow-predictive report``: write the forecast report page; ``evaluate``: run one feedback cycle."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from airflow_predictive import config, stats


def _timestamp(raw: str) -> datetime:
    """``--now`` as an aware datetime (naive means UTC); argparse turns the error into exit code 2."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO 8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _store(args: argparse.Namespace):
    # Imported by the handler: `airflow-predictive --help` imports every command module.
    from airflow_predictive.hooks.profile_store import configured_store
    from airflow_predictive.store import ProfileStore

    if args.store:
        return ProfileStore(args.store) if "://" in args.store else ProfileStore.sqlite(args.store)
    return configured_store()


def _report(args: argparse.Namespace) -> int:
    # Imported by the handler: `airflow-predictive --help` imports every command module.
    from airflow_predictive.feedback.report import write_report

    now = args.now or datetime.now(UTC)
    stats.install()
    store = _store(args)
    try:
        path = write_report(
            store,
            args.output,
            now=now,
            pools=args.pool or None,
            history_hours=args.hours,
            default_mode=config.get("default_mode"),
        )
    finally:
        store.dispose()
    print(path)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    # Imported by the handler: `airflow-predictive --help` imports every command module.
    from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy, run_feedback_cycle

    now = args.now or datetime.now(UTC)
    store = _store(args)
    try:
        result = run_feedback_cycle(
            store,
            now=now,
            pools=args.pool or None,
            policy=FeedbackPolicy(
                recalibrate=not args.dry_run,
                retention=None
                if args.dry_run
                else timedelta(hours=config.get_int("forecast_retention_hours")),
            ),
            emit_metrics=False,
        )
    finally:
        store.dispose()
    print(result.table())
    print(json.dumps(result.summary(), indent=1))
    return 0


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``report`` and ``evaluate`` to the ``airflow-predictive`` command.

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

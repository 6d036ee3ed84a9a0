"""The ``airflow-predictive`` command.

Each module of ``airflow_predictive/commands/`` contributes its commands through
``register(commands, bench)``; installed packages add theirs through the entry-point group
``airflow_predictive.commands`` (the repository's tooling adds demo, gce-emulator and the benchmarks).
Heavy imports (pmdarima, the Compute Engine client) happen only inside the handler that needs them, so
``airflow-predictive --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import airflow_predictive
from airflow_predictive.commands import backtest, feedback, plan, profile, templates

#: The provider's own commands, in the order ``--help`` lists them.
PRODUCT_COMMANDS = (plan, backtest, templates, feedback, profile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-predictive",
        description="Predictive capacity management for Apache Airflow on Google Compute Engine.",
    )
    parser.add_argument("--version", action="version", version=airflow_predictive.__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="benchmarks (JSON output)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    bench_parser.set_defaults(func=lambda _args: _usage(bench_parser))
    for module in PRODUCT_COMMANDS:
        module.register(commands, bench)
    for entry in sorted(entry_points(group="airflow_predictive.commands"), key=lambda e: e.name):
        entry.load()(commands, bench)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        return _usage(parser)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

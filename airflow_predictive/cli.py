"""The ``airflow-predictive`` command.

Each room contributes its commands from ``airflow_predictive/<room>/cli.py`` through
``register(commands, bench)``, so this file never grows with the rooms and heavy imports (pmdarima,
the Compute Engine client) happen only inside the handler that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import airflow_predictive


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
    for module in _room_cli_modules():
        module.register(commands, bench)
    return parser


def _room_cli_modules() -> list:
    modules = []
    for info in sorted(pkgutil.iter_modules(airflow_predictive.__path__), key=lambda m: m.name):
        if info.ispkg:
            try:
                modules.append(importlib.import_module(f"airflow_predictive.{info.name}.cli"))
            except ModuleNotFoundError as exc:
                if exc.name != f"airflow_predictive.{info.name}.cli":
                    raise
    return modules


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

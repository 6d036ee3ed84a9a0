"""The ``airflow-predictive`` command.

Each module of ``airflow_predictive/commands/`` contributes its commands through
``register(commands, bench)``; installed packages add theirs through the entry-point group
``airflow_predictive.commands`` (the repository's tooling adds demo, gce-emulator and the benchmarks).
Heavy imports (pmdarima, the Compute Engine client) happen only inside the handler that needs them, so
``airflow-predictive --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
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
    _as_airflow_cli()
    return int(args.func(args) or 0)


def _as_airflow_cli() -> None:
    """Look connections up and log as Airflow's own CLI does.

    Connections: outside a task, the Task SDK's ``BaseHook.get_connection`` searches the metastore
    only in a process marked as a server, as ``airflow connections get`` marks itself; without it a
    connection made with ``airflow connections add`` is "not defined" (issue #20). Environment
    variables and configured secrets backends are searched first either way.

    Logs: Airflow's logging writes to stdout, which carries the command's result (``--json`` must
    parse): warnings go to stderr.
    """
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    try:
        import airflow  # noqa: F401  (configures Airflow's logging, on stdout)
        import structlog
    except ImportError:  # the pure commands (backtest) run without a configured Airflow
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    factory = structlog.get_config().get("logger_factory")
    if hasattr(factory, "io") and factory.io in (None, sys.stdout):
        factory.io = sys.stderr


if __name__ == "__main__":
    sys.exit(main())

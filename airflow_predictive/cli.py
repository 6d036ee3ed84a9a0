"""The ``airflow-predictive`` command.

Each module of ``airflow_predictive/commands/`` contributes its commands through
``register(commands, bench)``; installed packages add theirs through the entry-point group
``airflow_predictive.commands`` (the repository's tooling adds demo, gce-emulator and the benchmarks).
Heavy imports (pmdarima, the Compute Engine client) happen only inside the handler that needs them, so
``airflow-predictive --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any

import airflow_predictive
from airflow_predictive.commands import backtest, feedback, plan, profile, templates

#: Marks an Airflow process as a server (metastore connections) or a task's client (see _as_airflow_cli).
_CONTEXT_VAR = "_AIRFLOW_PROCESS_CONTEXT"
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
    with _as_airflow_cli():
        return int(args.func(args) or 0)


@contextlib.contextmanager
def _as_airflow_cli() -> Iterator[None]:
    """Look connections up and log as Airflow's own CLI does, for the command's duration.

    Connections: outside a task, the Task SDK's ``BaseHook.get_connection`` searches the metastore
    only in a process marked as a server, as ``airflow connections get`` marks itself; without it a
    connection made with ``airflow connections add`` is "not defined" (issue #20). Environment
    variables and configured secrets backends are searched first either way.

    Logs: Airflow's logging writes to stdout, which carries the command's result (``--json`` must
    parse): they go to stderr. Both are put back afterwards (tests call :func:`main` in-process).
    """
    before = os.environ.get(_CONTEXT_VAR)
    os.environ.setdefault(_CONTEXT_VAR, "server")
    moved = _logs_to(sys.stderr)
    try:
        yield
    finally:
        for target, stream in moved:
            _set_stream(target, stream)
        if before is None:
            os.environ.pop(_CONTEXT_VAR, None)


def _logs_to(stream: Any) -> list[tuple[Any, Any]]:
    """Point the log handlers that write to stdout at ``stream``; return what to put back."""
    try:
        import airflow  # noqa: F401  (configures Airflow's logging, on stdout)
        import structlog
    except ImportError:  # the pure commands (backtest) run without a configured Airflow
        return []
    targets: list[Any] = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout
    ]
    factory = structlog.get_config().get("logger_factory")
    if hasattr(factory, "io") and factory.io in (None, sys.stdout):
        targets.append(factory)
    moved = [(t, t.stream if isinstance(t, logging.StreamHandler) else t.io) for t in targets]
    for target in targets:
        _set_stream(target, stream)
    return moved


def _set_stream(target: Any, stream: Any) -> None:
    if isinstance(target, logging.StreamHandler):
        target.setStream(stream)
    else:
        target.io = stream


if __name__ == "__main__":
    sys.exit(main())

"""``airflow-predictive gce-emulator``: run the local Compute Engine emulator on 127.0.0.1."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Any


def register(commands: Any, bench: Any) -> None:
    """Add the ``gce-emulator`` command.

    :param commands: top-level sub-parser collection.
    :param bench: ``bench`` sub-parser collection (unused: the emulator has no benchmark).
    """
    parser = commands.add_parser(
        "gce-emulator",
        help="run the local Compute Engine emulator (compute/v1 REST JSON)",
        description="Serve http://HOST:PORT/compute/v1/... like Google's API, plus a control API under /_emulator/.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8085, help="TCP port (default 8085, 0 = any free port)")
    parser.add_argument(
        "--state", metavar="FILE", help="persist state to this JSON file and reload it on start"
    )
    parser.add_argument(
        "--boot-seconds", type=float, default=None, help="PROVISIONING -> RUNNING time (default 1.0)"
    )
    parser.add_argument(
        "--stop-seconds", type=float, default=None, help="STOPPING -> TERMINATED time (default 0.3)"
    )
    parser.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="METRIC=LIMIT",
        help="default regional quota, repeatable (CPUS, PREEMPTIBLE_CPUS, INSTANCES, DISKS_TOTAL_GB, SSD_TOTAL_GB)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.set_defaults(func=run_emulator)


def _parse_quotas(values: list[str]) -> dict[str, float]:
    from airflow_predictive_tools.emulator.state import DEFAULT_QUOTAS

    quotas: dict[str, float] = {}
    for value in values:
        metric, _, limit = value.partition("=")
        if metric not in DEFAULT_QUOTAS:
            raise ValueError(f"--quota {value!r}: metric must be one of {', '.join(sorted(DEFAULT_QUOTAS))}")
        try:
            quotas[metric] = float(limit)
        except ValueError:
            raise ValueError(f"--quota {value!r}: limit must be a number, e.g. CPUS=24") from None
    return quotas


def run_emulator(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C; print the base URL on stdout once listening.

    :param args: parsed arguments of ``gce-emulator``.
    """
    from airflow_predictive_tools.emulator.server import ComputeEngineEmulator

    config = {
        key: value
        for key, value in (("boot_seconds", args.boot_seconds), ("stop_seconds", args.stop_seconds))
        if value is not None
    }
    try:
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port {args.port}: must be between 0 and 65535")
        emulator = ComputeEngineEmulator(
            host=args.host,
            port=args.port,
            state_file=args.state,
            config=config,
            quotas=_parse_quotas(args.quota),
            verbose=args.verbose,
        )
    except (ValueError, OSError) as exc:
        print(f"gce-emulator: {exc}", file=sys.stderr)
        return 2

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"Compute Engine emulator listening on {emulator.url}/compute/v1", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        emulator.serve_forever()
    return 0

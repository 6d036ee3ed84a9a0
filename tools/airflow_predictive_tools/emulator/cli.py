"""``airflow-predictive gce-emulator``: run the local Compute Engine emulator on 127.0.0.1."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from airflow_predictive_tools.emulator.vm_hostname import FORMS


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
    workers = parser.add_argument_group(
        "Airflow workers on the VMs",
        "With --workers, every RUNNING VM whose metadata names queues (airflow-celery-queues, optionally "
        "airflow-worker-concurrency) runs a real `airflow celery worker` as celery@<vm>; it is SIGKILLed "
        "when the VM stops running and when the emulator exits. Workers inherit this command's environment: "
        "set AIRFLOW_HOME, AIRFLOW__CELERY__BROKER_URL, AIRFLOW__CELERY__RESULT_BACKEND (and the rest of "
        "your Airflow configuration) before starting it. GET /_emulator/workers lists them.",
    )
    workers.add_argument(
        "--workers", action="store_true", help="run an Airflow Celery worker on every VM with queue metadata"
    )
    workers.add_argument(
        "--worker-hostname",
        choices=FORMS,
        default=None,
        help="host name the workers report: fqdn (<vm>.<zone>.c.<project>.internal, default), short (<vm>) "
        "or ip (the VM's internal IP)",
    )
    workers.add_argument(
        "--worker-log-dir",
        metavar="DIR",
        default=None,
        help="keep one log per VM in DIR (default: a temporary folder removed at exit)",
    )
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


def _worker_options(args: argparse.Namespace) -> dict[str, str] | None:
    if not args.workers:
        given = [
            flag
            for flag, value in (
                ("--worker-hostname", args.worker_hostname),
                ("--worker-log-dir", args.worker_log_dir),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"{given[0]} only applies with --workers")
        return None
    options = {"hostname_form": args.worker_hostname or "fqdn"}
    if args.worker_log_dir is not None:
        try:
            Path(args.worker_log_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"--worker-log-dir {args.worker_log_dir}: cannot use it as a folder ({exc})"
            ) from None
        options["log_dir"] = args.worker_log_dir
    return options


def _log_worker_events() -> None:
    # Which VM got a worker, which was killed and why: the one thing a --workers user watches for.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s gce-emulator workers: %(message)s"))
    logger = logging.getLogger("airflow_predictive_tools.emulator.workers")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


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
            workers=_worker_options(args),
        )
    except (ValueError, OSError) as exc:
        print(f"gce-emulator: {exc}", file=sys.stderr)
        return 2

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if emulator.fleet is not None:
        _log_worker_events()
    print(f"Compute Engine emulator listening on {emulator.url}/compute/v1", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        emulator.serve_forever()
    return 0

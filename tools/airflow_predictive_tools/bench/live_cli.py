"""``airflow-predictive bench live``: queue wait and worker VM-hours on real Airflow, per policy."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
from pathlib import Path


def register(commands, bench) -> None:
    """Add ``bench live``.

    :param commands: top-level sub-parsers (unused).
    :param bench: ``bench`` sub-parsers.
    """
    from airflow_predictive_tools.bench.scaleout_cli import add_postgres_argument

    parser = bench.add_parser(
        "live",
        help="task queue wait and worker VM-hours on real Airflow: predictive vs KEDA, CPU and static",
        description=(
            "Start Airflow with CeleryExecutor (PostgreSQL, Redis), the Compute Engine emulator whose "
            "VMs run real Celery workers after a boot delay, and the control-loop DAG; run the same "
            "seeded workload (scheduled and user-triggered DAGs bound to workflow templates) once per "
            "policy, side by side, from zero workers; report queue waits (REST API), VM-hours and "
            "cost (emulator), tasks lost, busy VMs released and actions per policy."
        ),
    )
    parser.add_argument("--policies", default="predictive,queue,cpu,static", help="policies to run")
    parser.add_argument("--minutes", type=int, default=20, help="workload length in minutes (20)")
    parser.add_argument("--seed", type=int, default=7, help="seed of user triggers and task lengths (7)")
    parser.add_argument("--boot-seconds", type=float, default=60.0, help="VM boot delay (60)")
    parser.add_argument("--cadence-minutes", type=float, default=5.0, help="control-loop DAG interval (5)")
    parser.add_argument(
        "--lead-minutes",
        type=float,
        default=3.0,
        help="predictive's boot lead time: cycle + boot + worker (3)",
    )
    parser.add_argument(
        "--warmup-minutes", type=float, default=3.0, help="control loop before the workload (3)"
    )
    parser.add_argument("--drain-minutes", type=float, default=12.0, help="max wait for the last runs (12)")
    parser.add_argument(
        "--history-days",
        type=float,
        default=7.0,
        help="days of the same DAGs' past runs seeded in the store, ending an hour before the run (7)",
    )
    parser.add_argument("--short", action="store_true", help="the test suite's workload: one scheduled DAG")
    add_postgres_argument(parser)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/9", help="Redis URL (index flushed)")
    parser.add_argument("--home", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON here")
    parser.add_argument("--report", default=None, metavar="OUT.html", help="write the HTML report here")
    parser.add_argument(
        "--screenshot",
        default=None,
        metavar="OUT.png",
        help="with --report: a PNG of the page (headless Chromium)",
    )
    parser.set_defaults(func=run_live)


def _settings(args: argparse.Namespace):
    from airflow_predictive_tools.bench.live import LiveSettings
    from airflow_predictive_tools.bench.live_policies import PoolSettings, parse_policies

    policies = parse_policies(args.policies)
    if args.minutes < 1:
        raise ValueError(f"--minutes {args.minutes}: give at least 1")
    if not 0 <= args.boot_seconds <= 600:
        raise ValueError(f"--boot-seconds {args.boot_seconds}: give 0 to 600 (a real VM boots in 60-120)")
    if (
        args.cadence_minutes < 1
        or args.lead_minutes <= 0
        or args.warmup_minutes < 0
        or args.drain_minutes < 0
        or not 0 <= args.history_days <= 60
    ):
        raise ValueError(
            "--cadence-minutes must be at least 1, --lead-minutes above 0, --warmup-minutes and "
            "--drain-minutes at least 0, --history-days 0 to 60"
        )
    return LiveSettings(
        policies=tuple(policies),
        minutes=args.minutes,
        seed=args.seed,
        boot_seconds=args.boot_seconds,
        pools=PoolSettings(lead_minutes=args.lead_minutes, cadence_minutes=args.cadence_minutes),
        warmup_minutes=args.warmup_minutes,
        drain_minutes=args.drain_minutes,
        short=args.short,
        history_days=args.history_days,
    )


def run_live(args: argparse.Namespace) -> int:
    """Handle ``bench live``.

    :param args: parsed arguments.
    """
    try:
        settings = _settings(args)
        if args.screenshot and not args.report:
            raise ValueError("--screenshot needs --report OUT.html (the page it pictures)")
    except ValueError as exc:
        print(f"bench live: {exc}", file=sys.stderr)
        return 2
    from airflow_predictive_tools.bench.live import run

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwinds the deployment: every process is stopped by its PID

    signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="predictive-live-") as tmp:
        result = run(
            settings,
            home=Path(args.home) if args.home else Path(tmp),
            postgres_url=args.postgres,
            broker_url=args.broker,
        )
    result["command"] = shlex.join(["airflow-predictive", *sys.argv[1:]])
    text = json.dumps(result, indent=2, sort_keys=True)
    # The JSON first: a report or screenshot that fails (no Chromium) must not lose a 40-minute run.
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    if args.report:
        from airflow_predictive_tools.bench.live_report import write_report

        write_report(result, Path(args.report))
        if args.screenshot:
            from airflow_predictive_tools.bench.live_report import screenshot

            screenshot(Path(args.report), Path(args.screenshot))
    print(
        json.dumps(
            {
                p: {k: v for k, v in m.items() if k not in ("action_times", "first_stage", "plans")}
                for p, m in result["policies"].items()
            },
            indent=2,
        )
    )
    return 0

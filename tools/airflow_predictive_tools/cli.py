"""The tooling's commands, added to ``airflow-predictive`` when this package is installed.

The product's own commands (plan, backtest, templates, report, evaluate, profile) live in the provider;
these need the emulator, the generated history or a benchmark harness, which the provider's wheel does
not carry. ``airflow_predictive.cli`` finds this module through the entry-point group
``airflow_predictive.commands``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_predictive import config
from airflow_predictive.commands.profile import (
    add_queue_pool_argument,
    add_store_argument,
    bucket_width,
    fail,
    open_store,
    queue_pools_from,
)
from airflow_predictive_tools.bench import forecasting_cli, live_cli, scaleout_cli
from airflow_predictive_tools.demo import cli as demo_cli
from airflow_predictive_tools.emulator import cli as emulator_cli


def register(commands: Any, bench: Any) -> None:
    """Add the tooling's commands: demo, gce-emulator, allocate-demo, seed-history and the benchmarks.

    :param commands: top-level sub-parsers of ``airflow-predictive``.
    :param bench: ``bench`` sub-parsers.
    """
    for module in (demo_cli, emulator_cli, forecasting_cli, scaleout_cli, live_cli):
        module.register(commands, bench)
    demo = commands.add_parser(
        "allocate-demo",
        help="apply real plans to a local Compute Engine emulator and print each action with its reason",
    )
    demo.add_argument("--emulator-url", help="use a running emulator instead of starting one")
    demo.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demo.set_defaults(func=_demo)

    planner = bench.add_parser("planner", help="time one planner call (JSON: median and p95 milliseconds)")
    planner.add_argument("--calls", type=int, default=2000, help="planner calls to time")
    planner.set_defaults(func=_bench_planner)

    seed = commands.add_parser(
        "seed-history",
        help="write a GENERATED organisation history (weeks of runs) to the profile store, then build "
        "its demand series and behaviour summaries",
    )
    add_store_argument(seed)
    seed.add_argument("--days", type=int, default=28, help="length of the history in days (default 28)")
    seed.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    seed.add_argument("--now", help="end of the history, ISO timestamp (default: now)")
    seed.add_argument("--interval-minutes", type=int, help="demand bucket width (default: config)")
    seed.add_argument("--no-demand", action="store_true", help="write the history only")
    add_queue_pool_argument(seed)
    seed.set_defaults(func=_seed_history)

    sampler = bench.add_parser(
        "sampler", help="overhead of the worker usage sampler on a CPU-bound task (medians, ratio)"
    )
    sampler.add_argument("--json", dest="json_out", help="write the result to this JSON file")
    sampler.add_argument("--seconds", type=float, default=2.0, help="approximate task length (default 2)")
    sampler.add_argument("--repeats", type=int, default=5, help="runs per variant (default 5)")
    sampler.add_argument(
        "--intervals", default="5,0.5", help="sampler intervals to measure, seconds (default 5,0.5)"
    )
    sampler.set_defaults(func=_bench_sampler)

    from airflow_predictive_tools.bench.scaleout_cli import add_postgres_argument

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

    chooser = bench.add_parser(
        "choice",
        help="what the daily service-level choice adds to a control-loop cycle at 1,000 series (JSON)",
    )
    chooser.add_argument("--pools", type=int, default=5, help="pools to time, one choice each (5)")
    chooser.add_argument(
        "--loop-cycle-seconds",
        type=float,
        default=126.3,
        help="the control loop's cycle at 1,000 series to compare with (126.3 s, docs/benchmarks.md)",
    )
    chooser.add_argument(
        "--tries-per-day",
        type=int,
        default=0,
        help="task tries a day per pool, with a queue-wait level whose replay reads them (0: none)",
    )
    chooser.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON here")
    chooser.set_defaults(func=_bench_choice)

    target = bench.add_parser(
        "target-bound",
        help="what an explicit unmet target costs rules that read the hour and recent demand (JSON)",
        description=(
            "Per trace and set of signals (hour of the day, last steps, last hour, yesterday), the least "
            "capacity-hours that leave at most --unmet-share unmet with sizes fitted in hindsight (a lower "
            "bound), and the same fit applied to days it did not see (two-fold), against the reactive rule."
        ),
    )
    target.add_argument("traces", nargs="+", type=Path, metavar="TRACE.csv", help="trace files")
    target.add_argument("--unmet-share", type=float, default=0.005, help="the explicit target (0.005)")
    # None: the backtest's own default (read when the command runs: the backtest is slow to import)
    target.add_argument("--history", help="warm-up, not scored (the backtest's default, 3d)")
    target.add_argument("--peak-instances", type=int, help="p99 / instance (the backtest's default, 20)")
    target.add_argument("--max-instances", type=int, help="pool maximum (the backtest's default, 40)")
    target.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON here")
    target.set_defaults(func=_bench_target_bound)

    combination = bench.add_parser(
        "combination",
        help="backtest: statistical alone vs combined with the structural forecast (trace + synthetic schedule)",
    )
    combination.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="trace CSV (default: the repository's sample NAB RDS CPU trace)",
    )
    combination.add_argument("--history", default="3d", help="warm-up history (default 3d)")
    combination.add_argument("--boot-delay", default="5min", help="lead time of new capacity (default 5min)")
    combination.add_argument("--out", type=Path, help="also write the JSON here")
    combination.set_defaults(func=_bench_combination)


def _bench_choice(args: argparse.Namespace) -> int:
    from airflow_predictive_tools.bench.choice import run

    return _json_result(lambda: run(args.pools, args.loop_cycle_seconds, args.tries_per_day), args.json_out)


def _json_result(compute: Callable[[], Any], json_out: str | None) -> int:
    """Print ``compute()`` as JSON (and write it to ``json_out``); a ``ValueError`` is the user's input:
    one line on stderr, exit status 2."""
    try:
        result = compute()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")
    return 0


def _bench_target_bound(args: argparse.Namespace) -> int:
    from airflow_predictive.simulation.backtest import BacktestOptions
    from airflow_predictive_tools.bench.target_bound import run

    given = {k: getattr(args, k) for k in ("history", "peak_instances", "max_instances")}
    options = BacktestOptions(**{k: v for k, v in given.items() if v is not None})
    # a trace that cannot be read or an option out of range raises ValueError
    return _json_result(lambda: run(args.traces, args.unmet_share, options), args.json_out)


def _demo(args: argparse.Namespace) -> int:
    from airflow_predictive_tools.demo.allocation import run_demo

    return run_demo(emulator_url=args.emulator_url, as_json=args.json)


def _bench_planner(args: argparse.Namespace) -> int:
    """Time ``plan()`` on a 24-hour, 4-resource forecast view and a 6-VM pool, as the backtest calls it."""
    import statistics
    import time
    from datetime import UTC, datetime, timedelta

    from airflow_predictive.contracts.capacity import DiskState, InstanceState, PoolState
    from airflow_predictive.contracts.plan import Provisioning
    from airflow_predictive.contracts.pools import EXAMPLE_POOLS, load_pools
    from airflow_predictive.planning.planner import ForecastView, plan
    from airflow_predictive_tools.demo.allocation import demo_forecast

    if args.calls < 1:
        print("error: --calls must be at least 1", file=sys.stderr)
        return 2
    pool = load_pools(EXAMPLE_POOLS)["etl-workers"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    view = ForecastView.from_frame(
        demo_forecast(pool.name, start, {"cpu": 36, "memory": 90, "storage": 400, "network": 4000}, hours=24),
        pool.name,
    )
    state = PoolState(
        instances=tuple(
            InstanceState(
                f"vm-{i}",
                provisioning=Provisioning.SPOT if i % 3 == 0 else Provisioning.STANDARD,
                machine_type=pool.machine_type,
                created=start - timedelta(hours=i),
            )
            for i in range(6)
        ),
        disks=(DiskState("data-0", 200, "vm-0"),),
    )
    timings = []
    for k in range(args.calls):
        now = start + timedelta(minutes=5 * (k % 200))
        t0 = time.perf_counter()
        plan(view, state, pool, now, busy_instances={"vm-1"})
        timings.append((time.perf_counter() - t0) * 1000.0)
    timings.sort()
    print(
        json.dumps(
            {
                "benchmark": "planner",
                "calls": args.calls,
                "median_ms": round(statistics.median(timings), 4),
                "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 4),
            }
        )
    )
    return 0


def _seed_history(args: argparse.Namespace) -> int:
    from airflow_predictive.runtime.profile_refresh import refresh_profile
    from airflow_predictive.store import StoreError
    from airflow_predictive_tools.demo.history import generate_history

    try:
        now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
        interval = bucket_width(args.interval_minutes) or config.interval()
        queue_pools = queue_pools_from(args.queue_pool)
        if args.days < 1:
            raise ValueError(f"--days must be at least 1, got {args.days}")
        store = open_store(args.store)
        summary = generate_history(store, days=args.days, now=now, seed=args.seed)
        if not args.no_demand:
            summary["demand"] = refresh_profile(
                store, interval=interval, now=now, end=now, summary_days=args.days, queue_pools=queue_pools
            )
    except (ValueError, StoreError) as exc:
        return fail(str(exc))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _bench_sampler(args: argparse.Namespace) -> int:
    from airflow_predictive_tools.bench.sampler import sampler_overhead

    try:
        intervals = [float(v) for v in args.intervals.split(",") if v.strip()]
        if not intervals or any(v <= 0 for v in intervals):
            raise ValueError(f"--intervals must be positive numbers, got {args.intervals!r}")
        if args.repeats < 1 or args.seconds <= 0:
            raise ValueError("--repeats must be >= 1 and --seconds > 0")
    except ValueError as exc:
        return fail(str(exc))
    result = sampler_overhead(seconds=args.seconds, repeats=args.repeats, intervals=intervals)
    text = json.dumps(result, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return 0


def _bench_evaluate(args: argparse.Namespace) -> int:
    if args.series < 1 or args.hours < 1 or args.repeats < 1:
        print("--series, --hours and --repeats must be at least 1", file=sys.stderr)
        return 2
    from airflow_predictive_tools.bench.evaluate import run

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


def default_trace() -> Path:
    """The repository's sample NAB RDS CPU trace (``examples/traces``; a source checkout only)."""
    repo = Path(__file__).resolve().parents[2]  # airflow_predictive_tools/ -> tools/ -> the repository
    return repo / "examples" / "traces" / "nab_rds_cpu_utilization_e47b3b.csv"


def _bench_combination(args: argparse.Namespace) -> int:
    from airflow_predictive.simulation.backtest import BacktestOptions
    from airflow_predictive.simulation.traces import TraceError, load_trace
    from airflow_predictive_tools.bench.combination import combination_backtest

    path = args.trace or default_trace()
    try:
        trace = load_trace(path)
        options = BacktestOptions(
            history=args.history, boot_delay=args.boot_delay, sizing_defaults=config.sizing_defaults()
        )
        result = combination_backtest(trace, options)
    except (TraceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0

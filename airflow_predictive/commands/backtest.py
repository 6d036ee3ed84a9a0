"""``airflow-predictive backtest TRACE.csv [...]``: replay traces through the production planner."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from airflow_predictive import config


def register(commands, bench) -> None:
    """Add the ``backtest`` command.

    :param commands: top-level sub-parsers.
    :param bench: ``bench`` sub-parsers (unused: the backtest is a command of its own).
    """
    parser = commands.add_parser(
        "backtest",
        help="replay demand traces: predictive vs seasonal vs reactive vs oracle",
        description=(
            "Replay demand traces through the production forecaster and planner and compare the "
            "predictive policy with a seasonal-naive predictive policy, the Compute Engine "
            "reactive autoscaler rule and perfect foresight."
        ),
    )
    parser.add_argument("traces", nargs="+", metavar="TRACE.csv", help="demand trace files")
    parser.add_argument("--time-column", default=None, help="time column (default: detected)")
    parser.add_argument("--value-column", default=None, help="demand column (default: per format)")
    parser.add_argument("--sep", default=None, help="column separator (default: sniffed)")
    parser.add_argument("--interval", default=None, help="bucket size, e.g. 5min (default: inferred)")
    parser.add_argument("--peak-instances", type=int, default=20, help="p99 demand / instance (20)")
    parser.add_argument(
        "--instance-capacity",
        type=float,
        default=None,
        help="demand one instance serves, in the trace's units, e.g. 8 for a slots trace of 8-slot "
        "workers (default: p99 / --peak-instances)",
    )
    parser.add_argument(
        "--resource",
        choices=("cpu", "memory", "slots"),
        default="cpu",
        help="what the trace's demand is, as the planner sizes it: cpu or memory at each rule's "
        "utilisation, slots (task slots) planned full, the reactive rule being tasks / slots per worker (cpu)",
    )
    parser.add_argument("--boot-delay", default="5min", help="launch-to-serving delay (5min)")
    parser.add_argument("--history", default="3d", help="warm-up, not scored (3d)")
    parser.add_argument("--max-instances", type=int, default=40, help="pool maximum (40)")
    parser.add_argument(
        "--policies",
        default="reactive,seasonal,predictive,oracle",
        help="comma-separated subset of reactive,seasonal,predictive,oracle",
    )
    parser.add_argument(
        "--unmet-share",
        type=float,
        default=None,
        help="the pool's service level as a share of demand left unmet, e.g. 0.005 (default: "
        "match_reactive, no more unmet than the reactive rule)",
    )
    parser.add_argument("--sweep", action="store_true", help="trace each policy's frontier")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="traces backtested at once, a process each (1); at most the cores free for it",
    )
    parser.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write JSON")
    parser.add_argument("--report", default=None, metavar="OUT.html", help="write the HTML report")
    parser.add_argument(
        "--markdown", default=None, metavar="OUT.md", help="write the results as a Markdown table"
    )
    parser.set_defaults(func=run_backtest)


def run_backtest(args: argparse.Namespace) -> int:
    """Handle ``airflow-predictive backtest``: load, replay, print a table, write outputs.

    :param args: parsed command-line arguments.
    """
    from threadpoolctl import threadpool_limits

    # Imported by the handler: `airflow-predictive --help` imports every command module.
    from airflow_predictive.contracts.pools import ServiceLevel
    from airflow_predictive.simulation import report
    from airflow_predictive.simulation.backtest import BacktestOptions, backtest
    from airflow_predictive.simulation.traces import TraceError

    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    try:
        level = ServiceLevel(unmet_share=args.unmet_share)
    except ValueError as exc:
        print(f"airflow-predictive backtest: --unmet-share: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    options = BacktestOptions(
        service_level=level,
        sizing_defaults=config.sizing_defaults(),
        peak_instances=args.peak_instances,
        instance_capacity=args.instance_capacity,
        resource=args.resource,
        boot_delay=args.boot_delay,
        history=args.history,
        max_instances=args.max_instances,
        policies=policies,
        sweep=args.sweep,
    )
    started = time.perf_counter()
    try:
        options.validated()
        with threadpool_limits(1):
            results = backtest(
                args.traces,
                options,
                time_column=args.time_column,
                value_column=args.value_column,
                sep=args.sep,
                interval=args.interval,
                jobs=args.jobs,
            )
    except TraceError as exc:
        print(f"airflow-predictive backtest: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"airflow-predictive backtest: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    sys.stdout.write(report.text_table(results))
    for line in report.repair_lines(results):
        print(line)
    for result in results:
        for policy, line in (result.get("headlines") or {}).items():
            if line:
                print(f"{result['trace']}: {policy}: {line}")
    if args.json_out:
        report.write_json(results, args.json_out)
        print(f"JSON: {Path(args.json_out).resolve()}")
    if args.markdown:
        # The repairs were replayed as demand, so they follow the scores they went into.
        repaired = report.repairs_markdown(results)
        Path(args.markdown).write_text(
            report.markdown_table(results)
            + ("\n" + repaired if repaired else "")
            + "\n"
            + report.targets_table(results)
            + "\n"
            + report.calibration_table(results)
        )
        print(f"Markdown: {Path(args.markdown).resolve()}")
    if args.report:
        report.write_html(results, args.report)
        print(f"HTML report: {Path(args.report).resolve()}")
    print(f"{len(results)} trace(s) in {elapsed:.1f} s", file=sys.stderr)
    return 0

"""``airflow-predictive plan [--record] [--apply]``: one allocation cycle from the store and the pools.

Without ``--apply`` nothing changes on Compute Engine, whatever the pool's mode, and nothing is
written: the plan is printed only. ``--record`` also records it in the ledger as ``dry_run`` (shown
in the UI); ``--apply`` applies it and records it as the DAG does. This is how a user trials the
allocator safely.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from airflow_predictive import config, stats
from airflow_predictive.contracts.pools import PoolConfigError


def register(commands: Any, bench: Any) -> None:
    """Add ``plan`` to the ``airflow-predictive`` command.

    :param commands: top-level sub-parsers.
    :param bench: benchmark sub-parsers (unused).
    """
    parser = commands.add_parser(
        "plan",
        help="plan one allocation cycle per pool (prints only, unless --record or --apply)",
        description="Plan one allocation cycle per pool from the newest stored forecasts and the pools file. "
        "Without --apply nothing is changed on Compute Engine, whatever the pool's mode, and without "
        "--record or --apply nothing is written to the ledger.",
    )
    parser.add_argument("--pools-file", help="pools YAML (default: [predictive] pools_file)")
    parser.add_argument("--pool", action="append", dest="pools", help="only this pool (repeatable)")
    parser.add_argument(
        "--apply", action="store_true", help="apply the plan to Compute Engine (and record it)"
    )
    parser.add_argument(
        "--record", action="store_true", help="record the plan in the ledger as dry_run (shown in the UI)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--emulator-url", help="use this Compute Engine emulator (http://127.0.0.1:PORT)")
    parser.add_argument(
        "--gce-conn-id", help="GceAllocatorHook connection (default: [predictive] gce_conn_id)"
    )
    parser.add_argument(
        "--store-conn-id", help="profile store connection (default: [predictive] store_conn_id)"
    )
    parser.add_argument(
        "--busy-host",
        action="append",
        dest="busy_hosts",
        help="host running a task (repeatable; default: REST API)",
    )
    parser.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    # Imported by the handler: `airflow-predictive --help` imports every command module.
    from airflow_predictive.hooks.gce_allocator import GceAllocatorHook
    from airflow_predictive.hooks.profile_store import configured_store
    from airflow_predictive.operators.preemptive_allocate import allocate_pools, running_tasks_reader
    from airflow_predictive.planning.busy import given_hosts

    pools_file = args.pools_file or str(config.get_path("pools_file"))
    stats.install()
    try:
        pools = config.load_configured_pools(pools_file)
    except (PoolConfigError, config.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = args.pools or sorted(pools)
    unknown = [n for n in names if n not in pools]
    if unknown:
        print(
            f"error: pool(s) {', '.join(unknown)} not in {pools_file}; known: {', '.join(sorted(pools))}",
            file=sys.stderr,
        )
        return 2
    hook = GceAllocatorHook(args.gce_conn_id or config.get("gce_conn_id"), emulator_url=args.emulator_url)
    tasks = (
        given_hosts(args.busy_hosts)
        if args.busy_hosts is not None
        else running_tasks_reader(config.get("api_conn_id"))
    )
    store = configured_store(args.store_conn_id)
    try:
        results = allocate_pools(
            [pools[n] for n in names],
            store,
            hook,
            now=None,
            tasks=tasks,
            apply=args.apply,
            record=args.record or args.apply,
        )
    finally:
        store.dispose()
    for result in results:
        if result.error:
            print(f"error: pool {result.pool}: {result.error}", file=sys.stderr)
    print_results(results, as_json=args.json, recorded=args.record or args.apply)
    return 1 if any(r.error or r.outcome.failed for r in results) else 0


def print_results(results: list, *, as_json: bool = False, out: Any = None, recorded: bool = True) -> None:
    """Print cycle results as a table (each action with its reason) or JSON.

    :param results: CycleResult objects.
    :param as_json: print JSON.
    :param out: stream (default stdout).
    :param recorded: the plans were recorded in the ledger (False: a preview).
    """
    out = out or sys.stdout
    if as_json:
        payload = [
            r.plan.to_dict()
            | {"outcome": r.outcome.as_dict(), "applied": r.applied_mode, "recorded": recorded}
            if r.plan
            else r.summary()
            for r in results
        ]
        print(json.dumps(payload, indent=2, default=str), file=out)
        return
    for r in results:
        if r.plan is None:
            print(f"pool {r.pool}: {'error: ' + r.error if r.error else 'skipped: ' + r.skipped}", file=out)
            continue
        s = r.plan.summary
        mode = "APPLY" if r.applied_mode else "DRY RUN (nothing changed)"
        if not r.applied_mode and not recorded:
            mode = "PREVIEW (nothing changed, nothing recorded)"
        print(
            f"pool {r.pool} [{r.plan.mode}] {mode}: instances {s.get('instances_before')} -> "
            f"{s.get('instances_after')}, cost/h {s.get('cost_before')} -> {s.get('cost_after')}",
            file=out,
        )
        if not r.plan.actions:
            print("  (no action)", file=out)
        else:
            print(f"  {'KIND':<17} {'AMOUNT':>7} {'PROVISIONING':<12} {'TARGET':<28} STATUS", file=out)
        for a in r.plan.actions:
            print(
                f"  {str(a.kind):<17} {a.amount:>7g} {str(a.provisioning):<12} {a.target or '-':<28} {a.status}",
                file=out,
            )
            for line in textwrap.wrap(a.reason, 110):
                print(f"      {line}", file=out)
            if a.error:
                print(f"      ERROR: {a.error}", file=out)
        for cap in r.plan.capped:
            print(f"  capped: {cap}", file=out)

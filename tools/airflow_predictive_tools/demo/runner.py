"""``airflow-predictive demo``: the control loop on embedded defaults, end to end, through real Airflow.

1. Generate weeks of a realistic organisation's Airflow history into a SQLite ProfileStore and build
   its demand series (the profiler's own generator and builder).
2. Start the local Compute Engine emulator (the real google-cloud-compute client talks to it) and an
   Airflow API server on 127.0.0.1 (the profiler sensor reads the REST API, as in production).
3. Run the last day of that history through the control loop on a simulated clock (the DAG's own
   operators, cycle after cycle: forecast -> allocate -> evaluate; :mod:`.day`), so the report shows a
   day of forecasts, capacity, actions and accuracy.
4. Run the control-loop DAG ``predictive_scaling`` once with ``airflow dags test`` for the cycle at the
   present: profile -> forecast -> allocate (a real plan applied to the emulator for pools in
   ``forecast_and_scale``) -> evaluate.
5. Print the forecasts, the actions with their reasons and what the emulator now runs; backtest the
   demo pool's history (predictive vs seasonal vs reactive vs oracle); write the report pages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml

from airflow_predictive import config
from airflow_predictive.contracts.pools import EXAMPLE_POOLS

DAG_ID = "predictive_scaling"
BACKTEST_SERIES = "pool=etl-workers/resource=cpu"
BACKTEST_DAYS = 10
#: Actions printed with their reasons at the end of the day (the rest are in the ledger and the report).
LAST_ACTIONS = 6


def repo_dags_folder() -> Path:
    folder = Path(__file__).resolve().parents[3] / "dags"
    if not (folder / "predictive_scaling.py").exists():
        raise FileNotFoundError(
            f"the control-loop DAG is not at {folder}/predictive_scaling.py: run the demo from a checkout "
            "of the repository (make demo)"
        )
    return folder


def run_demo(
    home: Path,
    *,
    days: int = 21,
    day_hours: float = 24,
    cycle_minutes: float = 60,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Run a simulated day of the control loop and one real DAG run on embedded defaults, and report it.

    :param home: working folder (AIRFLOW_HOME, profile store, pools file, reports); emptied first.
    :param days: days of generated history to learn from.
    :param day_hours: length of the simulated stretch of control-loop cycles before the real DAG run.
    :param cycle_minutes: simulated cycle length.
    :param out: where the human-readable account goes (default stdout).
    :return: what happened, for tests: counts, paths, actions.
    """
    from airflow_predictive.runtime.profile_refresh import refresh_profile
    from airflow_predictive.store import ProfileStore
    from airflow_predictive_tools.demo.allocation import seed_groups
    from airflow_predictive_tools.demo.history import generate_history
    from airflow_predictive_tools.deployment import AirflowDeployment, airflow_cli
    from airflow_predictive_tools.emulator.server import EmulatorControl, running_emulator

    out = out or sys.stdout
    started = time.monotonic()
    home = Path(home).resolve()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    pools_file = home / "pools.yaml"
    _write_pools(pools_file, planning_interval_minutes=cycle_minutes)
    pools = config.load_configured_pools(pools_file)
    store_path = home / "profile.db"
    reports = home / "reports"
    reports.mkdir()

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    with contextlib.ExitStack() as stack:
        emulator_url = stack.enter_context(running_emulator(config={"boot_seconds": 1.0}))
        for pool in pools.values():
            if pool.backend == "managed_instance_group":
                seed_groups(EmulatorControl(emulator_url), pool)
        env = {
            "AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path),
            "AIRFLOW__PREDICTIVE__POOLS_FILE": str(pools_file),
            "AIRFLOW__PREDICTIVE__EMULATOR_URL": emulator_url,
        }
        # This process reads the same [predictive] settings as the Airflow tasks it starts.
        for key, value in env.items():
            stack.callback(_restore_env, key, os.environ.get(key))
            os.environ[key] = value

        now = datetime.now(UTC).replace(second=0, microsecond=0)
        store = ProfileStore.sqlite(store_path)
        stack.callback(store.dispose)
        history = generate_history(store, days=days, now=now)
        demand = refresh_profile(
            store,
            interval=config.interval(),
            now=now,
            end=now,
            summary_days=days,
            queue_pools=config.configured_queue_pools(),
        )
        series = store.series_ids()
        say(
            f"== 1. history: {history['dag_runs']} DAG runs, {history['task_runs']} task tries by "
            f"{len(history['users'])} users over {days} days -> {len(series)} demand series"
        )

        airflow = stack.enter_context(
            AirflowDeployment(home / "airflow", repo_dags_folder(), components=("api-server",), env=env)
        )
        api_conn = airflow.api_connection()
        say(f"== 2. Airflow API server on {airflow.base_url}; Compute Engine emulator on {emulator_url}")
        # The simulated day runs the operators in this process: give it the deployment's environment
        # (AIRFLOW_HOME before Airflow is first imported, and the REST API connection).
        for key, value in {**airflow.env, "AIRFLOW_CONN_PREDICTIVE_AIRFLOW_API_DEFAULT": api_conn}.items():
            if os.environ.get(key) != value:
                stack.callback(_restore_env, key, os.environ.get(key))
                os.environ[key] = value
        say(
            f"== 3. a simulated day: the control loop every {cycle_minutes:g} min over the last {day_hours:g} h"
        )
        from airflow_predictive_tools.demo.day import run_day

        day = run_day(now, hours=day_hours, every=timedelta(minutes=cycle_minutes), say=say)
        say(
            f"   {day['cycles']} cycles in {day['seconds']:.0f} s"
            + (f"; {len(day['failures'])} with failed actions (in the ledger)" if day["failures"] else "")
        )
        cycle_started = time.monotonic()
        result = airflow_cli(
            "dags",
            "test",
            DAG_ID,
            env=dict(os.environ),
            timeout=600,
            check=False,
        )
        (home / "dags-test.log").write_text(result.stdout + result.stderr)
        cycle_seconds = time.monotonic() - cycle_started
        if result.returncode != 0 or "state=success" not in (result.stdout + result.stderr).replace(
            ", ", " "
        ):
            failed = _failed_tasks(result.stdout + result.stderr)
            say(f"control loop failed{failed}; full log: {home / 'dags-test.log'}")
            raise RuntimeError(f"airflow dags test {DAG_ID} failed; see {home / 'dags-test.log'}")
        say(f"== 4. control loop now (airflow dags test {DAG_ID}) succeeded in {cycle_seconds:.0f} s")

        forecasts = store.latest_forecasts()
        say(_forecast_table(forecasts))
        actions = store.actions()
        say(f"\n== 5. the ledger: {len(actions)} actions over the day")
        say(_ledger_counts(actions))
        last = actions.sort_values("created_at").tail(LAST_ACTIONS) if not actions.empty else actions
        say(f"the last {len(last)}, each with its reason:")
        say(_actions_table(last))
        live = _emulator_instances(EmulatorControl(emulator_url).state())
        say(
            f"\nthe emulator now runs {len(live)} instances: "
            + ", ".join(f"{name} ({status.lower()}, {model.lower()})" for name, status, model in live)
        )

        say("\n== 6. backtest of the demo pool's own history (same forecaster and planner)")
        backtest = _backtest(store, reports / "backtest.html", out)
        binding = {name: _binding_resource(store, pool) for name, pool in sorted(pools.items())}
        for name, found in binding.items():
            say(_binding_line(name, found))
        report_path = _write_report(store, reports / "forecast-report.html")
        say(f"\nreport page: {report_path}")
        say(f"backtest report: {reports / 'backtest.html'}")
        say(f"done in {time.monotonic() - started:.0f} s (AIRFLOW_HOME={home / 'airflow'})")
        return {
            "series": series,
            "demand": demand,
            "forecast_series": sorted(forecasts["series_id"].unique()) if not forecasts.empty else [],
            "actions": actions.to_dict("records"),
            "instances": live,
            "backtest": backtest,
            "binding": binding,
            "report": str(report_path),
            "cycle_seconds": cycle_seconds,
            "day": day,
        }


def _write_pools(path: Path, *, planning_interval_minutes: float) -> None:
    """The example pools, each planning for the demo's cycle length (a plan must last until the next)."""
    document = yaml.safe_load(EXAMPLE_POOLS.read_text())
    for settings in document["pools"].values():
        settings.setdefault("policy", {})["planning_interval_minutes"] = planning_interval_minutes
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _ledger_counts(actions: Any) -> str:
    """Actions per pool, kind and status, one line each."""
    if actions.empty:
        return "   (none)"
    counts = actions.groupby(["pool", "kind", "status"]).size()
    return "\n".join(
        f"   {pool:<14} {kind:<18} {status:<8} {n:>4}" for (pool, kind, status), n in counts.items()
    )


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _failed_tasks(log: str) -> str:
    failed = sorted(
        {
            line.split("task_id=")[1].split()[0]
            for line in log.splitlines()
            if "state=failed" in line and "task_id=" in line
        }
    )
    return f" (failed tasks: {', '.join(failed)})" if failed else ""


def _forecast_table(forecasts: Any) -> str:
    if forecasts.empty:
        return "no forecasts were stored"
    lines = [
        f"{'series':<40} {'model':<14} {'next hour mean':>14} {'next hour q0.9':>14} {'24 h peak q0.9':>14}"
    ]
    for sid, rows in forecasts.groupby("series_id"):
        first_hour = rows.head(12)
        lines.append(
            f"{sid:<40} {rows['model'].iloc[0]:<14} {first_hour['mean'].mean():>14.2f} "
            f"{first_hour['q0.9'].max():>14.2f} {rows['q0.9'].max():>14.2f}"
        )
    return "\n".join(lines)


def _actions_table(actions: Any) -> str:
    if actions.empty:
        return "no actions: every pool already had the capacity its forecast needs"
    lines = []
    for row in actions.itertuples():
        lines.append(
            f"- [{row.status}] {row.pool}: {row.kind} {row.amount:g} {row.resource} ({row.provisioning})"
            f"{' -> ' + row.target if row.target else ''}\n    why: {row.reason}"
            + (f"\n    error: {row.error}" if row.error else "")
        )
    return "\n".join(lines)


def _emulator_instances(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    found = []
    for instance in _walk_instances(state):
        scheduling = instance.get("scheduling") or {}
        found.append(
            (instance["name"], instance.get("status", "?"), scheduling.get("provisioningModel", "STANDARD"))
        )
    return sorted(found)


def _walk_instances(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("kind") == "compute#instance" and "name" in node:
            return [node]
        return [i for value in node.values() for i in _walk_instances(value)]
    if isinstance(node, list):
        return [i for value in node for i in _walk_instances(value)]
    return []


def _backtest(store: Any, report: Path, out: TextIO) -> dict[str, Any]:
    from airflow_predictive.simulation.backtest import BacktestOptions, backtest_trace, series_from_demand
    from airflow_predictive.simulation.report import text_table, write_html

    # The last 10 days (3 of warm-up, 7 scored) keep the demo within its few minutes. The shared loader
    # fills gaps (buckets the profiler did not observe are NULL) as the backtest of trace files does.
    series = series_from_demand(store.demand([BACKTEST_SERIES]), BACKTEST_SERIES)
    series = series[series.index >= series.index.max() - timedelta(days=BACKTEST_DAYS)]
    result = backtest_trace(series, BacktestOptions(sizing_defaults=config.sizing_defaults()))
    print(text_table([result]), file=out)
    write_html([result], report)
    return result


def _binding_resource(store: Any, pool: Any) -> dict[str, Any]:
    """Which resource sizes ``pool`` over the backtest days: cpu, memory or task slots (the oracle's
    fleet, so the demand decides, not a forecast's errors)."""
    from airflow_predictive.contracts.demand import series_id
    from airflow_predictive.simulation.backtest import BacktestOptions, backtest_resources, series_from_demand

    capacity = {"cpu": pool.machine.vcpus, "memory": pool.machine.memory_gib, "slots": pool.slots}
    series = {}
    for resource in capacity:
        sid = series_id(pool.name, resource)
        trace = series_from_demand(store.demand([sid]), sid)
        series[resource] = trace[trace.index >= trace.index.max() - timedelta(days=BACKTEST_DAYS)]
    return backtest_resources(
        series, capacity, BacktestOptions(policies=("oracle",), max_instances=pool.max_instances)
    )


def _binding_line(name: str, found: dict[str, Any]) -> str:
    oracle = found["policies"]["oracle"]
    alone = ", ".join(f"{r} {h:g}" for r, h in sorted(oracle["binding_hours"].items()))
    what = (
        f"{found['binding'].removesuffix('s')}-bound" if found["binding"] else "bound by no single resource"
    )
    return (
        f"   {name} is {what}: {oracle['instance_hours']:g} instance-hours with perfect foresight; "
        f"instance-hours each resource alone adds: {alone}"
    )


def _write_report(store: Any, path: Path) -> Path:
    from airflow_predictive.feedback.report import write_report

    return write_report(store, path, now=datetime.now(UTC) + timedelta(minutes=1))

"""The allocator demo: real plans applied to the local Compute Engine emulator, each action with its reason.

Three cycles on the example pools with generated forecasts: a morning ramp (launch standard + spot,
grow storage), a re-run of the same cycle (nothing new: request ids), and an evening lull where
one VM still runs a task (only idle VMs are released, spot first).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, quantile_column

SPREAD = {0.5: 1.0, 0.8: 1.1, 0.9: 1.2, 0.95: 1.3, 0.99: 1.5}


def demo_forecast(pool: str, issued: datetime, levels: dict[str, float], hours: int = 6) -> pd.DataFrame:
    """A flat forecast frame (contract columns) for ``pool`` issued at ``issued``.

    :param pool: pool name.
    :param issued: issue time; buckets start there, 5 minutes apart.
    :param levels: resource -> median demand.
    :param hours: horizon.
    """
    rows = []
    for resource, value in levels.items():
        for k in range(hours * 12):
            row = {
                "series_id": f"pool={pool}/resource={resource}",
                "ts": issued + timedelta(minutes=5 * k),
                "mean": value,
                "model": "demo",
                "fallback": "",
                "issued_at": issued,
            }
            row.update({quantile_column(q): value * SPREAD[q] for q in DEFAULT_QUANTILES})
            rows.append(row)
    return pd.DataFrame(rows)


def run_demo(emulator_url: str | None = None, as_json: bool = False, out: Any = None) -> int:
    """Run three allocation cycles against the emulator and print them.

    :param emulator_url: a running emulator (default: start one on a free 127.0.0.1 port).
    :param as_json: print JSON.
    :param out: output stream.
    """
    from airflow_predictive.commands.plan import print_results
    from airflow_predictive.contracts.pools import EXAMPLE_POOLS, load_pools
    from airflow_predictive.gce.compute import ComputeEngine
    from airflow_predictive.runtime.allocation_cycle import run_cycle
    from airflow_predictive.store import ProfileStore
    from airflow_predictive_tools.emulator.server import EmulatorControl, running_emulator

    out = out or sys.stdout
    # the table below shows every action with its reason; the per-action log lines would repeat it
    for name in ("airflow_predictive.runtime", "airflow_predictive.planning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    pools = load_pools(EXAMPLE_POOLS)
    etl, ml = pools["etl-workers"], pools["ml-training"]
    with contextlib.ExitStack() as stack:
        url = emulator_url or stack.enter_context(running_emulator(config={"boot_seconds": 0.3}))
        control = EmulatorControl(url)
        seed_groups(control, ml)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="predictive-allocate-demo-")))
        store = ProfileStore.sqlite(folder / "profile.db")
        stack.callback(store.dispose)
        morning = datetime.now(UTC).replace(second=0, microsecond=0)
        store.write_forecasts(
            pd.concat(
                [
                    demo_forecast(
                        etl.name, morning, {"cpu": 36, "memory": 90, "storage": 400, "network": 4000}
                    ),
                    demo_forecast(ml.name, morning, {"cpu": 40, "memory": 300}),
                ]
            )
        )
        steps = [
            ("1. morning ramp: provision ahead of the forecast", morning, []),
            ("2. the same cycle re-run (a retried task): nothing new is created", morning, []),
        ]
        for title, now, busy in steps:
            print(f"\n== {title}", file=out)
            results = [
                run_cycle(p, store, ComputeEngine(p.project, p.zone, endpoint=url), now=now, busy_hosts=busy)
                for p in (etl, ml)
            ]
            print_results(results, as_json=as_json, out=out)
        # evening: demand falls; one VM still runs a task
        evening = morning + timedelta(hours=9)
        store.write_forecasts(
            demo_forecast(etl.name, evening, {"cpu": 4, "memory": 10, "storage": 400, "network": 500})
        )
        engine = ComputeEngine(etl.project, etl.zone, endpoint=url)
        live = engine.pool_state(etl).live()
        busy_vm = sorted(i.name for i in live)[0] if live else ""
        print(f"\n== 3. evening lull: only idle VMs are released ({busy_vm or 'none'} runs a task)", file=out)
        result = run_cycle(
            etl, store, engine, now=evening, busy_hosts=[f"{busy_vm}.{etl.zone}.c.{etl.project}.internal"]
        )
        print_results([result], as_json=as_json, out=out)
        after = engine.pool_state(etl)
        print(
            f"\nemulator now holds {len(after.live())} live etl-workers VMs "
            f"({', '.join(sorted(i.name + ':' + str(i.provisioning) for i in after.live()))}); "
            f"{len(store.actions())} actions in the ledger",
            file=out,
        )
    return 0


def seed_groups(control: Any, pool: Any) -> None:
    """Create the MIGs (standard and spot templates) the example ML pool names."""

    def template(name: str, spot: bool) -> dict[str, Any]:
        props: dict[str, Any] = {
            "machineType": pool.machine_type,
            "disks": [
                {
                    "boot": True,
                    "autoDelete": True,
                    "initializeParams": {"sourceImage": pool.launch.source_image},
                }
            ],
            "networkInterfaces": [{"network": pool.launch.network}],
            "labels": {"predictive-pool": pool.name},
        }
        if spot:
            props["scheduling"] = {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"}
        return {"name": name, "properties": props}

    control.seed(
        project=pool.project,
        zone=pool.zone,
        instanceTemplates=[template(f"{pool.group}-tpl", False), template(f"{pool.spot_group}-tpl", True)],
        instanceGroupManagers=[
            {
                "name": pool.group,
                "instanceTemplate": f"global/instanceTemplates/{pool.group}-tpl",
                "targetSize": 0,
                "baseInstanceName": pool.group,
            },
            {
                "name": pool.spot_group,
                "instanceTemplate": f"global/instanceTemplates/{pool.spot_group}-tpl",
                "targetSize": 0,
                "baseInstanceName": pool.spot_group,
            },
        ],
    )

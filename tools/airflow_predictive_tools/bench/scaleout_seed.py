"""Seed a profile store with a production-like steady state: demand history and warm model states.

A deployment that has run for a while has a model state for every series; only new series pay for
auto-ARIMA order selection. The integration test and ``bench scaleout`` start from that steady state
so the mapped forecast tasks run the warm path (re-filter, a rotating share re-estimated) that a
cluster runs every cycle. Order selection runs for real on a few donor series; the other series take
a donor's orders and parameters rescaled to their own level (as ``bench forecast`` does).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

RESOURCES = ("cpu", "memory", "storage", "network")


def pool_names(series: int, prefix: str = "scale") -> list[str]:
    """The pools that hold ``series`` series (four resources per pool).

    :param series: number of series (a multiple of 4 gives whole pools).
    :param prefix: pool name prefix.
    """
    return [f"{prefix}-{i:04d}" for i in range((series + 3) // 4)]


def seed_steady_state(
    store: Any,
    series: int,
    *,
    end: datetime,
    days: int = 4,
    prefix: str = "scale",
    donors: int = 1,
    seed: int = 0,
) -> list[str]:
    """Write ``series`` generated demand series ending at ``end`` and a model state for each.

    :param store: the ProfileStore to fill.
    :param series: number of series (pools of four resources: cpu, memory, storage, network).
    :param end: timestamp of the last demand bucket (aligned to 5 minutes by the caller).
    :param days: days of 5-minute history per series (the forecaster needs at least 2).
    :param prefix: pool name prefix (``<prefix>-0000`` ...).
    :param donors: series on which order selection really runs; the others copy a donor's state.
    :param seed: random seed of the generated demand.
    :return: the series ids written.
    """
    from airflow_predictive.forecasting.auto_arima import robust_scale
    from airflow_predictive.forecasting.engine import MODEL_NAME, Forecaster
    from airflow_predictive_tools.bench.forecasting import generate_history

    if series < 1 or donors < 1:
        raise ValueError(f"series and donors must be at least 1, got series={series}, donors={donors}")
    history = generate_history(series, days=days, seed=seed, end=end)
    history["series_id"] = history["series_id"].str.replace("pool=bench-", f"pool={prefix}-", regex=False)
    store.write_demand(history)  # COPY + one merge on PostgreSQL
    ids = list(dict.fromkeys(history["series_id"]))

    forecaster = Forecaster(select_workers=0)
    donor_ids = ids[:donors]
    selected = forecaster.select(history[history["series_id"].isin(donor_ids)], now=end)
    if not selected:
        raise RuntimeError(f"order selection failed on every donor series: {forecaster.errors}")
    donor_states = list(selected.values())
    windows = forecaster.windows(history, end)
    period = forecaster.period
    records = []
    for i, sid in enumerate(ids):
        state = dict(selected.get(sid) or donor_states[i % len(donor_states)])
        if sid not in selected:
            state["scale"] = robust_scale(windows[sid].values[-period:])
        # Staggered fit times, oldest first, as a deployment that re-estimates a share every cycle has.
        fitted_at = end - timedelta(minutes=60) + timedelta(seconds=i * 3600 / len(ids))
        records.append({"series_id": sid, "model": MODEL_NAME, "state": state, "fitted_at": fitted_at})
    store.save_model_states(records)
    return ids


def pools_yaml(pools: list[str], *, scale: list[str], project: str = "scale-project") -> str:
    """A capacity pools file: ``scale`` pools in forecast_and_scale, the others forecast_only.

    :param pools: every pool (queue = pool name).
    :param scale: the pools the allocator applies plans to (the rest are planned and recorded).
    :param project: the Compute Engine project.
    """
    lines = ["pools:"]
    for name in pools:
        lines += [
            f"  {name}:",
            f"    project: {project}",
            "    zone: us-central1-a",
            "    backend: instances",
            "    machine_type: n2-standard-8",
            "    min_instances: 0",
            "    max_instances: 6",
            f"    mode: {'forecast_and_scale' if name in scale else 'forecast_only'}",
        ]
    return "\n".join(lines) + "\n"

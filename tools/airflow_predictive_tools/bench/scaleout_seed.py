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


def forecast_frame(ids: list[str], issued: datetime, steps: int, leads: list[int] | None = None) -> Any:
    """A forecast issue of every series in the forecaster's shape: mean and five quantiles per step.

    :param ids: the series.
    :param issued: the issue time (aligned to 5 minutes).
    :param steps: the horizon, in 5-minute steps.
    :param leads: only these lead steps (default: every step of the horizon).
    """
    import numpy as np
    import pandas as pd

    from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES

    leads = leads or list(range(1, steps + 1))
    ts = pd.DatetimeIndex([issued + timedelta(minutes=5 * lead) for lead in leads])
    phase = np.array(leads) * 2 * np.pi / 288
    level = np.repeat(np.arange(len(ids)) % 7 + 3.0, len(leads))
    mean = level + np.tile(np.sin(phase), len(ids))
    frame = pd.DataFrame(
        {
            "series_id": np.repeat(ids, len(leads)),
            "ts": np.tile(ts, len(ids)),
            "mean": mean,
            "model": "auto_arima",
            "fallback": "",
            "issued_at": issued,
        }
    )
    for number, level_q in enumerate(DEFAULT_QUANTILES):
        frame[f"q{level_q:g}"] = mean + 0.5 * number
    return frame


def seed_forecast_day(store: Any, ids: list[str], *, end: datetime, steps: int = 288) -> int:
    """Store the issues a 5-minute loop made over the day before ``end``, as the store keeps them.

    Issues before the newest hold only the scored lead times, so each is written with just those steps
    (what writing the whole horizon and trimming at the next issue leaves, at a fraction of the cost);
    the issue at ``end`` holds its whole horizon. Returns the issues written per series.

    :param store: the ProfileStore.
    :param ids: the series.
    :param end: the newest issue's time (aligned to 5 minutes).
    :param steps: the horizon, in 5-minute steps.
    """
    import pandas as pd

    from airflow_predictive.store.forecast_arrays import lead_steps_kept

    cycles, per_write = 288, 24  # two hours of issues per write: 12 writes instead of 288
    leads = lead_steps_kept(steps)
    for first in range(cycles, 0, -per_write):
        issued = [end - timedelta(minutes=5 * k) for k in range(first, max(first - per_write, 0), -1)]
        store.write_forecasts(pd.concat(forecast_frame(ids, at, steps, leads) for at in issued))
    store.write_forecasts(forecast_frame(ids, end, steps))
    return cycles + 1


def simulated_day_size(store: Any, ids: list[str], *, end: datetime, steps: int = 288) -> dict[str, Any]:
    """Write a day of 5-minute cycles' forecasts (whole horizons, trimmed as the forecast tasks trim them)
    into an empty PostgreSQL store; its forecast rows and bytes (table, indexes, TOAST) per series.

    :param store: an empty ProfileStore on PostgreSQL.
    :param ids: the sample of series.
    :param end: the last cycle's time.
    :param steps: the horizon, in 5-minute steps.
    """
    import sqlalchemy as sa

    cycles = 288
    for k in range(cycles - 1, -1, -1):
        store.write_forecasts(forecast_frame(ids, end - timedelta(minutes=5 * k), steps))
    size = "SELECT pg_total_relation_size('forecast_issues')"
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM forecast_issues")).scalar_one()
        # Trimming rewrites each superseded issue once: until (auto)vacuum reuses the old versions' space
        # the table holds them too. Both figures are reported; the compacted one is what the rows take.
        written = conn.execute(sa.text(size)).scalar_one()
        conn.exec_driver_sql("VACUUM FULL forecast_issues")
        compacted = conn.execute(sa.text(size)).scalar_one()
    per_series = len(ids)
    return {
        "sample_series": per_series,
        "cycles": cycles,
        "horizon_steps": steps,
        "rows_per_series_per_day": round(rows / per_series, 1),
        "bytes_per_series_per_day": round(compacted / per_series),
        "bytes_per_series_per_day_before_vacuum": round(written / per_series),
    }

"""Combine the statistical (auto-ARIMA) forecast with the structural one without counting work twice.

Past demand already contains the scheduled DAG runs, so an auto-ARIMA model fitted on total demand
forecasts them too (as a smeared daily pattern); adding the structural forecast on top counts them
twice. The combination used by default (``residual``):

1. **fit the statistical model on the residual**: observed demand minus the demand of scheduled
   DAG runs (:func:`known_work_demand`, built from the same task runs by the same demand-series
   builder), so it learns only the ad-hoc part (manual triggers, sensors, backfills);
2. **add known work back**: the structural forecast of scheduled runs (upcoming and in progress) is
   added bucket by bucket;
3. **ad-hoc work** the structural model knows about (manual runs in progress, Markov-predicted
   triggers) is already what the residual model forecasts on average, so the two are merged with a
   per-bucket maximum, not a sum.

Quantiles add level by level (comonotone sum): an upper bound of the true quantile of the sum, so a
planner reading ``q0.95`` is never under-provisioned by the combination itself. ``sum`` (naive
addition) and ``max`` (per-bucket maximum of statistical-on-total and structural) are kept to be
measured against: see ``airflow-predictive bench combination`` and the README for the numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from airflow_predictive.contracts.forecast import KNOWN
from airflow_predictive.forecasting.structural import StructuralForecast, add_frames
from airflow_predictive.profiling.demand_series import build_demand

RESIDUAL, SUM, MAX = "residual", "sum", "max"
#: What :func:`combine` implements: ``residual`` (the default) and the two it is measured against.
METHODS = (RESIDUAL, SUM, MAX)
#: The statistical forecast alone (no known work combined in).
NONE = "none"
#: ``[predictive] combination`` values the control loop accepts: the default method, or none.
COMBINATIONS = (RESIDUAL, NONE)
MODEL_NAME = "combined"


def scheduled_run_keys(
    dag_runs: pd.DataFrame, dag_ids: Collection[str] | None = None
) -> set[tuple[str, str]]:
    """``(dag_id, run_id)`` of the scheduled DAG runs (of ``dag_ids``, if given).

    :param dag_runs: ``ProfileStore.dag_runs()`` rows (``run_type`` tells scheduled runs apart).
    :param dag_ids: only these DAGs.
    """
    scheduled = dag_runs[dag_runs["run_type"].astype(str).str.contains("scheduled", na=False)]
    if dag_ids is not None:
        scheduled = scheduled[scheduled["dag_id"].isin(list(dag_ids))]
    return set(zip(scheduled["dag_id"], scheduled["run_id"], strict=True))


def of_runs(rows: pd.DataFrame, keys: set[tuple[str, str]]) -> list[bool]:
    """Which rows (task runs, usage samples) belong to the DAG runs ``keys``."""
    return [(d, r) in keys for d, r in zip(rows["dag_id"], rows["run_id"], strict=True)]


def known_work_demand(
    task_runs: pd.DataFrame,
    dag_runs: pd.DataFrame,
    *,
    start: datetime,
    end: datetime,
    interval: timedelta = timedelta(minutes=5),
    queue_pools: Mapping[str, str] | None = None,
    pools: Sequence[str] | None = None,
    usage_samples: pd.DataFrame | None = None,
    dag_ids: Collection[str] | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Past demand of scheduled DAG runs (the part the structural forecast predicts), as demand series.

    Only the DAGs whose future the structural forecast covers should be subtracted (``dag_ids``): a
    DAG that is deleted, paused or unknown to the API server has no upcoming runs to add back, so its
    past runs must stay in the residual for the statistical model to carry on forecasting them.

    :param task_runs: ``ProfileStore.task_runs()`` rows.
    :param dag_runs: ``ProfileStore.dag_runs()`` rows (``run_type`` tells scheduled runs apart).
    :param start: first bucket.
    :param end: end of the last bucket.
    :param interval: bucket width.
    :param queue_pools: ``{queue: capacity pool}``.
    :param pools: pools that must appear even without scheduled runs.
    :param usage_samples: ``ProfileStore.usage_samples()`` rows (optional, as for total demand).
    :param dag_ids: only runs of these DAGs (default: every DAG's scheduled runs).
    :param now: where still-running runs end (default: the clock), as for total demand.
    """

    keys = scheduled_run_keys(dag_runs, dag_ids)
    runs = task_runs[of_runs(task_runs, keys)]
    samples = None
    if usage_samples is not None and len(usage_samples):
        samples = usage_samples[of_runs(usage_samples, keys)]
    pool_names = sorted(set(pools or ()))
    # Every resource, slots included: the structural forecast adds each of them back.
    return build_demand(
        runs,
        samples,
        start=start,
        end=end,
        interval=interval,
        queue_pools=queue_pools,
        pools=pool_names or None,
        now=now,
    )


def residual_demand(total: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """Observed demand minus known work, never below zero; gaps stay gaps.

    :param total: demand series (``series_id, ts, value``).
    :param known: demand of known (scheduled) work on the same grid.
    """
    merged = total.merge(
        known.rename(columns={"value": "known"}), on=["series_id", "ts"], how="left", validate="one_to_one"
    )
    merged["value"] = (merged["value"] - merged["known"].fillna(0.0)).clip(lower=0.0)
    return merged[["series_id", "ts", "value"]]


def _value_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c == "mean" or (c.startswith("q") and c[1:2].isdigit())]


def _align(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> list[pd.DataFrame]:
    """Reindex every frame on the union of (series_id, ts), zeros where a frame has no row."""
    index = pd.MultiIndex.from_frame(
        pd.concat([f[["series_id", "ts"]] for f in frames], ignore_index=True).drop_duplicates()
    )
    return [f.set_index(["series_id", "ts"])[list(columns)].reindex(index, fill_value=0.0) for f in frames]


def combine(
    statistical: pd.DataFrame,
    structural: StructuralForecast,
    *,
    method: str = "residual",
) -> pd.DataFrame:
    """One forecast frame (forecast contract) from the statistical and the structural forecasts.

    :param statistical: the auto-ARIMA forecast: fitted on residual demand for ``residual``, on total
        demand for ``sum`` and ``max``.
    :param structural: :func:`~airflow_predictive.forecasting.structural.structural_forecast` output.
    :param method: ``residual`` (default), ``sum`` or ``max``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown combination method {method!r}; expected one of {', '.join(METHODS)}")
    frames = [f for f in (statistical, structural.scheduled, structural.adhoc) if f is not None and len(f)]
    if not frames:
        return statistical.copy()
    columns = _value_columns(frames[0])
    stat, scheduled, adhoc = _align(
        [
            f if f is not None and len(f) else frames[0].iloc[0:0]
            for f in (statistical, structural.scheduled, structural.adhoc)
        ],
        columns,
    )
    if method == "sum":
        values = stat + scheduled + adhoc
    elif method == "max":
        values = np.maximum(stat, scheduled + adhoc)
    else:
        values = scheduled + np.maximum(stat, adhoc)
    out = values.reset_index()
    # Known work at its upper schedule (every upper quantile of scheduled work is the same envelope):
    # what the planner provisions for under any rule, the reactive fallback included.
    levels = [c for c in columns if c != "mean"]
    upper = max(levels, key=lambda c: float(c[1:])) if levels else "mean"
    out[KNOWN] = scheduled[upper].to_numpy()
    out["model"] = MODEL_NAME if method == "residual" else f"{MODEL_NAME}_{method}"
    fallback = statistical.set_index(["series_id"])["fallback"] if len(statistical) else None
    out["fallback"] = (
        out["series_id"].map(fallback[~fallback.index.duplicated()]).fillna("")
        if fallback is not None
        else ""
    )
    issued = [pd.Timestamp(f["issued_at"].iloc[0]) for f in frames]
    out["issued_at"] = max(issued)
    return out[["series_id", "ts", *columns, KNOWN, "model", "fallback", "issued_at"]].sort_values(
        ["series_id", "ts"], ignore_index=True
    )


__all__ = [
    "COMBINATIONS",
    "MAX",
    "METHODS",
    "NONE",
    "RESIDUAL",
    "SUM",
    "add_frames",
    "combine",
    "known_work_demand",
    "of_runs",
    "residual_demand",
    "scheduled_run_keys",
]

"""Score past forecasts against what happened, and provisioned capacity against demand (plain pandas).

:func:`score_forecasts` joins every stored forecast row whose target bucket has been observed with the
actual demand and scores it per series and lead-time bucket: MASE (absolute error over the in-sample
mean absolute error of the naive forecast on the preceding history), pinball loss and coverage of each
quantile. :func:`score_capacity` compares the provisioned capacity (as it stood in each bucket) with
the demand: unmet demand, idle capacity and the queue wait a reactive autoscaler would have caused.
Both return rows in the ``evaluations`` layout (``series_id, window_end, horizon_minutes, metric,
value``) so the store, the UI, the metrics and the recalibration all read one format. The measures
themselves are :mod:`airflow_predictive.accuracy`'s.

The ``metric`` names, per series and horizon bucket: ``mase``, ``pinball_q<level>``,
``coverage_q<level>``. Per pool resource (stored under the pool's series id with :data:`ALL_HORIZONS`):
``unmet_demand`` and ``idle_capacity`` (:func:`~airflow_predictive.accuracy.unmet_mean` and
:func:`~airflow_predictive.accuracy.idle_mean`: mean per bucket, in the resource's own units) and the
queue wait avoided. ``horizon_minutes`` is the upper edge of the lead-time bucket; :data:`ALL_HORIZONS`
(0) aggregates every lead time of a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive import accuracy
from airflow_predictive.contracts.demand import parse_series_id, series_id

# Lead-time buckets (upper edges, minutes) the scores are broken down by; ALL_HORIZONS covers all.
HORIZON_EDGES: tuple[int, ...] = (15, 60, 360, 1440)
DEFAULT_PROVISIONING_LEVEL = 0.95
EVALUATION_COLUMNS = ["series_id", "window_end", "horizon_minutes", "metric", "value"]

# ``metric`` names of the evaluations layout (stored, and read by the UI).
ALL_HORIZONS = 0
MASE = "mase"
UNMET_DEMAND = "unmet_demand"  # accuracy.unmet_mean: mean per bucket, in the resource's units
IDLE_CAPACITY = "idle_capacity"  # accuracy.idle_mean: mean per bucket, in the resource's units
QUEUE_WAIT_AVOIDED = "queue_wait_avoided_minutes"
CALIBRATION_SCALE = "calibration_scale"


def coverage_metric(level: float) -> str:
    """Metric name of the empirical coverage of quantile ``level``: ``coverage_q0.95``."""
    return f"coverage_q{level:g}"


def pinball_metric(level: float) -> str:
    """Metric name of the pinball (quantile) loss at ``level``: ``pinball_q0.95``."""
    return f"pinball_q{level:g}"


def quantile_levels(frame: pd.DataFrame) -> list[float]:
    """Quantile levels present as ``q<level>`` columns of a forecast frame.

    :param frame: a forecast frame.
    """
    levels = []
    for column in frame.columns:
        if column.startswith("q"):
            try:
                levels.append(float(column[1:]))
            except ValueError:
                continue
    return sorted(levels)


def joined(forecasts: pd.DataFrame, demand: pd.DataFrame) -> pd.DataFrame:
    """Forecast rows with the observed ``actual`` of their target bucket and ``lead_minutes``.

    :param forecasts: stored forecast rows (``store.forecasts(...)``).
    :param demand: demand rows ``series_id, ts, value``.
    """
    if forecasts.empty or demand.empty:
        return pd.DataFrame()
    actual = demand.rename(columns={"value": "actual"})[["series_id", "ts", "actual"]]
    frame = forecasts.merge(actual, on=["series_id", "ts"], how="inner")
    frame = frame[frame["actual"].notna()].copy()
    frame["lead_minutes"] = (frame["ts"] - frame["issued_at"]).dt.total_seconds() / 60.0
    return frame[frame["lead_minutes"] > 0]


def _bucket(lead: pd.Series) -> pd.Series:
    edges = [0, *HORIZON_EDGES, np.inf]
    labels = [*HORIZON_EDGES, HORIZON_EDGES[-1] * 100]
    return pd.cut(lead, bins=edges, labels=labels, right=True).astype(int)


def score_forecasts(
    forecasts: pd.DataFrame,
    demand: pd.DataFrame,
    *,
    window_end: datetime,
    history: pd.DataFrame | None = None,
    season: int = 1,
    scales: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Per series and lead-time bucket: MASE, pinball loss and coverage of every stored quantile.

    :param forecasts: forecast rows whose target ``ts`` lies in the scored window.
    :param demand: the observed demand of that window.
    :param window_end: the end of the scored window (the evaluation's timestamp).
    :param history: demand before the window, for the MASE scale (default: ``demand`` itself).
    :param season: naive lag of the MASE scale, in buckets.
    :param scales: each series' MASE scale, already computed from its history
        (:func:`~airflow_predictive.accuracy.mase_scale_of`); replaces ``history`` (missing: NaN).
    """
    frame = joined(forecasts, demand)
    if frame.empty:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    levels = quantile_levels(forecasts)
    history = demand if history is None or history.empty else history
    frame["horizon"] = _bucket(frame["lead_minutes"])
    frame["abs_error"] = (frame["actual"] - frame["mean"]).abs()
    for level in levels:
        col = f"q{level:g}"
        frame[f"pinball_{col}"] = accuracy.pinball_loss(frame["actual"], frame[col], level)
        frame[f"covered_{col}"] = accuracy.covered(frame["actual"], frame[col]).astype(float)

    # Means per series and lead-time bucket in one grouping (a loop over series' groups took seconds
    # for a 200-series chunk); ALL_HORIZONS (0) sorts before every bucket.
    means = {"abs_error": MASE}
    for level in levels:
        col = f"q{level:g}"
        means[f"pinball_{col}"] = pinball_metric(level)
        means[f"covered_{col}"] = coverage_metric(level)
    by_horizon = frame.groupby(["series_id", "horizon"], sort=True)
    every_horizon = frame.groupby("series_id", sort=True)
    wide = pd.concat(
        [
            _means(every_horizon, list(means)).assign(horizon=ALL_HORIZONS).set_index("horizon", append=True),
            _means(by_horizon, list(means)),
        ]
    ).sort_index(kind="stable")
    series = wide.index.get_level_values(0)
    wide["abs_error"] = wide["abs_error"] / _scales(series, history, scales, season)
    wide = wide.rename(columns=means)[["n", *means.values()]]
    long = wide.stack(future_stack=True).rename("value").reset_index()
    long.columns = ["series_id", "horizon_minutes", "metric", "value"]
    long["horizon_minutes"] = long["horizon_minutes"].astype(int)
    long.insert(1, "window_end", window_end)
    rows = long[EVALUATION_COLUMNS].astype({"value": float})
    out = rows.reset_index(drop=True)
    out["value"] = out["value"].replace([np.inf, -np.inf], np.nan)
    return out


def _means(groups: Any, columns: list[str]) -> pd.DataFrame:
    """Each group's row count (``n``) and the means of ``columns``."""
    return groups[columns].mean().assign(n=groups.size().astype(float))


def _scales(
    series: pd.Index, history: pd.DataFrame, scales: Mapping[str, float] | None, season: int
) -> np.ndarray:
    """Each row's MASE scale: given per series, or from the series' history."""
    if scales is None:
        # Grouped once: a per-series boolean scan of the history is quadratic in the number of series.
        past_of = {sid: part["value"] for sid, part in history.groupby("series_id", sort=False)}
        no_past = pd.Series(dtype=float)
        scales = {sid: accuracy.mase_scale(past_of.get(sid, no_past), season) for sid in series.unique()}
    return series.map(lambda sid: scales.get(sid, float("nan"))).to_numpy(dtype=float)


def score_capacity(
    capacity: pd.DataFrame,
    demand: pd.DataFrame,
    *,
    window_end: datetime,
    lead_buckets: int = 1,
    interval_minutes: float = 5.0,
    pools: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per pool resource: mean unmet demand, mean idle capacity, queue wait a reactive scaler would add.

    Capacity is a step function: each demand bucket sees the newest capacity point at or before it.
    ``queue_wait_avoided_minutes`` counts the buckets whose demand exceeded what a reactive autoscaler
    would have had (the demand ``lead_buckets`` earlier, as it only reacts after seeing it) while the
    provisioned capacity covered it, times the bucket width.

    :param capacity: ``store.capacity()`` rows (pool, resource, ts, value).
    :param demand: demand rows of the window.
    :param window_end: the evaluation's timestamp.
    :param lead_buckets: buckets a reactive scale-up takes (boot time / interval).
    :param interval_minutes: bucket width.
    :param pools: only these pools.
    """
    if capacity.empty or demand.empty:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    keys = capacity[["pool", "resource"]].drop_duplicates()
    if pools:
        keys = keys[keys["pool"].isin(list(pools))]
    keys = keys.sort_values(["pool", "resource"])
    sids = [series_id(pool, resource) for pool, resource in keys.itertuples(index=False)]
    cap = capacity.merge(keys.assign(series_id=sids), on=["pool", "resource"])
    d = demand[demand["series_id"].isin(sids)].dropna(subset=["value"])
    if cap.empty or d.empty:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    # One as-of join for every series (each demand bucket sees its series' newest capacity point at or
    # before it), not one per series: a 200-series chunk spent most of its scoring time in the loop.
    merged = pd.merge_asof(
        d[["ts", "series_id", "value"]].sort_values("ts", kind="stable"),
        cap[["ts", "series_id", "value"]].rename(columns={"value": "cap"}).sort_values("ts", kind="stable"),
        on="ts",
        by="series_id",
    ).dropna(subset=["cap"])
    if merged.empty:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    merged = merged.sort_values(["series_id", "ts"], kind="stable", ignore_index=True)
    by_series = merged.groupby("series_id", sort=False)["value"]
    # What a reactive scaler had: the demand lead_buckets earlier (the first bucket's before that).
    reactive = by_series.shift(lead_buckets).fillna(by_series.transform("first"))
    demand_v, cap_v = merged["value"].to_numpy(float), merged["cap"].to_numpy(float)
    parts = pd.DataFrame(
        {
            "series_id": merged["series_id"],
            UNMET_DEMAND: accuracy.shortfall(demand_v, cap_v),
            IDLE_CAPACITY: accuracy.surplus(demand_v, cap_v),
            QUEUE_WAIT_AVOIDED: ((demand_v > reactive.to_numpy(float)) & (cap_v >= demand_v))
            * interval_minutes,
        }
    ).groupby("series_id", sort=False)
    scores = parts[[UNMET_DEMAND, IDLE_CAPACITY]].mean().join(parts[[QUEUE_WAIT_AVOIDED]].sum())
    scores = scores.reindex([sid for sid in sids if sid in scores.index])
    rows = [
        (sid, window_end, ALL_HORIZONS, metric, float(value))
        for sid, values in scores.iterrows()
        for metric, value in values.items()
    ]
    return pd.DataFrame(rows, columns=EVALUATION_COLUMNS)


def values_of(evaluations: pd.DataFrame, metric: str, horizon: int = ALL_HORIZONS) -> dict[str, float]:
    """``{series_id: score}`` of one metric (the last row per series), for lookups in a loop over series.

    :param evaluations: rows in the evaluations layout.
    :param metric: the metric name.
    :param horizon: the lead-time bucket.
    """
    if evaluations.empty:
        return {}
    hit = evaluations[(evaluations["metric"] == metric) & (evaluations["horizon_minutes"] == horizon)]
    last = hit.drop_duplicates("series_id", keep="last")
    return dict(zip(last["series_id"], last["value"].astype(float), strict=True))


def value_of(evaluations: pd.DataFrame, sid: str, metric: str, horizon: int = ALL_HORIZONS) -> float:
    """One score from an evaluations frame (NaN when absent).

    :param evaluations: rows in the evaluations layout.
    :param sid: the series id.
    :param metric: the metric name.
    :param horizon: the lead-time bucket.
    """
    if evaluations.empty:
        return float("nan")
    hit = evaluations[
        (evaluations["series_id"] == sid)
        & (evaluations["metric"] == metric)
        & (evaluations["horizon_minutes"] == horizon)
    ]
    return float(hit["value"].iloc[-1]) if not hit.empty else float("nan")


def provisioning_level(plans: pd.DataFrame, pool: str, default: float = DEFAULT_PROVISIONING_LEVEL) -> float:
    """The quantile the planner provisioned ``pool`` for (its newest plan's ``summary.quantile``).

    :param plans: ``store.plans()`` rows.
    :param pool: the capacity pool.
    :param default: when no plan names one.
    """
    if plans.empty:
        return default
    for raw in reversed(plans.loc[plans["pool"] == pool, "summary"].tolist()):
        summary = json.loads(raw) if isinstance(raw, str) and raw.startswith("{") else raw
        if isinstance(summary, dict) and summary.get("quantile") is not None:
            return float(summary["quantile"])
    return default


def provisioning_levels(
    plans: pd.DataFrame, pools: Sequence[str], default: float = DEFAULT_PROVISIONING_LEVEL
) -> dict[str, float]:
    """:func:`provisioning_level` of each of ``pools``, the plans grouped once (a chunk has 50 pools).

    :param plans: ``store.plans()`` rows.
    :param pools: the capacity pools.
    :param default: when no plan names one.
    """
    by_pool = dict(tuple(plans.groupby("pool", sort=False))) if not plans.empty else {}
    return {
        pool: provisioning_level(by_pool[pool], pool, default) if pool in by_pool else default
        for pool in pools
    }


def pool_of(sid: str) -> str:
    """Capacity pool of a series id.

    :param sid: a series id ``pool=<pool>/resource=<resource>``.
    """
    return parse_series_id(sid).pool

"""A pool's service: the queue wait its tasks felt, judged against the pool's target when it sets one.

Scores go into the evaluations layout under the pool's ``slots`` series (slots are what tasks wait for):
``queue_wait_p50_seconds``, ``queue_wait_p95_seconds``, ``queue_wait_max_seconds``,
``queue_waited_long_share`` (share of tries that waited over
:data:`~airflow_predictive.profiling.queue_wait.LONG_WAIT_SECONDS`) and ``queue_wait_tasks``, over the
trailing :data:`JUDGED_WINDOW`; with a target (``service_level.queue_wait_p95_seconds``),
``queue_wait_target_met`` (1 or 0) once the window holds :data:`MIN_JUDGED_TASKS` tries: a p95 of a
handful of tries says nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import pandas as pd

from airflow_predictive.contracts.demand import series_id
from airflow_predictive.feedback.alerts import QUEUE_WAIT_ABOVE_TARGET, Alert
from airflow_predictive.feedback.evaluation import ALL_HORIZONS, EVALUATION_COLUMNS
from airflow_predictive.profiling.queue_wait import wait_stats

JUDGED_WINDOW = timedelta(hours=1)
MIN_JUDGED_TASKS = 20

QUEUE_WAIT_P50 = "queue_wait_p50_seconds"
QUEUE_WAIT_P95 = "queue_wait_p95_seconds"
QUEUE_WAIT_MAX = "queue_wait_max_seconds"
QUEUE_WAITED_LONG = "queue_waited_long_share"
QUEUE_WAIT_TASKS = "queue_wait_tasks"
QUEUE_WAIT_TARGET_MET = "queue_wait_target_met"

_STAT_METRICS = {
    "wait_p50_s": QUEUE_WAIT_P50,
    "wait_p95_s": QUEUE_WAIT_P95,
    "wait_max_s": QUEUE_WAIT_MAX,
    "waited_long_share": QUEUE_WAITED_LONG,
    "tasks": QUEUE_WAIT_TASKS,
}


def score_queue_wait(
    waits: pd.DataFrame,
    *,
    window_end: datetime,
    pools: list[str] | None = None,
    targets: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Queue-wait scores per pool for the trailing :data:`JUDGED_WINDOW` before ``window_end``.

    :param waits: :func:`~airflow_predictive.profiling.queue_wait.queue_waits` rows of that window.
    :param window_end: the evaluation's timestamp.
    :param pools: only these pools (default: every pool with waits or a target).
    :param targets: ``{pool: queue_wait_p95_seconds}`` of the pools that set one.
    """
    targets = dict(targets or {})
    names = sorted(set(waits["pool"]) | set(targets)) if pools is None else sorted(pools)
    rows = []
    for pool in names:
        stats = wait_stats(waits.loc[waits["pool"] == pool, "wait_s"])
        sid = series_id(pool, "slots")
        rows += [
            (sid, window_end, ALL_HORIZONS, metric, float(stats[key]))
            for key, metric in _STAT_METRICS.items()
            if stats[key] is not None
        ]
        if pool in targets and stats["tasks"] >= MIN_JUDGED_TASKS:
            met = float(stats["wait_p95_s"] <= targets[pool])
            rows.append((sid, window_end, ALL_HORIZONS, QUEUE_WAIT_TARGET_MET, met))
    return pd.DataFrame(rows, columns=EVALUATION_COLUMNS)


def queue_wait_alerts(scores: pd.DataFrame, targets: Mapping[str, float]) -> list[Alert]:
    """One ``queue_wait_above_target`` alert naming every pool whose judged hour missed its target.

    :param scores: :func:`score_queue_wait` rows.
    :param targets: ``{pool: queue_wait_p95_seconds}``.
    """
    if scores.empty:
        return []
    by_pool = scores.assign(pool=scores["series_id"].str.extract(r"^pool=([^/]+)/")[0])
    values = by_pool.pivot_table(index="pool", columns="metric", values="value", aggfunc="last")
    if QUEUE_WAIT_TARGET_MET not in values:
        return []
    missed = values[values[QUEUE_WAIT_TARGET_MET] == 0.0]
    if missed.empty:
        return []
    detail = [
        {
            "pool": pool,
            "p95_seconds": float(row[QUEUE_WAIT_P95]),
            "target_seconds": float(targets[pool]),
            "tasks": int(row[QUEUE_WAIT_TASKS]),
        }
        for pool, row in missed.iterrows()
    ]
    return [
        Alert(
            QUEUE_WAIT_ABOVE_TARGET,
            f"Queue wait above target in {len(detail)} pool(s)",
            "; ".join(
                f"{d['pool']}: p95 {d['p95_seconds']:.0f} s over {d['tasks']} tasks, target {d['target_seconds']:g} s"
                for d in detail
            ),
            {"pools": detail},
        )
    ]

"""What a new pool's control loop is waiting for, and when prediction starts (the cold start).

A pool's first cycles have nothing to forecast: the profiler writes a demand bucket only once it has
closed. Then each series forecasts with a fallback (``short_history``: the recent level) until it has
:data:`~airflow_predictive.contracts.forecast.MIN_HISTORY_DAYS` of observed demand, and the planner
follows the reactive rule until it has :data:`~airflow_predictive.contracts.forecast.MIN_CYCLE_DAYS`
(then the forecast, if demand has a daily cycle). :func:`learning_state` says which of these a pool
is in, for the task logs and the pool's page.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.demand import RESOURCES, series_id
from airflow_predictive.contracts.forecast import MIN_CYCLE_DAYS, MIN_HISTORY_DAYS
from airflow_predictive.contracts.stores import DemandReader

log = logging.getLogger(__name__)

WAITING_FOR_DEMAND = "waiting_for_demand"
LEARNING = "learning"
PREDICTING = "predicting"
_MODELS_AFTER = timedelta(days=MIN_HISTORY_DAYS)
_PLANS_AFTER = timedelta(days=MIN_CYCLE_DAYS)


@dataclass(frozen=True)
class LearningState:
    """Where a pool is in its cold start.

    :param pool: the capacity pool.
    :param stage: ``waiting_for_demand`` (no closed demand bucket yet: forecast and allocate skip),
        ``learning`` (forecasts fall back to the recent level, plans follow the reactive rule) or
        ``predicting`` (statistical forecasts; the planner follows them while demand has a daily cycle).
    :param first_demand: the first observed demand bucket (None: none yet).
    :param next_bucket_closes: when the demand bucket open at ``now`` closes (the profiler writes it after).
    :param models_from: when the series have enough history for their statistical models.
    :param plans_from: when the planner can first follow the forecast (1.5 days: the daily-cycle check).
    :param message: the state in one sentence, for task logs and the page.
    """

    pool: str
    stage: str
    first_demand: datetime | None
    next_bucket_closes: datetime
    models_from: datetime | None
    plans_from: datetime | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "stage": self.stage,
            "first_demand": _iso(self.first_demand),
            "next_bucket_closes": _iso(self.next_bucket_closes),
            "models_from": _iso(self.models_from),
            "plans_from": _iso(self.plans_from),
            "message": self.message,
        }


def learning_state(
    store: DemandReader, pool: str, *, now: datetime, interval: timedelta = timedelta(minutes=5)
) -> LearningState:
    """What ``pool``'s control loop waits for at ``now``, and when prediction starts.

    Reads when the pool's demand was first observed within :data:`MIN_HISTORY_DAYS` (and a day).

    :param store: the profile store (demand series).
    :param pool: the capacity pool.
    :param now: the time to judge at (a cycle's ``now``).
    :param interval: bucket width of the demand series.
    """
    return learning_states(store, [pool], now=now, interval=interval)[0]


def learning_states(
    store: DemandReader, pools: Sequence[str], *, now: datetime, interval: timedelta = timedelta(minutes=5)
) -> list[LearningState]:
    """:func:`learning_state` of each pool, from one store query for all of them.

    :param store: the profile store (demand series).
    :param pools: the capacity pools.
    :param now: the time to judge at (a cycle's ``now``).
    :param interval: bucket width of the demand series.
    """
    look_back = _MODELS_AFTER + timedelta(days=1)
    ids = {pool: [series_id(pool, r) for r in RESOURCES] for pool in pools}
    every = [i for group in ids.values() for i in group]
    first_seen = store.first_observed(every, start=now - look_back, end=now)
    closes = _bucket_end(now, interval)
    states = []
    for pool in pools:
        seen = [first_seen[i] for i in ids[pool] if i in first_seen]
        if not seen:
            states.append(_waiting(pool, closes, interval))
            continue
        first: datetime | None = min(seen)
        if first <= now - look_back + interval:
            first = None  # older than the window read: long past the cold start
        states.append(_judged(pool, first, closes, now))
    return states


def _waiting(pool: str, closes: datetime, interval: timedelta) -> LearningState:
    minutes = f"{interval.total_seconds() / 60:g}"
    message = (
        f"pool {pool}: waiting for its first closed {minutes}-minute demand bucket (the one open now "
        f"closes at {_hm(closes)}; the profiler writes a bucket once it has closed and tasks of the "
        "pool's queue have run). Forecast and allocate skip until then. Forecasts then fall back to the "
        f"recent level for {MIN_HISTORY_DAYS:g} days, and plans follow the reactive rule for at least "
        f"{MIN_CYCLE_DAYS:g} days (known work, scheduled runs and the next stages of running ones, is "
        "provisioned from the first forecast on)."
    )
    return LearningState(pool, WAITING_FOR_DEMAND, None, closes, None, None, message)


def _judged(pool: str, first: datetime | None, closes: datetime, now: datetime) -> LearningState:
    if first is None or now >= first + _MODELS_AFTER:
        message = f"pool {pool}: predicting (statistical forecasts; plans follow them while demand has a daily cycle)"
        return LearningState(pool, PREDICTING, first, closes, None, None, message)
    models_from, plans_from = first + _MODELS_AFTER, first + _PLANS_AFTER
    message = (
        f"pool {pool}: learning since {_hm(first)}: forecasts fall back to the recent level "
        f"(short_history) until {_hm(models_from)} ({MIN_HISTORY_DAYS:g} days of demand); plans follow "
        f"the reactive rule until at least {_hm(plans_from)} ({MIN_CYCLE_DAYS:g} days), then the "
        "forecast if demand has a daily cycle. Known work is provisioned under either rule."
    )
    return LearningState(pool, LEARNING, first, closes, models_from, plans_from, message)


def _bucket_end(now: datetime, interval: timedelta) -> datetime:
    return pd.Timestamp(now).floor(interval).to_pydatetime() + interval


def _hm(at: datetime) -> str:
    return pd.Timestamp(at).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else pd.Timestamp(at).isoformat()


def report_learning(
    store: DemandReader,
    pools: Sequence[str],
    *,
    now: datetime,
    interval: timedelta = timedelta(minutes=5),
) -> list[LearningState]:
    """Log each pool's cold-start state (a pool still learning says what it waits for) and return them.

    :param store: the profile store (demand series).
    :param pools: the capacity pools.
    :param now: the cycle's time.
    :param interval: bucket width of the demand series.
    """
    states = learning_states(store, pools, now=now, interval=interval)
    for state in states:
        log.info("%s", state.message)
    return states

"""The feedback loop's service-level choice on the store, and the pool the allocation cycle then plans.

Once a day per pool (:data:`CHOICE_EVERY`; a few pools a cycle, :func:`due_pools`), :func:`choose_for_pools` reads the pool's last two days of
observed demand of the resource that binds its size (cpu, memory or task slots: :func:`binding_resource`)
and the forecasts the store issued of it, replays them through the planner under
each candidate setting (:mod:`airflow_predictive.simulation.choice`, the code the backtest runs) and
stores the choice, its scores and the reactive counterfactual as the ``service_level_choice``
summary. The allocation cycle plans each pool with :func:`following` its choice :func:`in_force`
(a choice made on stuck days falls back to the reactive rule once demand moves); a pool with no choice
yet (under half a day of issued forecasts) keeps its own settings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.contracts.demand import series_id
from airflow_predictive.contracts.forecast import KNOWN
from airflow_predictive.contracts.pools import CapacityPool, ForecastSource, Signal
from airflow_predictive.contracts.stores import DemandReader, ServiceLevelChoiceStore, SummaryReader
from airflow_predictive.planning.planner import ForecastView, seasonal_floor_buckets
from airflow_predictive.profiling.demand_series import try_slots
from airflow_predictive.runtime.baseline_forecast import BASELINE_WINDOW, baseline_views, step_means
from airflow_predictive.simulation.choice import (
    REACTIVE,
    SETTLE_S,
    Choice,
    Evidence,
    candidate_named,
    choose_by_replay,
    floor_days,
)
from airflow_predictive.simulation.replay import REPLAYED_RESOURCES
from airflow_predictive.simulation.task_queue import Tries

log = logging.getLogger(__name__)

#: Store summary kind holding each pool's choice (``{pool: Choice.to_dict()}``).
SUMMARY_KIND = "service_level_choice"
#: A pool's choice is made again once it is this old: a day of new evidence per choice.
CHOICE_EVERY = timedelta(days=1)
#: Demand and issued forecasts each choice replays.
CHOICE_WINDOW = timedelta(days=2)
#: Issued forecasts a first choice needs (the backtest's first choice waits as long).
MIN_EVIDENCE = timedelta(hours=12)
#: Percentile of a resource's demand over the window that decides which binds: the pool's busy hours,
#: not one bucket's spike.
BINDING_PERCENTILE = 95


def stored_choices(store: SummaryReader) -> dict[str, Choice]:
    """Every pool's stored choice.

    :param store: the ProfileStore.
    """
    return {pool: Choice.from_dict(payload) for pool, payload in store.summaries(SUMMARY_KIND).items()}


def in_force(
    store: DemandReader, pools: Sequence[CapacityPool], choices: Mapping[str, Choice], *, now: datetime
) -> dict[str, Choice]:
    """Each pool's choice as it stands at ``now``: one made on mostly stuck days whose demand has left
    the stuck value since is the reactive rule until the next choice (:meth:`Choice.outlived`). One
    demand read, only for the pools whose choice could fall back.

    :param store: the ProfileStore.
    :param pools: the configured pools (their planning intervals: the demand's buckets).
    :param choices: their stored choices.
    :param now: the cycle's time.
    """
    watched = {
        p.name: p
        for p in pools
        if p.name in choices
        and choices[p.name].stuck_value is not None
        and choices[p.name].candidate != REACTIVE.name
    }
    if not watched:
        return dict(choices)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    sids = {series_id(name, choices[name].resource): name for name in watched}
    since = min(choices[name].chosen_at for name in watched)
    rows = store.demand(list(sids), start=since, end=now).rename(columns=str)
    out = dict(choices)
    for sid, frame in rows.groupby("series_id"):
        name = sids[str(sid)]
        choice, step = choices[name], pd.Timedelta(minutes=watched[name].policy.planning_interval_minutes)
        index = pd.date_range(pd.Timestamp(choice.chosen_at).floor(step), now, freq=step)
        if len(index) > 1 and choice.outlived(step_means(frame, index).to_numpy(float)):
            out[name] = choice.fallen_back()
            log.info("pool %s: %s", name, out[name].reason)
    return out


def following(pool: CapacityPool, choice: Choice | None) -> CapacityPool:
    """The pool as its choice sizes it: the chosen candidate's sizing, the choice named in reasons.

    :param pool: the configured pool.
    :param choice: its stored choice (None: the pool's own settings).
    """
    if choice is None or pool.policy.signal is Signal.RECENT_DEMAND:
        return pool  # a pool configured reactive stays reactive: it asked for that rule
    sizing = candidate_named(choice.candidate).sizing()
    reactive = choice.reactive
    ratio = next(s.capacity_hours for s in choice.scores if s.candidate == choice.candidate) / max(
        reactive.capacity_hours, 1e-9
    )
    words = (
        f"service-level choice {choice.candidate} of {choice.chosen_at:%Y-%m-%d %H:%M} UTC "
        f"({pool.service_level.describe()}; replayed on {choice.resource}: {ratio:.2f}x reactive's "
        "capacity-hours)"
    )
    if choice.fell_back_from:
        words = (
            f"service-level choice {choice.candidate}: demand left {choice.stuck_value:.6g}, the value the "
            f"days {choice.fell_back_from} was chosen on ({choice.chosen_at:%Y-%m-%d %H:%M} UTC) were "
            "stuck at; the reactive rule until the next choice"
        )
    typed = {"signal": Signal(sizing["signal"]), "chosen": words}
    if "forecast" in sizing:
        typed["forecast"] = ForecastSource(sizing["forecast"])
    policy = pool.policy.model_copy(update={**sizing, **typed})
    return pool.model_copy(update={"policy": policy})


def choose_for_pools(
    store: ServiceLevelChoiceStore,
    pools: Sequence[CapacityPool],
    *,
    now: datetime,
    interval: timedelta = timedelta(minutes=5),
) -> dict[str, Choice]:
    """Make each due pool's choice and store every pool's; return the choices made now.

    :param store: the ProfileStore.
    :param pools: the configured pools (their service levels, machines, lead times and limits).
    :param now: the cycle's time.
    :param interval: bucket width of the demand series.
    """
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    stored = stored_choices(store)
    made: dict[str, Choice] = {}
    due = due_pools(pools, stored, now=now, interval=interval)
    # the candidate each pool runs now: a stuck day's choice may have fallen back to the reactive rule
    held = in_force(store, due, stored, now=now)
    for pool in due:
        evidence = pool_evidence(store, pool, now=now, interval=interval)
        if evidence is None:
            continue
        current = held[pool.name].candidate if pool.name in held else None
        made[pool.name] = choose_by_replay(evidence, pool.service_level, now=now, current=current)
        log.info("pool %s: %s", pool.name, made[pool.name].reason)
    if made:
        payloads = {name: c.to_dict() for name, c in {**stored, **made}.items()}
        store.put_summaries(SUMMARY_KIND, payloads)
    return made


def due_pools(
    pools: Sequence[CapacityPool], stored: Mapping[str, Choice], *, now: datetime, interval: timedelta
) -> list[CapacityPool]:
    """The pools to choose for this cycle: never chosen first, then the oldest choices past
    :data:`CHOICE_EVERY`; a day's choices spread evenly over the day's cycles (a replay costs a few
    CPU seconds per pool: all pools in one cycle would stall it).

    :param pools: the configured pools.
    :param stored: their stored choices.
    :param now: the cycle's time.
    :param interval: the cycle length.
    """
    epoch = datetime.min.replace(tzinfo=UTC)
    due = [p for p in pools if p.name not in stored or now - stored[p.name].chosen_at >= CHOICE_EVERY]
    due.sort(key=lambda p: stored[p.name].chosen_at if p.name in stored else epoch)
    budget = max(1, math.ceil(len(pools) * (interval / CHOICE_EVERY)))
    return due[:budget]


def pool_evidence(
    store: ServiceLevelChoiceStore, pool: CapacityPool, *, now: datetime, interval: timedelta
) -> Evidence | None:
    """The pool's last :data:`CHOICE_WINDOW` of demand and issued forecasts (None: too little yet).

    :param store: the ProfileStore.
    :param pool: the pool.
    :param now: the cycle's time.
    :param interval: bucket width.
    """
    step = pd.Timedelta(interval)
    boot_steps = math.ceil(pool.lead_time_minutes.boot * 60 / step.total_seconds() - 1e-9)
    # the reactive rule's stabilisation window, the fleet's warm-up, and the days a seasonal floor reads
    pre = boot_steps + 3 + seasonal_floor_buckets(pool, floor_days())
    end = pd.Timestamp(now).floor(step)
    first = end - pd.Timedelta(CHOICE_WINDOW) - pre * step
    index = pd.date_range(first, end, freq=step, inclusive="left")
    # one read with the days before the window the seasonal-naive baseline reads
    before = round(BASELINE_WINDOW / step)
    read = observed_demand(
        store, pool, pd.date_range(first - before * step, end, freq=step, inclusive="left")
    )
    observed = read.iloc[before:]
    resource = binding_resource(observed, pool)
    if resource is None:
        return None
    values = observed[resource]
    if values.notna().sum() < len(index) // 2:
        return None  # the profiler missed most of the window: no replay to trust
    forecasts = issued_views(
        store.forecasts(
            [series_id(pool.name, resource)],
            issued_from=(first + pre * step).to_pydatetime(),
            issued_to=end.to_pydatetime(),
        ),
        index,
        resource,
    )
    if len(forecasts) * step < pd.Timedelta(MIN_EVIDENCE):
        return None
    start = max(pre, min(forecasts))  # replay only where the pool had a forecast to follow
    horizon = max(len(v.series[resource][0]) for v in forecasts.values())
    baseline = baseline_views(read[resource], index, first=start, resource=resource, steps=horizon)
    # a queue-wait level replays the pool's tries, and measures Airflow's pickup on the fleet it held
    waits = bool(pool.service_level.queue_wait_p95_seconds)
    return Evidence(
        demand=values.interpolate(limit_direction="both").to_numpy(float),
        index=index,
        start=start,
        forecasts=forecasts,
        instance_capacity=instance_capacity(pool, resource),
        boot_steps=boot_steps,
        max_instances=pool.max_instances,
        # The store keeps two days of forecasts: the fleet's cold start settles on the window's first hour.
        settle=min(round(SETTLE_S / step.total_seconds()), max(0, len(index) - start - 1)),
        resource=resource,
        baseline_forecasts=baseline,
        tries=pool_tries(store, pool, start=index[start], end=end) if waits else None,
        held=held_instances(store, pool, index) if waits else None,
    )


#: How far before the window the fleet's last record may lie and still say what it held at the start
#: (the allocation cycle records it every run, a few minutes apart).
HELD_LOOKBACK = timedelta(hours=1)


def held_instances(store: ServiceLevelChoiceStore, pool: CapacityPool, index: pd.DatetimeIndex) -> np.ndarray:
    """Instances the pool held in each step of ``index``, from the task slots the allocation cycle
    recorded it holding (each record holds until the next; NaN before the first).

    :param store: the ProfileStore.
    :param pool: the pool.
    :param index: the window's steps.
    """
    since = (index[0] - pd.Timedelta(HELD_LOOKBACK)).to_pydatetime()
    rows = store.capacity(pool=pool.name, since=since).rename(columns=str)
    rows = rows[rows["resource"] == "slots"]
    if rows.empty or pool.slots <= 0:
        return np.full(len(index), np.nan)
    held = pd.Series(rows["value"].to_numpy(float), index=pd.to_datetime(rows["ts"], utc=True)).sort_index()
    held = held[~held.index.duplicated(keep="last")]
    return held.reindex(index, method="ffill").to_numpy(float) / float(pool.slots)


def pool_tries(
    store: ServiceLevelChoiceStore, pool: CapacityPool, *, start: pd.Timestamp, end: pd.Timestamp
) -> Tries:
    """The pool's task tries over the replayed window, for a queue-wait level's replay.

    Each try counts from its queued time (its start when none was recorded) for its run time. One
    still running at ``end`` runs until then; one still queued runs as long as the window's median
    try (its own run time is not known yet). A try queued before ``start`` holds its slots from
    ``start`` for what was left of its run.

    :param store: the ProfileStore.
    :param pool: the pool (its tries are those of the queue its workers consume).
    :param start: the replayed window's first step.
    :param end: its end.
    """
    # the tries of the queue the pool's workers consume
    runs = store.task_runs(start=start.to_pydatetime(), end=end.to_pydatetime(), queues=[pool.queue_name])
    if runs.empty:
        return Tries(np.zeros(0), np.zeros(0), np.zeros(0), float(pool.slots))
    origin, close = start.timestamp(), end.timestamp()

    def seconds(column: str) -> np.ndarray:  # NaN where none was recorded
        stamps = pd.to_datetime(runs[column], utc=True)
        return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(float)

    began, ended, queued = seconds("start_date"), seconds("end_date"), seconds("queued_at")
    waited = began - queued  # NaN: not started, or queued time not recorded
    queued = np.where(np.isnan(queued), began, queued)
    run = np.minimum(np.nan_to_num(ended, nan=close), close) - began
    median = float(np.nanmedian(run)) if np.isfinite(run).any() else 0.0
    run = np.where(np.isnan(began), median, run)
    # queued before the window: from its start, for what was left of its run
    early = queued < origin
    run = np.where(early & ~np.isnan(began), began + run - np.maximum(began, origin), run)
    slots = try_slots(runs)
    keep = np.isfinite(queued) & (run > 0)
    return Tries(queued[keep] - origin, run[keep], slots[keep], float(pool.slots), waited[keep])


def observed_demand(
    store: ServiceLevelChoiceStore, pool: CapacityPool, index: pd.DatetimeIndex
) -> pd.DataFrame:
    """The pool's observed demand of each resource a replay sizes (cpu, memory, slots) per step of
    ``index`` (one read; a resource the store holds nothing of is absent, a step it missed is NaN).

    :param store: the ProfileStore.
    :param pool: the pool.
    :param index: the window's steps.
    """
    sids = {series_id(pool.name, r): r for r in REPLAYED_RESOURCES}
    step = index[1] - index[0]
    end = index[-1] + step
    # store frames may carry SQLAlchemy column-name objects
    rows = store.demand(list(sids), start=index[0].to_pydatetime(), end=end.to_pydatetime()).rename(
        columns=str
    )
    out = pd.DataFrame(index=index)
    for sid, frame in rows.groupby("series_id"):
        out[sids[str(sid)]] = step_means(frame, index)
    return out


def instance_capacity(pool: CapacityPool, resource: str) -> float:
    """What one of the pool's instances brings of ``resource`` (vCPUs, GiB, task slots).

    :param pool: the pool.
    :param resource: one of :data:`~airflow_predictive.simulation.replay.REPLAYED_RESOURCES`.
    """
    if resource == "slots":
        return float(pool.slots)
    return float(pool.machine.vcpus if resource == "cpu" else pool.machine.memory_gib)


def binding_resource(observed: pd.DataFrame, pool: CapacityPool) -> str | None:
    """The resource whose demand needs the most instances over the window (at its
    :data:`BINDING_PERCENTILE`, at full utilisation): the one the planner's size follows, so the one
    whose unmet demand the choice scores. A worker pool of I/O-bound tasks is bound by its task slots,
    not by the cpu the autoscaler reads. None: no demand observed.

    :param observed: :func:`observed_demand`.
    :param pool: the pool.
    """
    needs = {
        r: float(np.nanpercentile(observed[r].to_numpy(float), BINDING_PERCENTILE))
        / instance_capacity(pool, r)
        for r in REPLAYED_RESOURCES
        if r in observed and observed[r].notna().any()
    }
    return max(needs, key=lambda r: (needs[r], -REPLAYED_RESOURCES.index(r))) if needs else None


def issued_views(frame: pd.DataFrame, index: pd.DatetimeIndex, resource: str) -> dict[int, ForecastView]:
    """Step of ``index`` -> the forecast issued in it (the planner's view of one stored issue).

    :param frame: stored forecast rows of one series (``issued_at, ts, mean, q...``).
    :param index: the replay's steps.
    :param resource: the series' resource.
    """
    if frame.empty:
        return {}
    frame = frame.rename(columns=str)
    step_ns = int(index[1].value - index[0].value)
    columns = [
        c for c in frame.columns if c == "mean" or c == KNOWN or (c.startswith("q") and c[1:2].isdigit())
    ]
    issued = pd.to_datetime(frame["issued_at"], utc=True).astype("int64").to_numpy()
    ts = pd.to_datetime(frame["ts"], utc=True).astype("int64").to_numpy()
    values = {c: frame[c].to_numpy(float) for c in columns}
    steps = (issued - int(index[0].value)) // step_ns
    by_step: dict[int, np.ndarray] = {}
    bounds = np.flatnonzero(np.diff(issued)) + 1
    for rows in np.split(np.arange(len(frame)), bounds):
        s = int(steps[rows[0]])
        if 0 <= s < len(index):
            by_step[s] = rows[np.argsort(ts[rows], kind="stable")]
    views: dict[int, ForecastView] = {}
    for s, rows in by_step.items():
        # A superseded issue keeps leads from 1 on: the bucket it was issued in (which the planner's
        # scale-in hold reads) comes from the issue one step earlier, its lead 1.
        before = by_step.get(s - 1)
        if before is not None and ts[rows[0]] > index[s].value:
            rows = np.concatenate([before[ts[before] == index[s].value], rows])
        cols: Mapping[str, np.ndarray] = {c: v[rows] for c, v in values.items()}
        views[s] = ForecastView({resource: (ts[rows], cols)}, step_ns)
    return views


def choice_rows(choices: Mapping[str, Choice]) -> list[dict[str, Any]]:
    """One row per pool for the learning-state table: the choice and its counterfactual.

    :param choices: ``{pool: Choice}``.
    """
    rows = []
    for pool, choice in sorted(choices.items()):
        chosen = next(s for s in choice.scores if s.candidate == choice.candidate)
        reactive = choice.reactive
        rows.append(
            {
                "pool": pool,
                "candidate": choice.candidate,
                "chosen_at": choice.chosen_at.isoformat(),
                "unmet_pct": chosen.unmet_pct,
                "reactive_unmet_pct": reactive.unmet_pct,
                "capacity_vs_reactive": chosen.capacity_hours / reactive.capacity_hours
                if reactive.capacity_hours
                else None,
                "met": choice.met,
            }
        )
    return rows

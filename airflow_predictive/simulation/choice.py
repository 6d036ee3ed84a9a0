"""The service-level choice: which sizing rule a pool follows, chosen by replaying its recent demand.

A pool states what it buys (:class:`~airflow_predictive.contracts.pools.ServiceLevel`: no more unmet
demand than the reactive rule it replaces, or an explicit share unmet, and a queue-wait p95). No single setting is the
cheapest way to meet that on every pool: a quantile that suits a bursty pool wastes capacity on a
quiet one, and on some pools no forecast beats the reactive rule. So every day, per pool:

1. **Replay.** The last days of observed demand go through THE planner (:func:`planner.plan`, via the
   simulation's fleet replay) under each :data:`CANDIDATES` setting: the reactive rule, and the
   forecast rule at a few quantiles and guards, fed with the forecasts the pool was actually issued.
2. **Score.** Unmet demand (percent of demand) and capacity-hours per candidate; for a pool with a
   queue-wait level, also its recorded tries' p95 wait on the candidate's worker slots
   (:mod:`~airflow_predictive.simulation.task_queue`).
3. **Choose** (:func:`choose`). The cheapest candidate whose unmet (and wait) meets the level, a
   candidate other than the reactive rule by a margin of its own noise on the replayed days; the pool keeps
   its current choice unless the new one is cheaper by :data:`SWITCH_MARGIN` (:data:`TRADE_MARGIN`
   when the new one left more unmet on the replayed days) or the current one misses (hysteresis: no
   flapping, and no service given up for a saving inside the replay's noise); reactive when nothing
   meets the level more cheaply.

The feedback loop runs this on the store's demand and issued forecasts
(:mod:`airflow_predictive.runtime.service_level_choice`); the backtest's ``predictive`` and
``seasonal`` run it on the forecasts they issued so far (:class:`OnlineChoicePolicy`). Pure: the
caller passes the evidence and ``now``.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.accuracy import unmet_percent
from airflow_predictive.contracts.pools import ForecastSource, ServiceLevel
from airflow_predictive.forecasting import series
from airflow_predictive.planning import planner
from airflow_predictive.simulation import metrics
from airflow_predictive.simulation.policies import (
    ForecastPolicy,
    ReactivePolicy,
    SeasonalPolicy,
    backtest_pool,
    build_policy,
)
from airflow_predictive.simulation.replay import Fleet, ReplayContext, replay
from airflow_predictive.simulation.task_queue import Tries, pickup_s, replay_waits

#: A new choice must be this much cheaper (share of the current one's capacity-hours) to replace a
#: current choice that still meets the level: day-to-day noise in the replay must not flap the pool.
SWITCH_MARGIN = 0.03
#: The margin (share of capacity-hours) a new choice that left more unmet on the replayed days than the
#: current one must save to replace it: it gives up service the pool had, so it must pay for more than
#: the replay's noise. On bitbrains 407 on 07-25 the issued q0.9 was 3.4% cheaper than yesterday's q0.95,
#: which the pool followed, and left 0.068% unmet on the replayed days against 0.040%; followed for the
#: next six days it left 0.012 points more of the trace's demand than yesterday's q0.95 did, for 0.003x
#: of reactive's capacity-hours. With this margin: 407 0.780x -> 0.783x reactive's capacity-hours at
#: 0.048% -> 0.036% unmet; 411 0.838x -> 0.840x at 0.414% -> 0.408%; the held-out columns that change
#: all leave less unmet for 0.05-2% more capacity (docs/benchmarks.md).
TRADE_MARGIN = 2 * SWITCH_MARGIN
#: Unmet demand (percentage points) a candidate may leave above the level and still meet it: float noise.
_EPS_PCT = 1e-9
#: Replayed time not scored at the start of the window. The replay's fleet starts just big enough for
#: the last history step (:func:`~.replay.initial_size`) and reaches each rule's own size only after a
#: boot lead and the stabilisation window; scored, that cold start is unmet demand no day of the pool
#: had (bitbrains 412: the reactive rule's first replayed day 0.055-0.075% unmet, 0 with an hour
#: settled), and it lands on the first day's per-day check.
SETTLE_S = 3600
#: Width of the blocks the replayed window is split into to measure how much its unmet demand varies
#: (:attr:`Score.noise_pct`).
NOISE_BLOCK_S = 6 * 3600
#: Standard errors of its own unmet demand by which a candidate other than the reactive rule must meet
#: the level. A tie with reactive on two days says nothing when those days' bursts were a matter of
#: luck: on NAB disk_write (80% of demand unmet by any rule, 10x spikes) the reactive rule at 0.7-0.8
#: utilisation tied reactive's unmet on the replayed days, then left 2-4 points more on the next day
#: (+0.87 points over the trace). A candidate whose unmet is steady, as where nothing is left unmet,
#: needs no margin.
NOISE_MARGIN = 1.0
#: Candidates whose capacity-hours on the replayed days lie within this share of each other ran about
#: the same fleet there, so as evidence they are one: each meets the level by the largest noise among
#: them (a miss by one says the others' zero was luck), and a tie for the cheapest goes to the most
#: protective (:func:`protection`). On NAB ec2_cpu q0.9 and q0.99 (guard 0.9) ran the same instances on
#: three calm days; the choice took q0.9 by the candidates' order, and on the next day's burst it left
#: 0.077% of demand unmet where q0.99 left 0.004% (reactive: none). On NAB rds_cpu q0.99 guard 0.9 tied
#: reactive's zero on two days on which q0.9 guard 0.9, 0.8% cheaper, left 0.012%; chosen, it left 0.20%
#: on the next day's level shift (reactive: none; q0.95 guard 0.8, next cheapest, 0.16%).
TIE_SHARE = 0.01
#: Points of demand (percent) by which a candidate may leave more unmet than the reactive rule, over the
#: replayed days and on each of them, and still match it (``match_reactive``): a difference no pool
#: feels, which a zero tolerance turns into days at the reactive rule's cost. On NAB rds_cpu after the
#: level shift of 2014-04-18 the reactive rule at 0.7 utilisation left 0.0006% of one day's demand more
#: than the reactive rule, at 0.86x its capacity-hours; held to zero, the pool ran the reactive rule for
#: two days (0.82x over the trace; with this tolerance 0.78x at the same 0.163% unmet). At 0.01 points
#: the forecast rules' small misses pass too, and rds left 0.024 points more than reactive over the
#: trace. A tenth of the 0.02 points the backtest's target allows over a trace.
MATCH_TOLERANCE_PCT = 0.002
#: A choice whose scored days were mostly stuck demand (less than this share of their steps outside runs
#: of one value a day or longer, :func:`~airflow_predictive.forecasting.series.stuck`, and the newest step
#: in one) saw every candidate leave nothing unmet and took the cheapest: it holds only while demand
#: stays at the stuck value (:meth:`Choice.outlived`), then the pool runs the reactive rule until its
#: next choice. On the bitbrains files (four days stuck in every column, 07-05 12:30 to 07-09 13:00) the
#: choice made on 07-09 met the bursts of demand's return with the cheapest candidate: 411 memory left
#: 0.053 points more than the reactive rule over the trace, 0.070 of them on that day; with this rule
#: 0.528% against reactive's 0.531% (docs/benchmarks.md).
MIN_LIVE_SHARE = 0.5
#: Tries a replayed day needs for its queue-wait p95 to be judged on its own, and the replayed window for
#: a queue-wait level to be judged at all (the feedback loop judges an hour's p95 on as many): a p95 of
#: fewer is one try's luck. With fewer in the window the level chooses as ``match_reactive``.
MIN_WAIT_TRIES = 20
#: The forecasts a candidate may read (:attr:`Candidate.forecast`).
ISSUED, SEASONAL_NAIVE = ForecastSource.ISSUED.value, ForecastSource.SEASONAL_NAIVE.value


@dataclass(frozen=True)
class Candidate:
    """One sizing setting the pool may follow.

    :param name: its name in plan reasons, the UI and the store (``reactive``, ``q0.95 guard 0.8``).
    :param signal: ``recent_demand`` (the reactive rule) or ``forecast``.
    :param quantile: forecast quantile provisioned for (forecast signal).
    :param guard_utilization: never less than observed demand / this (forecast signal; 0: none).
    :param target_utilization: planned utilisation (None: the signal's product default).
    :param seasonal_floor_days: never less than the demand at this time of day on the last days
        (forecast signal; 0: no floor).
    :param forecast: which forecast the rule reads (forecast signal): ``issued``, the one the
        forecaster issued for the pool, or ``seasonal_naive``, the demand at this time yesterday with
        the spread of its day-to-day changes (:class:`~airflow_predictive.contracts.pools.ForecastSource`).
    """

    name: str
    signal: str
    quantile: float | None = None
    guard_utilization: float | None = None
    target_utilization: float | None = None
    seasonal_floor_days: int = 0
    forecast: str = ISSUED

    @property
    def reactive(self) -> bool:
        return self.signal == "recent_demand"

    def sizing(self) -> dict[str, Any]:
        """The pool's ``policy`` fields this candidate sets (the daily-cycle switch is off: the choice
        decides instead)."""
        if self.reactive:
            return {"signal": "recent_demand", "target_utilization": self.target_utilization or 0.6}
        out: dict[str, Any] = {"signal": "forecast", "min_daily_cycle": -1.0}
        for key in ("quantile", "guard_utilization", "target_utilization"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.seasonal_floor_days:
            out["seasonal_floor_days"] = self.seasonal_floor_days
        out["forecast"] = self.forecast  # the choice decides which forecast, whatever the pool set
        return out


def _forecast(
    quantile: float,
    guard: float,
    utilization: float | None = None,
    floor_days: int = 0,
    forecast: str = ISSUED,
) -> Candidate:
    name = ("yesterday " if forecast == SEASONAL_NAIVE else "") + f"q{quantile:g} guard {guard:g}"
    name += f" util {utilization:g}" if utilization else ""
    name += f" floor {floor_days}d" if floor_days else ""
    return Candidate(
        name,
        "forecast",
        quantile=quantile,
        guard_utilization=guard,
        target_utilization=utilization,
        seasonal_floor_days=floor_days,
        forecast=forecast,
    )


#: Compute Engine's autoscaler rule: the counterfactual every choice is scored against.
REACTIVE = Candidate("reactive", "recent_demand", target_utilization=0.6)
#: The settings replayed each day: the reactive rule at less headroom, and the forecast rule. The guard
#: matters as much as the quantile: it is what catches a burst the forecast's tail missed, one boot
#: lead late.
CANDIDATES: tuple[Candidate, ...] = (
    REACTIVE,
    # Where the unmet demand is the bursts no one sees coming (the oracle's own), less headroom misses
    # nothing more and costs less.
    Candidate("reactive 0.7", "recent_demand", target_utilization=0.7),
    Candidate("reactive 0.8", "recent_demand", target_utilization=0.8),
    _forecast(0.9, 0.9),
    _forecast(0.95, 0.9),
    _forecast(0.99, 0.9),
    _forecast(0.95, 0.8),
    _forecast(0.99, 0.8),
    _forecast(0.99, 0.7),
    # Headroom on the forecast's shape. Where the reactive rule leaves nothing unmet on the replayed
    # days (Alibaba 2018, a smooth daily cycle) every forecast at full utilisation missed a few
    # buckets, so the pool ran reactive; this one met it there at 0.89x reactive's capacity-hours
    # over the trace (0.97x without it), and on bitbrains 411 it was the most followed.
    _forecast(0.95, 0.7, 0.85),
    # Between the forecast at full utilisation and at 0.85: on bitbrains 411 q0.95 guard 0.9 left more
    # unmet than reactive on about half the days and the 15% headroom cost 0.9-1.0x reactive's
    # capacity-hours; with 10% it met the level on days neither side of it did (0.92x -> 0.91x over the
    # trace; 412 0.80x -> 0.79x; NAB rds_cpu +0.016 -> +0.012 points).
    _forecast(0.95, 0.9, 0.9),
    # The forecast, and never less than the demand at this time of day yesterday: what recurs at a time
    # of day is held before it comes, which a quantile of the forecast spreads over the day. The floor
    # carries the recurring peaks, so the forecast's quantile can be lower: on bitbrains 411 this
    # candidate was the most followed (0.91x -> 0.88x reactive's capacity-hours, 0.62% -> 0.47% unmet;
    # at q0.9 0.88x and 0.50%; a two-day floor 0.89x and 0.55%).
    _forecast(0.8, 0.9, floor_days=1),
    # The demand at this time yesterday, with the spread of its day-to-day changes (what the clouds'
    # pattern-based autoscalers and the backtest's ``seasonal`` plan from): where demand repeats
    # yesterday's more closely than the issued forecast follows it, it holds less for the same service
    # (bitbrains 407 0.82x -> 0.80x reactive's capacity-hours, 0.094% -> 0.088% unmet; 412 0.79x ->
    # 0.78x). Not at q0.8 or q0.9: there it was chosen on Alibaba 2018 for a night after two on which
    # it met reactive's unmet, and the spikes, which move 30-60 minutes from one night to the next,
    # left 0.03 points more unmet over the trace.
    _forecast(0.99, 0.9, forecast=SEASONAL_NAIVE),
    # The same at q0.95. Where the day repeats (bitbrains 407 after its first week), a day replayed on
    # it held 10-25% less than on the issued forecast, at no more unmet; the pool followed it 14 of 26.5
    # chosen days: 407 0.801x -> 0.786x reactive's capacity-hours, 0.088% -> 0.046% unmet; 412 0.780x ->
    # 0.773x. Its cost: after a day of bursts that do not recur it holds them again, so on bitbrains
    # 411 it took 0.876x to 0.889x (at 0.475% -> 0.433% unmet).
    _forecast(0.95, 0.9, forecast=SEASONAL_NAIVE),
    # Yesterday's demand at q0.99 with the reactive rule's headroom close behind: what recurs is held
    # before it comes, and a burst that does not recur is caught by the guard, for less than the
    # reactive rule's 0.6. On bitbrains 407 after its stuck days no other candidate met the reactive
    # rule's unmet on 07-08 to 07-10 and the pool ran the reactive rule for a day (the backtest's
    # ``seasonal`` followed this setting on 07-11): 0.788x -> 0.779x reactive's capacity-hours at
    # 0.052% -> 0.048% unmet, 412 -0.0003x, the other daily-cycle traces unchanged. Not yesterday q0.95
    # guard 0.9 at 0.9 utilisation, ``seasonal``'s choice on 07-10: Alibaba 2018 0.842x -> 0.853x
    # (docs/benchmarks.md).
    _forecast(0.99, 0.7, forecast=SEASONAL_NAIVE),
)


def protection(name: str, candidates: Sequence[Candidate] = CANDIDATES) -> tuple[float, float, float, float]:
    """How much a candidate provisions beyond what its replay showed, as a sort key (larger: more).

    A higher quantile, a tighter guard, less planned utilisation and a seasonal floor over more days
    each hold more capacity where the replayed days did not test them; the reactive rule, sized on
    observed demand with its own headroom, ranks above every forecast. A name not among ``candidates``
    ranks lowest.

    :param name: a candidate's name.
    :param candidates: where to look.
    """
    known = {c.name: c for c in candidates}
    c = known.get(name)
    if c is None:
        return (-math.inf, -math.inf, -math.inf, -math.inf)
    if c.reactive:
        return (math.inf, 0.0, -(c.target_utilization or 0.6), 0.0)
    return (
        float(c.quantile or 0.0),
        -float(c.guard_utilization or 1.0),
        -float(c.target_utilization or 1.0),
        float(c.seasonal_floor_days),
    )


def candidates_on(resource: str, candidates: Sequence[Candidate] = CANDIDATES) -> tuple[Candidate, ...]:
    """The candidates that size a pool bound by ``resource`` differently, in their order.

    Task slots are planned full whatever a rule's utilisation (a worker with a free slot is just
    idle), so on ``slots`` the reactive rule at 0.7 and 0.8 is the reactive rule, and a forecast rule
    at 0.85 utilisation is that rule at full: replayed, they would tie with another or be chosen under
    a name that promises headroom the pool never gets.

    :param resource: the binding resource replayed.
    :param candidates: the settings.
    """
    if resource != "slots":
        return tuple(candidates)
    return tuple(c for c in candidates if c is REACTIVE or c.target_utilization is None)


def candidate_named(name: str, candidates: Sequence[Candidate] = CANDIDATES) -> Candidate:
    """The candidate called ``name`` (a stored choice names one).

    :param name: a candidate's name.
    :param candidates: where to look.
    """
    for candidate in candidates:
        if candidate.name == name:
            return candidate
    raise ValueError(f"no sizing candidate named {name!r}; known: {', '.join(c.name for c in candidates)}")


@dataclass(frozen=True)
class Evidence:
    """What the replay reads: a pool's recent observed demand and the forecasts issued over it.

    :param demand: observed demand per step, oldest first (one resource, the one the pool is sized by).
    :param index: the steps' timestamps (UTC).
    :param start: first replayed step; the steps before it are what the planner reads as recent demand.
    :param settle: replayed steps from ``start`` that are not scored (:data:`SETTLE_S`): the fleet's
        cold start.
    :param forecasts: step -> the forecast (:class:`~airflow_predictive.planning.planner.ForecastView`)
        issued at that step; a step without one plans from the newest earlier issue, as the planner does.
    :param instance_capacity: demand one instance serves.
    :param boot_steps: boot lead in steps.
    :param max_instances: the pool's maximum size.
    :param resource: the resource ``demand`` is of, the one that binds the pool's size (``cpu``,
        ``memory`` or ``slots``); ``instance_capacity`` is in its unit.
    :param baseline_forecasts: step -> the seasonal-naive forecast at that step (what the candidates
        reading :data:`SEASONAL_NAIVE` plan from); empty: those candidates are not replayed.
    :param tries: the pool's task tries, in seconds from the step ``start`` (None: the pool's queue
        wait is not replayed, :class:`~airflow_predictive.simulation.task_queue.Tries`).
    :param held: instances the pool really held in each step of ``index`` (NaN: not recorded; None:
        not read), to measure Airflow's pickup against the replay (:func:`~.task_queue.pickup_s`).
    """

    demand: np.ndarray
    index: pd.DatetimeIndex
    start: int
    forecasts: Mapping[int, Any]
    instance_capacity: float
    boot_steps: int
    max_instances: int
    settle: int = 0
    resource: str = "cpu"
    baseline_forecasts: Mapping[int, Any] = field(default_factory=dict)
    tries: Tries | None = None
    held: np.ndarray | None = None

    def forecasts_of(self, candidate: Candidate) -> Mapping[int, Any]:
        """The forecasts ``candidate`` plans from (empty: none on the evidence)."""
        return self.baseline_forecasts if candidate.forecast == SEASONAL_NAIVE else self.forecasts

    @property
    def interval_s(self) -> int:
        return int((self.index[1] - self.index[0]).total_seconds()) if len(self.index) > 1 else 300

    def context(self) -> ReplayContext:
        return ReplayContext(
            demand=np.asarray(self.demand, dtype=float),
            index=self.index,
            interval_s=self.interval_s,
            instance_capacity=self.instance_capacity,
            boot_steps=self.boot_steps,
            max_instances=self.max_instances,
            start=self.start,
            resource=self.resource,
        )


@dataclass(frozen=True)
class Score:
    """One candidate over the replayed days.

    :param candidate: its name.
    :param unmet_pct: demand left unmet, percent of demand.
    :param capacity_hours: running instance-hours.
    :param daily_unmet_pct: unmet percent of each replayed day, oldest first (empty: not split).
    :param noise_pct: standard error of ``unmet_pct`` from its :data:`NOISE_BLOCK_S` blocks (points):
        how precisely the replayed days pin the candidate's unmet demand down.
    :param wait_p95_s: the 95th percentile of the replayed tries' queue waits (None: not replayed).
    :param daily_wait_p95_s: the same per replayed day, oldest first (None: a day of fewer than
        :data:`MIN_WAIT_TRIES` tries).
    :param wait_pickup_s: the seconds of each wait that are Airflow's pickup, measured on the pool's
        own tries and added to the replay (:func:`~.task_queue.pickup_s`); the same for every candidate.
    """

    candidate: str
    unmet_pct: float
    capacity_hours: float
    daily_unmet_pct: tuple[float, ...] = ()
    noise_pct: float = 0.0
    wait_p95_s: float | None = None
    daily_wait_p95_s: tuple[float | None, ...] = ()
    wait_pickup_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "candidate": self.candidate,
            "unmet_pct": round(self.unmet_pct, 4),
            "capacity_hours": round(self.capacity_hours, 4),
            "daily_unmet_pct": [round(u, 4) for u in self.daily_unmet_pct],
            "noise_pct": round(self.noise_pct, 4),
        }
        if self.wait_p95_s is not None:
            out["wait_p95_s"] = round(self.wait_p95_s, 1)
            out["daily_wait_p95_s"] = [None if w is None else round(w, 1) for w in self.daily_wait_p95_s]
            out["wait_pickup_s"] = round(self.wait_pickup_s, 1)
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Score:
        wait = payload.get("wait_p95_s")
        return cls(
            payload["candidate"],
            payload["unmet_pct"],
            payload["capacity_hours"],
            tuple(payload.get("daily_unmet_pct", ())),
            float(payload.get("noise_pct", 0.0)),
            None if wait is None else float(wait),
            tuple(payload.get("daily_wait_p95_s", ())),
            float(payload.get("wait_pickup_s", 0.0)),
        )


@dataclass(frozen=True)
class Choice:
    """The setting a pool follows, why, and what it was chosen against.

    :param candidate: the chosen candidate's name.
    :param target_unmet_pct: the unmet demand (percent) the level allowed on the replayed days.
    :param scores: every candidate's score, the reactive counterfactual first.
    :param reason: the choice in words (plan reasons quote it).
    :param chosen_at: when it was chosen.
    :param met: whether the chosen candidate met the level on the replayed days.
    :param resource: the resource replayed (:attr:`Evidence.resource`).
    :param stuck_value: the value the replayed days' demand was stuck at, when they were mostly stuck
        (:func:`stuck_value`): the choice holds only while demand stays there. None: live evidence.
    :param fell_back_from: the candidate chosen on stuck days that demand has since left
        (:meth:`fallen_back`); the pool runs the reactive rule until the next choice.
    """

    candidate: str
    target_unmet_pct: float
    scores: tuple[Score, ...]
    reason: str
    chosen_at: datetime
    met: bool = True
    resource: str = "cpu"
    stuck_value: float | None = None
    fell_back_from: str | None = None

    @property
    def reactive(self) -> Score:
        return next(s for s in self.scores if s.candidate == REACTIVE.name)

    def outlived(self, demand: Sequence[float] | np.ndarray) -> bool:
        """Whether demand observed since the choice left the value its stuck evidence held: the
        candidate was never tested on live demand, so it no longer holds.

        :param demand: the resource's demand since :attr:`chosen_at` (NaN: not observed).
        """
        if self.stuck_value is None or self.candidate == REACTIVE.name:
            return False
        values = np.asarray(demand, dtype=float)
        values = values[~np.isnan(values)]
        same = np.isclose(values, self.stuck_value, rtol=series.SAME_VALUE_RTOL, atol=0.0)
        return bool(values.size and not same.all())

    def fallen_back(self) -> Choice:
        """The choice once :meth:`outlived`: the reactive rule until the next choice."""
        return replace(
            self,
            candidate=REACTIVE.name,
            reason=(
                f"{REACTIVE.name}: demand left {self.stuck_value:.6g}, the value the replayed days were "
                f"stuck at, so {self.candidate} (chosen on them) was never tested on live demand; "
                "the reactive rule until the next choice"
            ),
            fell_back_from=self.candidate,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "target_unmet_pct": round(self.target_unmet_pct, 4),
            "scores": [s.to_dict() for s in self.scores],
            "reason": self.reason,
            "chosen_at": self.chosen_at.isoformat(),
            "met": self.met,
            "resource": self.resource,
            "stuck_value": self.stuck_value,
            "fell_back_from": self.fell_back_from,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Choice:
        return cls(
            candidate=str(payload["candidate"]),
            target_unmet_pct=float(payload["target_unmet_pct"]),
            scores=tuple(Score.from_dict(s) for s in payload["scores"]),
            reason=str(payload["reason"]),
            chosen_at=pd.Timestamp(payload["chosen_at"]).to_pydatetime(),
            met=bool(payload.get("met", True)),
            resource=str(payload.get("resource", "cpu")),
            stuck_value=None if payload.get("stuck_value") is None else float(payload["stuck_value"]),
            fell_back_from=payload.get("fell_back_from"),
        )


# ----------------------------------------------------------------------------------------- replay


class _IssuedForecastPolicy(ForecastPolicy):
    """One forecast candidate on the forecasts actually issued (no forecaster runs in the replay)."""

    name = "candidate"

    def __init__(self, candidate: Candidate, forecasts: Mapping[int, Any]) -> None:
        super().__init__(candidate.quantile, candidate.target_utilization, candidate.guard_utilization)
        self.candidate = candidate
        self._issued = forecasts
        self._steps = sorted(forecasts)

    def prepare(self, context: ReplayContext) -> None:
        super().prepare(context)
        self.pool = candidate_pool(context, self.candidate)
        # The switch is off, so the planner reads only the newest demand (the guard).
        self._history = 2

    def forecast_at(self, step: int) -> Any:
        i = bisect.bisect_right(self._steps, step) - 1
        return self._issued[self._steps[i]] if i >= 0 else None


def candidate_pool(context: ReplayContext, candidate: Candidate) -> Any:
    """The simulated pool sized by ``candidate`` (the planner's policy fields it sets, nothing else).

    :param context: the replay context.
    :param candidate: the candidate.
    """
    sizing = candidate.sizing()
    return backtest_pool(
        context,
        signal=sizing["signal"],
        quantile=sizing.get("quantile"),
        target_utilization=sizing.get("target_utilization"),
        guard_utilization=sizing.get("guard_utilization"),
        min_daily_cycle=sizing.get("min_daily_cycle"),
        seasonal_floor_days=sizing.get("seasonal_floor_days"),
    )


def floor_days(candidates: Sequence[Candidate] = CANDIDATES) -> int:
    """The most days any candidate's seasonal floor reads (0: none has a floor).

    :param candidates: the settings replayed.
    """
    return max((c.seasonal_floor_days for c in candidates), default=0)


def floor_buckets(context: ReplayContext, candidates: Sequence[Candidate] = CANDIDATES) -> int:
    """Observed buckets before the replayed window that the candidates' seasonal floors read.

    :param context: the replay context (its interval and boot lead).
    :param candidates: the settings replayed.
    """
    return planner.seasonal_floor_buckets(candidate_pool(context, REACTIVE), floor_days(candidates))


def score_candidates(evidence: Evidence, candidates: Sequence[Candidate] = CANDIDATES) -> list[Score]:
    """Replay the evidence through the planner under each candidate and score unmet and capacity.

    :param evidence: recent demand and the forecasts issued over it.
    :param candidates: the settings to replay (the reactive rule among them).
    """
    context = evidence.context()
    settle = min(evidence.settle, max(0, len(context.demand) - context.start - 1))
    scored = context.demand[context.start + settle :]
    pickup = _pickup(evidence, settle)
    out = []
    for candidate in candidates:
        if candidate.reactive:
            policy: Any = ReactivePolicy(target_utilization=candidate.target_utilization or 0.6)
        elif evidence.forecasts_of(candidate):
            policy = _IssuedForecastPolicy(candidate, evidence.forecasts_of(candidate))
        else:
            continue  # no such forecast on the evidence: nothing to replay
        outcome = replay(policy, context)
        running, targets = outcome.running[settle:], outcome.targets[settle:]
        m = metrics.score(
            scored,
            running,
            targets,
            instance_capacity=context.instance_capacity,
            interval_s=context.interval_s,
            price_standard=0.0,
            price_spot=0.0,
        )
        served = running * context.instance_capacity
        days = max(1, round(len(scored) * context.interval_s / 86400))
        daily = tuple(
            unmet_percent(d, c)
            for d, c in zip(np.array_split(scored, days), np.array_split(served, days), strict=True)
        )
        score = Score(
            candidate.name, m.unmet_pct, m.capacity_hours, daily, _noise_pct(scored, served, context)
        )
        if evidence.tries is not None:
            waits = _wait_scores(evidence.tries, outcome.running, settle, days, context, pickup)
            score = replace(score, **waits)
        out.append(score)
    return out


def _scored_tries(tries: Tries, settle: int, steps: int, interval_s: int) -> np.ndarray:
    """Which tries were queued in the scored steps (after ``settle``, before ``steps``)."""
    queued = np.asarray(tries.queued_s, dtype=float)
    return (queued >= settle * interval_s) & (queued < steps * interval_s)


def _pickup(evidence: Evidence, settle: int) -> float:
    """Airflow's pickup over the replay on the fleet the pool held (0: no tries or no fleet record)."""
    if evidence.tries is None or evidence.held is None:
        return 0.0
    held = np.asarray(evidence.held, dtype=float)[evidence.start :]
    scored = _scored_tries(evidence.tries, settle, held.size, evidence.interval_s)
    return pickup_s(evidence.tries, held, evidence.interval_s, scored)


def _wait_scores(
    tries: Tries, running: np.ndarray, settle: int, days: int, context: ReplayContext, pickup: float = 0.0
) -> dict[str, Any]:
    """The replayed tries' queue-wait p95 over the scored steps and per day (tries queued in them),
    plus Airflow's measured ``pickup``; none when the scored steps hold fewer than
    :data:`MIN_WAIT_TRIES` tries: no wait to judge by."""
    start_s = settle * context.interval_s
    queued = np.asarray(tries.queued_s, dtype=float)
    scored = _scored_tries(tries, settle, len(running), context.interval_s)
    end_s = len(running) * context.interval_s
    if scored.sum() < MIN_WAIT_TRIES:
        return {}
    waits = replay_waits(tries, running, context.interval_s) + pickup
    edges = np.linspace(start_s, end_s, days + 1)
    daily = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        day = waits[scored & (queued >= lo) & (queued < hi)]
        daily.append(float(np.quantile(day, 0.95)) if len(day) >= MIN_WAIT_TRIES else None)
    return {
        "wait_p95_s": float(np.quantile(waits[scored], 0.95)),
        "daily_wait_p95_s": tuple(daily),
        "wait_pickup_s": pickup,
    }


def _noise_pct(demand: np.ndarray, served: np.ndarray, context: ReplayContext) -> float:
    """Standard error of the unmet percent over the window, from its blocks' shares of it.

    Each block's unmet demand is scaled to a percent of the window's demand as if every block were
    like it, so the blocks' mean is the window's unmet percent and their spread says how much a
    window of other bursts could differ.
    """
    blocks = round(len(demand) * context.interval_s / NOISE_BLOCK_S)
    total = float(np.sum(demand))
    if blocks < 2 or total <= 0:
        return 0.0
    short = np.maximum(np.asarray(demand, dtype=float) - served, 0.0)
    per_block = np.array([b.sum() for b in np.array_split(short, blocks)]) * 100.0 * blocks / total
    return float(per_block.std(ddof=1) / math.sqrt(blocks))


# ----------------------------------------------------------------------------------------- choose


def allowed_unmet_pct(
    level: ServiceLevel, reactive: Score, tolerance_pct: float = MATCH_TOLERANCE_PCT, *, by_wait: bool = False
) -> float:
    """The unmet demand (percent) the level allows on the replayed days.

    :param level: the pool's service level.
    :param reactive: the reactive rule's score on the same days (``match_reactive``'s yardstick).
    :param tolerance_pct: points above reactive's unmet that still match it.
    :param by_wait: the level is judged by the replayed queue wait alone (:func:`judged_by_wait`):
        any unmet demand is allowed (100).
    """
    if by_wait:
        return 100.0
    if level.matches_reactive:
        return reactive.unmet_pct + tolerance_pct
    return float(level.unmet_share) * 100.0


def judged_by_wait(level: ServiceLevel, resource: str, scores: Sequence[Score]) -> bool:
    """Whether a level is judged by the replayed queue wait alone, not by unmet demand too.

    So it is for a queue-wait level without an ``unmet_share`` on a pool bound by task slots whose
    tries were replayed: there, unmet slots are tasks queued, and the wait says how long they queued,
    which is what the pool's users were promised. On a pool bound by cpu or memory, unmet demand is
    work slowed on busy workers, which no queue wait shows: the unmet rule judges it as well.

    :param level: the pool's service level.
    :param resource: the resource replayed.
    :param scores: the candidates' scores.
    """
    waits = bool(scores) and all(s.wait_p95_s is not None for s in scores)
    return bool(
        level.queue_wait_p95_seconds is not None
        and level.unmet_share is None
        and waits
        and resource == "slots"
    )


def _meets_wait(score: Score, level: ServiceLevel) -> bool:
    """The replayed tries' queue-wait p95 within the level's, over the window and on each day that
    holds enough tries (met when the level sets none or the tries were not replayed)."""
    target = level.queue_wait_p95_seconds
    if target is None or score.wait_p95_s is None:
        return True
    days = [w for w in score.daily_wait_p95_s if w is not None]
    return score.wait_p95_s <= target and all(w <= target for w in days)


def _meets(
    score: Score, reactive: Score, level: ServiceLevel, tolerance_pct: float, by_wait: bool = False
) -> bool:
    """Met over the replayed days and on each of them: one lucky day must not carry a bad one, since
    the choice then runs on days it has not seen. A candidate other than the reactive rule meets the
    level by :data:`NOISE_MARGIN` standard errors of its unmet: the pool leaves the rule it would
    otherwise run only on evidence that outlasts the replayed days' luck. A queue-wait level's wait
    is judged too (:func:`_meets_wait`), and alone when ``by_wait``."""
    if not _meets_wait(score, level):
        return False
    if by_wait:
        return True
    margin = 0.0 if score.candidate == REACTIVE.name else NOISE_MARGIN * score.noise_pct
    if score.unmet_pct + margin > allowed_unmet_pct(level, reactive, tolerance_pct) + _EPS_PCT:
        return False
    theirs = reactive.daily_unmet_pct
    if len(theirs) != len(score.daily_unmet_pct):
        theirs = (math.inf,) * len(score.daily_unmet_pct)  # not split alike: the overall check only
    for own, reactive_day in zip(score.daily_unmet_pct, theirs, strict=True):
        allowed = reactive_day + tolerance_pct if level.matches_reactive else float(level.unmet_share) * 100
        if own > allowed + _EPS_PCT:
            return False
    return True


def _pooled_noise(scores: Sequence[Score], share: float) -> list[Score]:
    """Each score with the largest noise among the candidates (not the reactive rule) whose
    capacity-hours lie within ``share`` of its own: the noise it must meet the level by."""
    others = [s for s in scores if s.candidate != REACTIVE.name]
    out = []
    for s in scores:
        if s.candidate == REACTIVE.name:
            out.append(s)
            continue
        peers = [
            p.noise_pct
            for p in others
            if abs(p.capacity_hours - s.capacity_hours) <= share * s.capacity_hours
        ]
        out.append(replace(s, noise_pct=max([s.noise_pct, *peers])))
    return out


def choose(
    scores: Sequence[Score],
    level: ServiceLevel,
    *,
    now: datetime,
    current: str | None = None,
    margin: float = SWITCH_MARGIN,
    tolerance_pct: float = MATCH_TOLERANCE_PCT,
    tie_share: float = TIE_SHARE,
    trade_margin: float = TRADE_MARGIN,
    resource: str = "cpu",
) -> Choice:
    """The cheapest candidate that met ``level``, with hysteresis; reactive when nothing beats it.

    :param scores: every candidate's score, reactive's among them.
    :param level: the pool's service level.
    :param now: when the choice is made.
    :param current: the candidate the pool follows now (None: none yet).
    :param margin: a cheaper candidate replaces a current one that met the level only when cheaper
        by this share of its capacity-hours.
    :param tolerance_pct: ``match_reactive``: points above reactive's unmet that still match it.
    :param tie_share: candidates whose capacity-hours lie within this share of each other are judged
        by the largest noise among them, and within it of the cheapest that met they tie, broken
        toward the most protective (:func:`protection`).
    :param trade_margin: ``margin`` for a new choice that left more unmet than the current one.
    :param resource: the resource replayed (a queue-wait level on ``slots`` is judged by the wait
        alone, :func:`judged_by_wait`).
    """
    by_name = {s.candidate: s for s in scores}
    if REACTIVE.name not in by_name:
        raise ValueError("the scores must include the reactive rule's: it is the counterfactual")
    reactive = by_name[REACTIVE.name]
    by_wait = judged_by_wait(level, resource, scores)
    allowed = allowed_unmet_pct(level, reactive, tolerance_pct, by_wait=by_wait)
    ordered = (reactive, *(s for s in scores if s is not reactive))
    judged = _pooled_noise(ordered, tie_share)
    met = [
        s for s, j in zip(ordered, judged, strict=True) if _meets(j, reactive, level, tolerance_pct, by_wait)
    ]

    def decided(name: str, why: str, ok: bool = True) -> Choice:
        return Choice(name, allowed, ordered, why, now, ok)

    if not met:
        # Nothing met an explicit level: the least unmet (or shortest wait) is the closest the pool gets.
        closest = min(ordered, key=lambda s: (s.wait_p95_s or 0.0, s.unmet_pct, s.capacity_hours))
        return decided(
            closest.candidate,
            f"{closest.candidate}: no candidate met {level.describe()} "
            f"(allowed {allowed:.3g}%); the closest, {_outcome(closest)}",
            ok=False,
        )
    cheapest = min(s.capacity_hours for s in met)
    # Costs that tie on the replayed days: the one that keeps more in reserve for a day they did not hold.
    tied = [s for s in met if s.capacity_hours <= cheapest * (1 + tie_share)]
    best = max(tied, key=lambda s: (protection(s.candidate), -s.capacity_hours))
    held = by_name.get(current) if current else None
    kept = _kept_over(best, held, margin, trade_margin) if held is not None and held in met else ""
    best = held if kept else best
    ratio = best.capacity_hours / reactive.capacity_hours if reactive.capacity_hours > 0 else math.nan
    why = (
        f"{best.candidate}: {'still met' if kept else 'cheapest that met'} {level.describe()} on the "
        f"replayed days ({_outcome(best)} vs reactive {_outcome(reactive)}, "
        f"{ratio:.2f}x reactive's capacity-hours{kept})"
    )
    return decided(best.candidate, why)


def _outcome(score: Score) -> str:
    """A score's service in words: its unmet demand, and its tries' queue wait where replayed."""
    text = f"unmet {score.unmet_pct:.3g}%"
    if score.wait_p95_s is None:
        return text
    pickup = f" with {score.wait_pickup_s:.0f} s of Airflow's pickup" if score.wait_pickup_s >= 0.5 else ""
    return f"{text}, queue wait p95 {score.wait_p95_s:.0f} s{pickup}"


def _kept_over(best: Score, held: Score, margin: float, trade_margin: float) -> str:
    """Why the pool keeps ``held`` (which still met the level) over the new ``best``, for the choice's
    reason; "" when the new one is cheaper by the margin it needs (``trade_margin`` when it left more
    unmet on the replayed days, or its tries waited longer) and replaces it."""
    if held is best:
        return ""
    longer = best.wait_p95_s is not None and held.wait_p95_s is not None and best.wait_p95_s > held.wait_p95_s
    gives_up = best.unmet_pct > held.unmet_pct + _EPS_PCT or longer
    needed = trade_margin if gives_up else margin
    if best.capacity_hours <= held.capacity_hours * (1 - needed):
        return ""
    saving = 1 - best.capacity_hours / held.capacity_hours if held.capacity_hours > 0 else 0.0
    if saving <= 0:
        return f"; kept over {best.candidate}, no cheaper"
    more = (" and a longer queue wait" if longer else " and more unmet") if gives_up else ""
    return f"; kept over {best.candidate}, {saving:.1%} cheaper{more}, under the {needed:.0%} switch margin"


def choose_by_replay(
    evidence: Evidence,
    level: ServiceLevel,
    *,
    now: datetime,
    current: str | None = None,
    candidates: Sequence[Candidate] = CANDIDATES,
) -> Choice:
    """Replay, score and choose: one pool's daily service-level choice.

    :param evidence: recent demand and the forecasts issued over it.
    :param level: the pool's service level.
    :param now: when the choice is made.
    :param current: the candidate the pool follows now.
    :param candidates: the settings to replay.
    """
    distinct = candidates_on(evidence.resource, candidates)
    scores = score_candidates(evidence, distinct)
    choice = choose(scores, level, now=now, current=current, resource=evidence.resource)
    return replace(choice, resource=evidence.resource, stuck_value=stuck_value(evidence))


def stuck_value(evidence: Evidence) -> float | None:
    """The value the evidence's demand is stuck at, when its scored days were mostly stuck
    (:data:`MIN_LIVE_SHARE`) and still are at its newest step; None: the evidence is live demand.

    :param evidence: the replay's evidence.
    """
    demand = np.asarray(evidence.demand, dtype=float)
    run = max(2, round(series.STUCK_DAYS * 86400 / evidence.interval_s))
    flags = series.stuck(demand, run)
    scored = flags[evidence.start + evidence.settle :]
    if not scored.size or not flags[-1] or 1.0 - scored.mean() >= MIN_LIVE_SHARE:
        return None
    return float(demand[-1])


# ---------------------------------------------------------------------------- the backtest's product


@dataclass
class OnlineChoicePolicy:
    """The product in the backtest: a forecast policy's own forecasts, the pool following its choice.

    Once ``min_evidence_steps`` (half a day) of its forecasts were issued, and every ``every_steps``
    (a day) after, it replays the last ``window_steps`` (two days) through the planner under every
    candidate (only the past: demand before the step, forecasts issued before it) and follows the
    choice. Before the first choice the pool runs the reactive rule: nothing has shown it beats it
    yet. (The product's new pool does the same: under 1.5 days of demand its planner runs the reactive
    rule, and its first choice comes after half a day of issued forecasts.) ``--sweep`` traces the
    forecast policy's fixed settings (:meth:`with_knob`).

    :param forecasts: ``predictive`` or ``seasonal`` at the product's defaults.
    :param level: the service level the backtest's pool states.
    """

    forecasts: ForecastPolicy
    level: ServiceLevel = field(default_factory=ServiceLevel)
    every_steps: int = 0
    window_steps: int = 0
    min_evidence_steps: int = 0
    candidates: Sequence[Candidate] = CANDIDATES
    choices: list[dict[str, Any]] = field(default_factory=list)
    _pools: dict[str, Any] = field(default_factory=dict)
    _current: str | None = None
    _choice: Choice | None = None
    _context: ReplayContext | None = None
    _baseline: ForecastPolicy | None = None

    @property
    def name(self) -> str:
        return self.forecasts.name

    def settings(self) -> dict[str, Any]:
        steps: dict[str, int] = {}
        for c in self.choices:
            steps[c["candidate"]] = steps.get(c["candidate"], 0) + c["steps"]
        # Steps sized on the seasonal-naive baseline are counted by the baseline's policy: the pool's
        # steps under each rule are both policies' together.
        baseline = self._baseline.rules if self._baseline is not None else {}
        rules = dict(Counter(self.forecasts.rules) + Counter(baseline))
        return {
            **self.forecasts.settings(),
            **({"steps_by_rule": rules} if rules else {}),
            "service_level": self.level.describe(),
            "online_choice": {
                "every_steps": self.every_steps,
                "window_steps": self.window_steps,
                "candidates": [c.name for c in self.candidates],
                "steps_by_candidate": steps,
                # Each choice with every candidate's replayed scores: what a choice rule is judged by.
                "choices": list(self.choices),
            },
        }

    def prepare(self, context: ReplayContext) -> None:
        self.forecasts.prepare(context)
        self._context = context
        per_day = round(86400 / context.interval_s)
        self.every_steps = self.every_steps or per_day
        self.window_steps = self.window_steps or 2 * per_day
        self.min_evidence_steps = self.min_evidence_steps or per_day // 2
        self._pools = {c.name: candidate_pool(context, c) for c in self.candidates}
        self._current = None
        self._choice = None
        self.choices = []
        # The seasonal-naive baseline the product can plan from: its forecasts are the demand itself, so
        # the backtest issues them as the runtime computes them, at each step from the demand before it.
        # A policy whose own forecasts are that baseline has them already.
        self._baseline = None
        if not isinstance(self.forecasts, SeasonalPolicy) and any(
            c.forecast == SEASONAL_NAIVE for c in self.candidates
        ):
            self._baseline = SeasonalPolicy()
            self._baseline.prepare(context)

    def decide(self, step: int, fleet: Fleet) -> int:
        context = self._context
        since = step - context.start
        if since >= self.min_evidence_steps and (since - self.min_evidence_steps) % self.every_steps == 0:
            self._rechoose(step)
        # A choice made on stuck days holds while demand stays stuck (the demand before this step).
        if self._choice is not None and self._choice.outlived(context.demand[max(0, step - 1) : step]):
            self._follow(self._choice.fallen_back(), step)
        if self.choices:
            self.choices[-1]["steps"] += 1
        # The forecaster issues every cycle whichever forecast the pool follows (the product forecasts
        # every series): the next choice replays these issues, and each refit starts from the last.
        self.forecasts.view_at(step)
        # No evidence yet that any candidate beats the reactive rule: the pool runs it.
        name = self._current or REACTIVE.name
        return self._source(name).decide_with(self._pools[name], step, fleet)

    def _source(self, name: str) -> ForecastPolicy:
        """The policy whose forecasts the candidate ``name`` plans from."""
        reads_baseline = candidate_named(name, self.candidates).forecast == SEASONAL_NAIVE
        return self._baseline if reads_baseline and self._baseline is not None else self.forecasts

    def _rechoose(self, step: int) -> None:
        choice = choose_by_replay(
            self.evidence(step),
            self.level,
            now=self._context.index[step].to_pydatetime(),
            current=self._current,
            candidates=self.candidates,
        )
        self._follow(choice, step)

    def _follow(self, choice: Choice, step: int) -> None:
        self._choice, self._current = choice, choice.candidate
        self.choices.append({**choice.to_dict(), "step": step, "steps": 0})

    def evidence(self, step: int) -> Evidence:
        """The replay's evidence at ``step``: the last window's demand and the forecasts issued in it."""
        context = self._context
        lo = max(context.start, step - self.window_steps)
        # The fleet settles on the hour before the scored window, so the scored days are whole days;
        # but never before the first forecast (the scored start): a forecast rule without one would
        # settle on nothing while the reactive rule settles, and the first day would score that.
        settle = round(SETTLE_S / context.interval_s)
        begin = max(context.start, lo - settle)
        settle = min(settle, step - begin - 1)
        # the reactive rule's stabilisation window, and the days a seasonal floor reads
        pre = min(begin, context.boot_steps + 3 + floor_buckets(context, self.candidates))
        first = begin - pre
        issued = self.forecasts._cache
        baseline = {}
        if self._baseline is not None:
            for s in range(begin, step):
                baseline[s - first] = self._baseline.issued_at(s)
        return Evidence(
            demand=context.demand[first:step],
            index=context.index[first:step],
            start=pre,
            forecasts={s - first: issued[s] for s in range(begin, step) if s in issued},
            instance_capacity=context.instance_capacity,
            boot_steps=context.boot_steps,
            max_instances=context.max_instances,
            settle=settle,
            baseline_forecasts=baseline,
        )

    def issued_at_lead(self, lead: int, column: str) -> tuple[np.ndarray, np.ndarray]:
        return self.forecasts.issued_at_lead(lead, column)

    def with_knob(self, **knobs: Any) -> ForecastPolicy:
        """A fixed setting of the forecast policy (the sweep's frontier), sharing its forecasts."""
        return self.forecasts.with_knob(**knobs)


#: Policies the backtest runs as the product: their forecasts, the pool following the online choice.
ONLINE_CHOICE_POLICIES = ("predictive", "seasonal")


def product_policy(name: str, options: Any) -> Any:
    """The backtest's policy ``name``; ``predictive`` and ``seasonal`` run the online choice.

    :param name: ``reactive``, ``seasonal``, ``predictive`` or ``oracle``.
    :param options: the backtest options (``service_level``: the pool's level).
    """
    policy = build_policy(name, options)
    if name not in ONLINE_CHOICE_POLICIES or not getattr(options, "online_choice", True):
        return policy
    level = getattr(options, "service_level", None) or ServiceLevel()
    return OnlineChoicePolicy(policy, level)


__all__ = [
    "CANDIDATES",
    "REACTIVE",
    "Candidate",
    "Choice",
    "Evidence",
    "OnlineChoicePolicy",
    "Score",
    "choose",
    "choose_by_replay",
    "product_policy",
]

"""``airflow-predictive bench target-bound``: what an explicit unmet target costs rules that read a few signals.

The backtest's oracle knows the demand ahead; a pool's rule knows only the past. Where the oracle meets
an explicit target (``--unmet-share``) and every product rule misses it, the question is whether any
rule from the past could meet it for less than the reactive rule. This benchmark answers it for the
rules whose fleet at a step depends only on a few signals: the hour of the day, the demand of the
last steps, the last hour's peak, the demand at this time yesterday. Each signal is cut into bands of
demand (in instances); a rule gives each combination of bands (a cell) one fleet size. A rule reads
the demand up to the step before the one it sizes, a step more than a fleet that boots for a step can
know (the backtest decides it a boot lead ahead): the bound is generous to the rules.

Two numbers per set of signals:

- **bound**: the least capacity-hours any such rule needs to leave at most the target unmet, the sizes
  fitted in hindsight to the very steps they are scored on (a Lagrangian dual value, so a true lower
  bound of that fit). The more cells, the more the fit learns the steps themselves, so it falls with
  every signal added: it is a bound, not a forecast of what a rule gets.
- **two-fold**: the sizes fitted (the same way) on every other day and applied to the days between,
  and the other way round: what such a rule gets on days it did not see, in capacity-hours and unmet.

The trace is loaded and scaled as the backtest does (instance = the 99th percentile / peak instances,
the scored steps after the history), and the reactive rule's capacity-hours come from the backtest's
own replay, so the ratios read like its table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from airflow_predictive.simulation.backtest import BacktestOptions, backtest_trace, context_for
from airflow_predictive.simulation.traces import load_trace

#: Band edges of a demand signal, in instances (a signal is which band its demand falls in).
BANDS = (1, 2, 4, 8, 16)
#: The sets of signals bounded, each a kind of rule.
SIGNAL_SETS: tuple[tuple[str, ...], ...] = (
    ("hour",),
    ("last step",),
    ("hour", "last step"),
    ("hour", "last two steps"),
    ("hour", "last two steps", "yesterday"),
    ("hour", "last two steps", "last hour"),
    ("hour", "last two steps", "last hour", "yesterday"),
)
#: Multipliers of unmet demand (per instance-step) tried for the dual; the bound is the best of them.
_PRICES = np.geomspace(1e-4, 1e6, 600)


def signals(
    demand: np.ndarray, hours: np.ndarray, start: int, capacity: float, per_day: int
) -> dict[str, np.ndarray]:
    """Each signal at every scored step (``start`` on), as a small integer.

    :param demand: the trace's demand, history included.
    :param hours: the hour of the day of every step.
    :param start: the first scored step (it needs a day and an hour of history before it).
    :param capacity: demand one instance serves.
    :param per_day: steps per day.
    """
    hour_steps = max(1, per_day // 24)
    if start < per_day + hour_steps:
        raise ValueError(
            f"the scored steps need a day and an hour of history before them; {start} steps given"
        )
    at = np.arange(start, demand.size)

    def band(values: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(BANDS, dtype=float), values / capacity, side="right")

    def peak(offsets: Sequence[int]) -> np.ndarray:
        return np.max(np.stack([demand[at + k] for k in offsets]), axis=0)

    return {
        "hour": hours[at].astype(np.int64),
        "last step": band(demand[at - 1]),
        "last two steps": band(peak((-1, -2))),
        "last hour": band(peak(range(-hour_steps, 0))),
        # within a step of this time yesterday: a recurring job drifts by a few minutes
        "yesterday": band(peak((-per_day - 1, -per_day, -per_day + 1))),
    }


def cells_of(values: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The cell (0 .. cells-1) of every step: the combination of its bands of ``names``."""
    key = np.zeros(next(iter(values.values())).size, dtype=np.int64)
    for name in names:
        key = key * 64 + values[name]
    return np.unique(key, return_inverse=True)[1].ravel()


def unmet_by_size(
    demand: np.ndarray, cells: np.ndarray, capacity: float, sizes: np.ndarray, n: int
) -> np.ndarray:
    """``(n, sizes)``: the demand each of ``n`` cells leaves unmet at each fleet size."""
    return np.column_stack(
        [np.bincount(cells, weights=np.maximum(demand - k * capacity, 0.0), minlength=n) for k in sizes]
    )


def cheapest(
    count: np.ndarray, unmet: np.ndarray, sizes: np.ndarray, budget: float
) -> tuple[float, np.ndarray]:
    """The dual bound on the instance-steps that leave at most ``budget`` unmet, and a feasible choice.

    For a price ``p`` of unmet demand, each cell takes the size minimising its instance-steps plus ``p``
    times its unmet; that total minus ``p * budget`` lies below any choice that meets the budget (weak
    duality), whichever ``p``. The choice is that of the lowest price whose sizes meet the budget.

    :param count: steps in each cell.
    :param unmet: :func:`unmet_by_size`.
    :param sizes: the fleet sizes.
    :param budget: demand that may be left unmet.
    :returns: the bound and each cell's index into ``sizes``.
    """
    cost = np.outer(count, sizes).astype(float)
    bound, chosen = -math.inf, None
    for price in _PRICES:
        total = cost + price * unmet
        pick = total.argmin(axis=1)
        bound = max(bound, float(total.min(axis=1).sum()) - price * budget)
        if chosen is None and unmet[np.arange(pick.size), pick].sum() <= budget:
            chosen = pick
    if chosen is None:
        chosen = np.full(count.size, sizes.size - 1)
    return max(bound, 0.0), chosen


def two_fold(
    demand: np.ndarray, cells: np.ndarray, day: np.ndarray, capacity: float, sizes: np.ndarray, share: float
) -> tuple[float, float]:
    """Sizes fitted on every other day, scored on the days between (and the other way round).

    A cell the fitted days never saw gets the largest size: a rule has nothing to go on there.

    :returns: instance-steps and demand unmet on the days not fitted, both halves summed.
    """
    n = int(cells.max()) + 1
    steps = unmet_total = 0.0
    for half in (0, 1):
        fit, test = day % 2 == half, day % 2 != half
        count = np.bincount(cells[fit], minlength=n)
        unmet = unmet_by_size(demand[fit], cells[fit], capacity, sizes, n)
        _, pick = cheapest(count, unmet, sizes, share * float(demand[fit].sum()))
        pick = np.where(count > 0, pick, sizes.size - 1)
        fleet = sizes[pick[cells[test]]]
        steps += float(fleet.sum())
        unmet_total += float(np.maximum(demand[test] - fleet * capacity, 0.0).sum())
    return steps, unmet_total


def bound_trace(series: Any, options: BacktestOptions, share: float) -> dict[str, Any]:
    """Every signal set's bound and two-fold result on one trace, against the reactive rule.

    :param series: a trace from :func:`~airflow_predictive.simulation.traces.load_trace`.
    :param options: the backtest's options (history, boot delay, peak and maximum instances).
    :returns: the rules' results; none where even the pool at its maximum at every step leaves more
        than the target unmet (``least_unmet_pct``): there no rule, nor the oracle, meets it.
    :param share: the explicit target, a share of demand that may be left unmet.
    """
    if not 0 < share < 1:
        raise ValueError(f"--unmet-share must lie between 0 and 1 (exclusive); got {share}")
    options = replace(options, policies=("reactive",)).validated()
    context = context_for(series, options)
    reactive = backtest_trace(series, options)
    reactive_steps = reactive["policies"]["reactive"]["capacity_hours"] * 3600 / context.interval_s
    demand = np.asarray(context.demand, dtype=float)
    per_day = round(86400 / context.interval_s)
    values = signals(demand, context.index.hour.to_numpy(), context.start, context.instance_capacity, per_day)
    scored = demand[context.start :]
    day = np.arange(scored.size) // per_day
    # the pool's maximum bounds every rule, the oracle's too (the backtest's ``max_instances``)
    largest = min(int(math.ceil(scored.max() / context.instance_capacity)), int(context.max_instances))
    sizes = np.arange(largest + 1)
    total = float(scored.sum())
    least = float(np.maximum(scored - largest * context.instance_capacity, 0.0).sum())
    out = {
        "trace": str(series.name),
        "unmet_share": share,
        "reactive_capacity_hours": reactive["policies"]["reactive"]["capacity_hours"],
        "reactive_unmet_pct": reactive["policies"]["reactive"]["unmet_pct"],
        # the pool at its maximum at every step: no rule leaves less
        "least_unmet_pct": round(100 * least / total, 3),
        "rules": [],
    }
    if least > share * total:
        return out
    for names in SIGNAL_SETS:
        cells = cells_of(values, names)
        count = np.bincount(cells)
        unmet = unmet_by_size(scored, cells, context.instance_capacity, sizes, count.size)
        bound, _ = cheapest(count, unmet, sizes, share * total)
        steps, unmet = two_fold(scored, cells, day, context.instance_capacity, sizes, share)
        out["rules"].append(
            {
                "signals": list(names),
                "cells": int(count.size),
                "bound_x_reactive": round(bound / reactive_steps, 3),
                "two_fold_x_reactive": round(steps / reactive_steps, 3),
                "two_fold_unmet_pct": round(100 * unmet / total, 3),
            }
        )
    return out


def run(paths: Sequence[Path], share: float, options: BacktestOptions) -> dict:
    """``bench target-bound`` over trace files (JSON-ready)."""
    return {
        "benchmark": "target-bound",
        "traces": [bound_trace(load_trace(p), options, share) for p in paths],
    }

"""Backtest metrics: unmet and idle demand, capacity-hours, cost and changes over the scored steps.

Definitions (the JSON contract of ``airflow-predictive backtest``):

- ``unmet_pct`` = 100 * sum(max(demand - capacity, 0)) / sum(demand)
  (:func:`airflow_predictive.accuracy.unmet_percent`)
- ``idle_pct`` = 100 * sum(max(capacity - demand, 0)) / sum(demand)
  (:func:`airflow_predictive.accuracy.idle_percent`)
- ``capacity_hours`` = sum over steps of running instances * interval (hours); booting instances
  are not capacity
- ``cost`` = capacity_hours * the pool's standard hourly price of one instance (``cost_spot`` with
  its spot price)
- ``changes`` = steps whose target size differs from the previous step's
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airflow_predictive.accuracy import idle_percent, unmet_percent


@dataclass(frozen=True)
class Metrics:
    """What one policy did over the scored part of a trace.

    :param unmet_pct: demand not served, percent of total demand.
    :param idle_pct: capacity not used, percent of total demand.
    :param capacity_hours: running instance-hours.
    :param cost: capacity-hours at the standard hourly price.
    :param cost_spot: capacity-hours at the spot hourly price.
    :param changes: steps where the target size changed.
    """

    unmet_pct: float
    idle_pct: float
    capacity_hours: float
    cost: float
    cost_spot: float
    changes: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "unmet_pct": round(self.unmet_pct, 4),
            "idle_pct": round(self.idle_pct, 4),
            "capacity_hours": round(self.capacity_hours, 4),
            "cost": round(self.cost, 4),
            "cost_spot": round(self.cost_spot, 4),
            "changes": int(self.changes),
        }


def capacity_hours(running: np.ndarray, interval_s: float) -> float:
    """Running instances times the interval, summed, in hours.

    :param running: running (booted) instances per step.
    :param interval_s: step length in seconds.
    """
    return float(np.sum(running)) * interval_s / 3600.0


def changes(targets: np.ndarray, previous: int | None = None) -> int:
    """Steps whose target size differs from the step before.

    :param targets: target size per step.
    :param previous: the target before the first step (``None``: the first step is not a change).
    """
    targets = np.asarray(targets)
    if previous is not None:
        targets = np.concatenate([[previous], targets])
    return int(np.count_nonzero(np.diff(targets)))


def score(
    demand: np.ndarray,
    running: np.ndarray,
    targets: np.ndarray,
    *,
    instance_capacity: float,
    interval_s: float,
    price_standard: float,
    price_spot: float,
    previous_target: int | None = None,
) -> Metrics:
    """All metrics of one policy over the scored steps.

    :param demand: demand per scored step.
    :param running: running instances per scored step.
    :param targets: target size per scored step.
    :param instance_capacity: demand one running instance serves.
    :param interval_s: step length in seconds.
    :param price_standard: standard price of one instance-hour.
    :param price_spot: spot price of one instance-hour.
    :param previous_target: the target just before the first scored step.
    """
    demand = np.asarray(demand, dtype=float)
    running = np.asarray(running, dtype=float)
    capacity = running * instance_capacity
    hours = capacity_hours(running, interval_s)
    return Metrics(
        unmet_pct=unmet_percent(demand, capacity),
        idle_pct=idle_percent(demand, capacity),
        capacity_hours=hours,
        cost=hours * price_standard,
        cost_spot=hours * price_spot,
        changes=changes(targets, previous_target),
    )


def calibration_by_block(
    hours: np.ndarray,
    actual: np.ndarray,
    upper: np.ndarray,
    *,
    level: float,
    block_hours: int = 4,
    days: np.ndarray | None = None,
) -> dict[str, object]:
    """How often demand exceeded a forecast quantile, overall, in each block of the day and each hour.

    One exceedance rate over a whole trace hides tails that are too narrow in busy hours and too wide
    in quiet ones. Each block's (and hour's) rate is compared with ``1 - level`` plus two standard
    errors of its rate (``noise_bound``): a block above it exceeds by more than sampling noise allows
    (one-sided, about 1 block in 40 by chance).

    The binomial standard error (``binomial_bound``) takes the buckets as independent. They are not:
    a burst above the quantile spans several buckets, and on a day the forecast trails a new level a
    block exceeds in most of its buckets. With ``days``, the standard error is also estimated with the
    day as the unit (cluster-robust: from how much the block's exceedance varies from day to day), and
    the bound uses the larger of the two; ``design_effect`` is the variance the days show over the
    binomial's at the same rate (1: as independent as the binomial assumes).

    :param hours: hour of day (UTC) of each target bucket.
    :param actual: observed demand of each target bucket.
    :param upper: the forecast quantile issued for it.
    :param level: the quantile's level.
    :param block_hours: width of a block of the day, in hours.
    :param days: the day (any label) of each target bucket; None: the binomial bound alone.
    """
    hours = np.asarray(hours, dtype=int)
    hit = np.asarray(actual, dtype=float) > np.asarray(upper, dtype=float)
    day = None if days is None else np.unique(np.asarray(days), return_inverse=True)[1]
    blocks = _exceedance_by(hours, hit, level, block_hours, day)
    by_hour = _exceedance_by(hours, hit, level, 1, day)
    worst = max(blocks, key=lambda b: blocks[b]["exceedance"]) if blocks else None
    worst_hour = max(by_hour, key=lambda b: by_hour[b]["exceedance"]) if by_hour else None
    return {
        "level": level,
        "exceedance": round(float(hit.mean()), 4) if hit.size else None,
        "by_block": blocks,
        "worst_block": worst,
        "worst_within_noise": all(b["exceedance"] <= b["noise_bound"] for b in blocks.values()),
        "worst_within_binomial": all(b["exceedance"] <= b["binomial_bound"] for b in blocks.values()),
        "by_hour": by_hour,
        "worst_hour": worst_hour,
        "hours_beyond_noise": sum(b["exceedance"] > b["noise_bound"] for b in by_hour.values()),
    }


def _exceedance_by(
    hours: np.ndarray, hit: np.ndarray, level: float, width: int, day: np.ndarray | None
) -> dict[str, dict]:
    """Exceedance rate, count and noise bounds of each ``width``-hour part of the day that has buckets."""
    expected = 1.0 - level
    out: dict[str, dict[str, float | int]] = {}
    for start in range(0, 24, width):
        inside = (hours >= start) & (hours < start + width)
        n = int(inside.sum())
        if n == 0:
            continue
        rate = float(hit[inside].mean())
        binomial = float(np.sqrt(expected * (1.0 - expected) / n))
        part: dict[str, float | int] = {"exceedance": round(rate, 4), "n": n}
        clustered = _day_clustered_se(hit[inside], day[inside], rate) if day is not None else None
        se = max(binomial, clustered or 0.0)
        part["noise_bound"] = round(expected + 2.0 * se, 4)
        part["binomial_bound"] = round(expected + 2.0 * binomial, 4)
        if clustered is not None and 0.0 < rate < 1.0:
            part["design_effect"] = round(clustered**2 / (rate * (1.0 - rate) / n), 2)
        out[f"{start:02d}-{start + width:02d}"] = part
    return out


def _day_clustered_se(hit: np.ndarray, day: np.ndarray, rate: float) -> float | None:
    """Standard error of an exceedance rate with the day as the sampling unit (None: under 2 days).

    :param hit: whether each bucket exceeded.
    :param day: each bucket's day index.
    :param rate: the rate over all buckets.
    """
    counts = np.bincount(day)
    present = counts > 0
    days = int(present.sum())
    if days < 2:
        return None
    hits = np.bincount(day, weights=hit.astype(float))[present]
    residual = hits - rate * counts[present]
    return float(np.sqrt(days / (days - 1) * np.sum(residual**2)) / counts.sum())

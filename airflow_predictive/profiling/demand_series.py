"""Demand-series builder: task runs + usage samples -> per pool and resource, a fixed-interval series.

Each bucket holds the time-weighted sum of what the runs overlapping it used: a run that used 2 vCPU
for half of a 5-minute bucket adds 1.0 to it. Units follow :mod:`airflow_predictive.contracts.demand` (cpu vCPU,
memory GiB, storage GiB, network Mbit/s).

What a run used, per resource, by precedence: **usage samples** (the worker listener, per sample
interval) > the try's **aggregate usage** (cpu_mean, rss_peak_mb, write_bytes, net_bytes on its
task_runs row) > its **resource hints** (``hints`` JSON: ``cpus``, ``ram`` MB, ``disk`` MB, ``net_mbps``)
> **defaults** (Airflow's ``Resources`` defaults: 1 CPU, 512 MB RAM, 512 MB disk; no network).
Storage is the bytes the run has written so far (its scratch footprint). Network counters are per
host, not per process: a host's bytes in one sample are split evenly between the tasks sampled on
that host at that moment.

**Slots** are not usage: a Celery worker runs at most ``worker_concurrency`` tasks at once whatever they
use, so a pool of I/O-bound tasks can queue for slots with almost no CPU demand. A try holds its
``pool_slots`` (default 1) from its queued time to its start (waiting in the queue) and from its start
to its end (running); the ``slots`` series is the **peak** of their sum within each bucket, not its
time-weighted mean: a slot cannot be shared in time without a task waiting, so thirty one-minute tasks
queued at once need thirty slots, not the six a five-minute mean would show (Airflow's KEDA rule reads
the same instantaneous count). A try still queued when the profiler last saw it (no start yet: the
collector records it without a start) holds its ``pool_slots`` from its queued time until ``now``, the
refresh's time, so a pool at zero workers shows the work waiting for it, as Airflow's KEDA rule counts
queued and running tasks; it uses no CPU, memory, storage or network yet. When it starts, the next
pass replaces it with the started try. A try that left the queue without starting (failed by
``task_queued_timeout``) waited until its end.

A bucket outside the profiler's coverage is a gap (``NaN``), never a zero: missing is not idle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive.contracts.demand import RESOURCES, USAGE_RESOURCES, series_id, validate_pool_name

DEFAULTS = {"cpu": 1.0, "memory": 0.5, "storage": 0.5, "network": 0.0}
KEY = ["dag_id", "run_id", "task_id", "map_index", "try_number"]
_GIB = float(2**30)


def pool_for_queue(queue: Any, queue_pools: Mapping[str, str] | None = None) -> str:
    """The capacity pool serving ``queue``: the mapping's answer, else the queue name normalised.

    :param queue: the Airflow queue (``None``/empty reads as ``default``).
    :param queue_pools: ``{queue: pool}`` from the pools configuration.
    """
    name = queue if isinstance(queue, str) and queue else "default"
    if queue_pools and name in queue_pools:
        return validate_pool_name(queue_pools[name])
    pool = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-_.")[:63].strip("-_.")
    return validate_pool_name(pool or "default")


def align(ts: Any, interval: timedelta, *, up: bool = False) -> datetime:
    """Floor (or ceil) a timestamp to the bucket grid (buckets start at multiples of ``interval``)."""
    stamp = pd.Timestamp(ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    freq = pd.Timedelta(interval)
    return (stamp.ceil(freq) if up else stamp.floor(freq)).to_pydatetime()


def _hint_values(raw: Any) -> dict[str, float]:
    if not raw or (isinstance(raw, float) and np.isnan(raw)):
        return {}
    try:
        hints = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return {}
    values = {}
    for key, resource, scale in (
        ("cpus", "cpu", 1.0),
        ("ram", "memory", 1 / 1024),
        ("disk", "storage", 1 / 1024),
        ("net_mbps", "network", 1.0),
    ):
        try:
            if hints.get(key) is not None:
                values[resource] = float(hints[key]) * scale
        except (TypeError, ValueError):
            continue
    return values


def _segments(
    runs: pd.DataFrame, samples: pd.DataFrame, now: datetime
) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """Per resource, arrays (pool index, start s, end s, value) of piecewise-constant usage (and slots).

    Tries that never started hold slots only (while they wait); they use no CPU, memory, storage or
    network yet.
    """
    out: dict[str, list] = {r: [] for r in RESOURCES}
    now_s = pd.Timestamp(now).timestamp()
    waiting = runs[runs["start_date"].isna()].reset_index(drop=True)
    runs = runs[runs["start_date"].notna()].reset_index(drop=True)
    out["slots"] = _waiting_slot_segments(waiting, now_s)
    if runs.empty:
        return out
    start_s = runs["start_date"].map(lambda t: t.timestamp()).to_numpy(float)
    end = runs["end_date"].map(lambda t: t.timestamp() if not pd.isna(t) else now_s).to_numpy(float)
    end = np.maximum(end, start_s)
    pool_idx = runs["_pool"].to_numpy(int)
    sampled = np.zeros(len(runs), dtype=bool)

    if not samples.empty:
        keyed = runs.reset_index(drop=True).reset_index().set_index(KEY)["index"]
        samples = samples.join(keyed, on=KEY, how="inner").sort_values(["index", "ts"])
        if not samples.empty:
            idx = samples["index"].to_numpy(int)
            ts = samples["ts"].map(lambda t: t.timestamp()).to_numpy(float)
            first = np.r_[True, idx[1:] != idx[:-1]]
            prev = np.where(first, start_s[idx], np.r_[0.0, ts[:-1]])
            seg_start = np.minimum(prev, ts)
            seg_len = np.maximum(ts - seg_start, 1e-6)
            # Host-wide network bytes: split between the tasks sampled on the host in that instant.
            host = samples["hostname"].fillna("?").to_numpy(str)
            slot = np.floor(ts / 5.0)
            sharing = (
                pd.Series(1, index=pd.MultiIndex.from_arrays([host, slot]))
                .groupby(level=[0, 1])
                .transform("sum")
            )
            values = {
                "cpu": samples["cpu_cores"].to_numpy(float),
                "memory": samples["rss_mb"].to_numpy(float) / 1024,
                "storage": samples.groupby("index")["write_bytes"].cumsum().to_numpy(float) / _GIB,
                "network": samples["net_bytes"].to_numpy(float) * 8 / 1e6 / seg_len / sharing.to_numpy(float),
            }
            for resource, value in values.items():
                value = np.nan_to_num(value, nan=0.0)
                out[resource].append((pool_idx[idx], seg_start, ts, value))
            sampled[np.unique(idx)] = True

    duration = np.maximum(end - start_s, 1e-6)
    hints = [_hint_values(h) for h in runs["hints"]] if "hints" in runs else [{}] * len(runs)
    aggregate = {
        "cpu": runs["cpu_mean"].to_numpy(float),
        "memory": runs["rss_peak_mb"].to_numpy(float) / 1024,
        "storage": runs["write_bytes"].to_numpy(float) / _GIB,
        "network": runs["net_bytes"].to_numpy(float) * 8 / 1e6 / duration,
    }
    hint_arrays = {r: np.array([h.get(r, np.nan) for h in hints], dtype=float) for r in USAGE_RESOURCES}
    rest = ~sampled
    for resource in USAGE_RESOURCES:
        value = np.where(
            ~np.isnan(aggregate[resource]),
            aggregate[resource],
            np.where(~np.isnan(hint_arrays[resource]), hint_arrays[resource], DEFAULTS[resource]),
        )
        out[resource].append((pool_idx[rest], start_s[rest], end[rest], value[rest]))
    out["slots"] = _slot_segments(runs, start_s, end) + out["slots"]
    return out


def try_slots(runs: pd.DataFrame) -> np.ndarray:
    """Slots each try holds: its ``pool_slots``, one where none was recorded."""
    raw = runs["pool_slots"] if "pool_slots" in runs else pd.Series(np.nan, index=runs.index)
    slots = pd.to_numeric(raw, errors="coerce").to_numpy(float)
    return np.where(np.isfinite(slots) & (slots >= 1), slots, 1.0)  # Airflow's default: one slot


def _timestamps(runs: pd.DataFrame, column: str) -> np.ndarray:
    raw = runs[column] if column in runs else pd.Series(pd.NaT, index=runs.index)
    return raw.map(lambda t: t.timestamp() if not pd.isna(t) else np.nan).to_numpy(float)


def wait_ends(runs: pd.DataFrame, now_s: float) -> np.ndarray:
    """Where each try stopped waiting in the queue (epoch s): its start; for a try that never started,
    ``now`` while it is still queued, else its end (it left the queue without starting, e.g. failed by
    ``task_queued_timeout``), else its queued time (not waiting)."""
    started = _timestamps(runs, "start_date")
    ended = _timestamps(runs, "end_date")
    queued = _timestamps(runs, "queued_at")
    # Without a state (a frame built by hand), a try with neither start nor end is still waiting.
    state = runs["state"] if "state" in runs else pd.Series("queued", index=runs.index)
    still_queued = (state == "queued").to_numpy(bool) & np.isnan(ended)
    fallback = np.where(still_queued, now_s, np.where(np.isfinite(ended), ended, queued))
    return np.where(np.isfinite(started), started, fallback)


def _waiting_slot_segments(
    waiting: pd.DataFrame, now_s: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Slots of the tries that never started: their ``pool_slots`` from their queued time until
    :func:`wait_ends` (``now`` for a try still queued)."""
    if waiting.empty:
        return []
    queued = _timestamps(waiting, "queued_at")
    until = wait_ends(waiting, now_s)
    keep = np.isfinite(queued) & np.isfinite(until) & (until > queued)
    return [(waiting["_pool"].to_numpy(int)[keep], queued[keep], until[keep], try_slots(waiting)[keep])]


def _slot_segments(
    runs: pd.DataFrame, start_s: np.ndarray, end_s: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Slots each try holds: its ``pool_slots`` while queued (queued time to start) and while running."""
    slots = try_slots(runs)
    pool_idx = runs["_pool"].to_numpy(int)
    queued = _timestamps(runs, "queued_at")
    waited = np.isfinite(queued) & (queued < start_s)
    return [
        (pool_idx, start_s, end_s, slots),
        (pool_idx[waited], queued[waited], start_s[waited], slots[waited]),
    ]


def _integrate(
    pools: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    value: np.ndarray,
    t0: float,
    width: float,
    n: int,
    n_pools: int,
) -> np.ndarray:
    """Overlap-weighted bucket means of piecewise-constant segments, exactly, for every pool at once.

    The integral up to bucket edge k is a sum of ramps ``v * max(0, k - a)``; each ramp is a slope and
    an intercept added at ``ceil(a)``, so two cumulative sums give every edge.
    """
    result = np.zeros((n_pools, n))
    if len(value) == 0:
        return result
    slope = np.zeros((n_pools, n + 2))
    inter = np.zeros((n_pools, n + 2))
    for a, weight in (((start - t0) / width, value), ((end - t0) / width, -value)):
        idx = np.clip(np.ceil(a), 0, n + 1).astype(int)
        np.add.at(slope, (pools, idx), weight)
        np.add.at(inter, (pools, idx), -weight * a)
    k = np.arange(n + 2)
    edges = np.cumsum(slope, axis=1) * k + np.cumsum(inter, axis=1)
    return np.diff(edges[:, : n + 1], axis=1)


def bucket_peaks(
    pools: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    value: np.ndarray,
    t0: float,
    width: float,
    n: int,
    n_pools: int,
) -> np.ndarray:
    """Per pool and bucket, the highest sum of the segments that hold at any instant of the bucket.

    A sweep over the segments' starts (+value) and ends (-value); only the level after the last event
    of an instant counts, so a task starting as another ends does not count twice. A bucket's peak is
    the level at its start or after any instant inside it.
    """
    result = np.zeros((n_pools, n))
    keep = end > start
    edges = t0 + width * np.arange(n)
    for pool in np.unique(pools[keep]):
        mine = keep & (pools == pool)
        times = np.concatenate([start[mine], end[mine]])
        order = np.argsort(times, kind="stable")
        times = times[order]
        level = np.cumsum(np.concatenate([value[mine], -value[mine]])[order])
        last = np.r_[times[1:] != times[:-1], True]  # the settled level of each instant
        times, level = times[last], np.where(np.abs(level[last]) < 1e-9, 0.0, level[last])
        before = np.searchsorted(times, edges, side="right") - 1
        peak = np.where(before >= 0, level[np.maximum(before, 0)], 0.0)
        bucket = np.floor((times - t0) / width).astype(int)
        inside = (bucket >= 0) & (bucket < n)
        np.maximum.at(peak, bucket[inside], level[inside])
        result[pool] = peak
    return result


def observed_mask(
    buckets: pd.DatetimeIndex, interval: timedelta, coverage: Sequence[tuple[datetime, datetime]] | None
) -> np.ndarray:
    """True where a bucket lies entirely inside the profiler's coverage (``None`` = all observed)."""
    if coverage is None:
        return np.ones(len(buckets), dtype=bool)
    # Compare as nanoseconds: pandas may hold the index in microseconds.
    starts = buckets.as_unit("ns").asi8
    ends = (buckets + pd.Timedelta(interval)).as_unit("ns").asi8
    mask = np.zeros(len(buckets), dtype=bool)
    for s, e in coverage:
        mask |= (starts >= pd.Timestamp(s).as_unit("ns").value) & (
            ends <= pd.Timestamp(e).as_unit("ns").value
        )
    return mask


def _prepare(
    task_runs: pd.DataFrame, queue_pools: Mapping[str, str] | None
) -> tuple[pd.DataFrame, list[str]]:
    # Started tries, and tries waiting in the queue (never started): those hold slots, nothing else.
    queued = task_runs["queued_at"].notna() if "queued_at" in task_runs else False
    runs = task_runs[task_runs["start_date"].notna() | queued].copy()
    for column in ("cpu_mean", "rss_peak_mb", "write_bytes", "net_bytes", "read_bytes"):
        if column not in runs:
            runs[column] = np.nan
    runs["map_index"] = runs["map_index"].fillna(-1).astype(int)
    runs["try_number"] = runs["try_number"].fillna(1).astype(int)
    pools = [pool_for_queue(q, queue_pools) for q in runs["queue"]] if len(runs) else []
    names = sorted(set(pools))
    runs["_pool"] = [names.index(p) for p in pools]
    return runs.reset_index(drop=True), names


def build_demand(
    task_runs: pd.DataFrame,
    usage_samples: pd.DataFrame | None = None,
    *,
    start: datetime,
    end: datetime,
    interval: timedelta = timedelta(minutes=5),
    queue_pools: Mapping[str, str] | None = None,
    coverage: Sequence[tuple[datetime, datetime]] | None = None,
    pools: Sequence[str] | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Build the demand series (long format ``series_id, ts, value``) for ``[start, end)``.

    :param task_runs: ``ProfileStore.task_runs()`` rows.
    :param usage_samples: ``ProfileStore.usage_samples()`` rows (optional).
    :param start: first bucket (floored to the grid).
    :param end: end of the last bucket (ceiled to the grid).
    :param interval: bucket width.
    :param queue_pools: ``{queue: pool}``; other queues map to their normalised name.
    :param coverage: observed intervals; buckets outside them are gaps (NaN). ``None``: all observed.
    :param pools: pools that must appear even without runs (all zeros where observed).
    :param now: where still-running runs end and still-queued tries stop waiting (default: now).
    """
    t0, t1 = align(start, interval), align(end, interval, up=True)
    buckets = pd.date_range(t0, t1, freq=pd.Timedelta(interval), inclusive="left")
    n = len(buckets)
    runs, names = _prepare(task_runs, queue_pools)
    names = sorted(set(names) | {validate_pool_name(p) for p in pools or ()})
    if len(runs):
        # Re-index pools after adding the extra names.
        runs["_pool"] = [names.index(pool_for_queue(q, queue_pools)) for q in runs["queue"]]
    samples = usage_samples if usage_samples is not None else pd.DataFrame()
    if not samples.empty:
        samples = samples.copy()
        samples["map_index"] = samples["map_index"].astype(int)
        samples["try_number"] = samples["try_number"].astype(int)
    segments = _segments(runs, samples, now or datetime.now(UTC)) if len(runs) else {}
    observed = observed_mask(buckets, interval, coverage)
    width = pd.Timedelta(interval).total_seconds()
    frames = []
    for resource in RESOURCES:
        parts = segments.get(resource, [])
        values = np.zeros((len(names), n))
        if resource == "slots" and parts:
            # Peaks of the sum, not a sum of peaks: queued and running tries are swept together.
            merged = (np.concatenate(column) for column in zip(*parts, strict=True))
            values = bucket_peaks(*merged, t0.timestamp(), width, n, len(names))
        for p, s, e, v in parts if resource != "slots" else ():
            values += _integrate(p, s, e, v, t0.timestamp(), width, n, len(names))
        # Cumulative sums leave rounding dust (1e-13) where demand is zero: make it zero.
        values = np.where(np.abs(values) < 1e-9, 0.0, values)
        values[:, ~observed] = np.nan
        for i, pool in enumerate(names):
            frames.append(
                pd.DataFrame({"series_id": series_id(pool, resource), "ts": buckets, "value": values[i]})
            )
    if not frames:
        return pd.DataFrame(
            {
                "series_id": pd.Series(dtype=str),
                "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                "value": pd.Series(dtype=float),
            }
        )
    return pd.concat(frames, ignore_index=True)


def build_queue_pressure(
    task_runs: pd.DataFrame,
    *,
    start: datetime,
    end: datetime,
    interval: timedelta = timedelta(minutes=5),
    queue_pools: Mapping[str, str] | None = None,
    coverage: Sequence[tuple[datetime, datetime]] | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Queue pressure per pool and bucket: ``pool, ts, queued_tasks, started, wait_mean_s, wait_max_s``.

    ``queued_tasks`` is the time-averaged number of tries waiting (queued, not started) in the bucket;
    the waits are those of the tries that started in it. Sustained waits mean the pool is too small.

    :param task_runs: ``ProfileStore.task_runs()`` rows (``queued_at`` and ``start_date`` used).
    :param start: first bucket.
    :param end: end of the last bucket.
    :param interval: bucket width.
    :param queue_pools: ``{queue: pool}``.
    :param coverage: observed intervals (gaps are NaN).
    :param now: where still-queued tries stop counting.
    """
    t0, t1 = align(start, interval), align(end, interval, up=True)
    buckets = pd.date_range(t0, t1, freq=pd.Timedelta(interval), inclusive="left")
    n = len(buckets)
    width = pd.Timedelta(interval).total_seconds()
    runs = (
        task_runs[task_runs["queued_at"].notna()].copy() if "queued_at" in task_runs else task_runs.iloc[0:0]
    )
    pools = [pool_for_queue(q, queue_pools) for q in runs["queue"]] if len(runs) else []
    names = sorted(set(pools))
    observed = observed_mask(buckets, interval, coverage)
    frames = []
    now_s = pd.Timestamp(now or datetime.now(UTC)).timestamp()
    for _i, pool in enumerate(names):
        mine = runs[[p == pool for p in pools]]
        queued = mine["queued_at"].map(lambda t: t.timestamp()).to_numpy(float)
        started = np.maximum(wait_ends(mine, now_s), queued)
        waiting = _integrate(
            np.zeros(len(queued), dtype=int),
            queued,
            started,
            np.ones(len(queued)),
            t0.timestamp(),
            width,
            n,
            1,
        )[0]
        has_start = mine["start_date"].notna().to_numpy()
        b = np.floor((started[has_start] - t0.timestamp()) / width).astype(int)
        wait = (started - queued)[has_start]
        inside = (b >= 0) & (b < n)
        frame = (
            pd.DataFrame({"b": b[inside], "wait": wait[inside]})
            .groupby("b")["wait"]
            .agg(["count", "mean", "max"])
        )
        frame = frame.reindex(range(n))
        out = pd.DataFrame(
            {
                "pool": pool,
                "ts": buckets,
                "queued_tasks": waiting,
                "started": frame["count"].fillna(0).to_numpy(float),
                "wait_mean_s": frame["mean"].to_numpy(float),
                "wait_max_s": frame["max"].to_numpy(float),
            }
        )
        out.loc[~observed, ["queued_tasks", "started", "wait_mean_s", "wait_max_s"]] = np.nan
        frames.append(out)
    if not frames:
        return pd.DataFrame(columns=["pool", "ts", "queued_tasks", "started", "wait_mean_s", "wait_max_s"])
    return pd.concat(frames, ignore_index=True)

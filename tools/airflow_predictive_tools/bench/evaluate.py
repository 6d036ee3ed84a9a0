"""``airflow-predictive bench evaluate``: one feedback cycle's time in the steady state of a deployment.

A throw-away PostgreSQL profile store is seeded with ``series`` demand series (3 days, 5-minute buckets)
and the forecasts a 5-minute control loop would have stored over the last ``hours`` (one issue per
cycle, 288 steps and 5 quantiles each). Each repeat copies that database and times the first feedback
cycle (a day of targets to score) and the next one (the steady state: one new bucket to score, the
recalibration window to re-read). The result also counts what was seeded and what each cycle scored.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

RESOURCES = ("cpu", "memory", "storage", "network")
QUANTILE_OFFSETS = {0.5: 0.0, 0.8: 0.84, 0.9: 1.28, 0.95: 1.64, 0.99: 2.33}
STEPS = 288  # forecast steps per issue: a day of 5-minute buckets
INTERVAL = timedelta(minutes=5)


def _seed(store: Any, series: int, hours: int, now: datetime) -> dict[str, int]:
    ids = [f"pool=bench-{i // 4:04d}/resource={RESOURCES[i % 4]}" for i in range(series)]
    rng = np.random.default_rng(0)
    ts = pd.date_range(now - timedelta(days=3), now + timedelta(minutes=10), freq="5min", inclusive="left")
    cycle = 5 + 3 * np.sin(np.arange(len(ts)) * 2 * np.pi / 288)
    demand_rows = store.write_demand(
        pd.concat(
            pd.DataFrame({"series_id": sid, "ts": ts, "value": cycle + rng.normal(0, 1, len(ts))})
            for sid in ids
        )
    )
    mean = np.tile(5 + 3 * np.sin(np.arange(STEPS) * 2 * np.pi / STEPS), series)
    rows = issues = 0
    for issued in pd.date_range(now - timedelta(hours=hours), now, freq="5min", inclusive="left"):
        issues += 1
        frame = pd.DataFrame(
            {
                "series_id": np.repeat(ids, STEPS),
                "ts": np.tile(
                    pd.date_range(issued + timedelta(minutes=5), periods=STEPS, freq="5min"), series
                ),
                "mean": mean,
                "model": "bench",
                "fallback": "",
                "issued_at": issued,
            }
        )
        for level, offset in QUANTILE_OFFSETS.items():
            frame[f"q{level:g}"] = mean + offset
        rows += store.write_forecasts(frame)
    return {"demand_rows": demand_rows, "forecast_issues": issues, "forecast_rows": rows}


def _scored(result: Any) -> dict[str, int]:
    """What one feedback cycle scored: the window's buckets, the series and forecast rows scored.

    The timings mean nothing unless each cycle scored what it should, so the counts are reported too.
    """
    from airflow_predictive.feedback.evaluation import ALL_HORIZONS

    frame = result.evaluations
    counts = frame[(frame["metric"] == "n") & (frame["horizon_minutes"] == ALL_HORIZONS)]
    return {
        "window_buckets": int((result.window_end - result.window_start) / INTERVAL),
        "scored_series": int(counts["series_id"].nunique()),
        "scored_forecast_rows": int(counts["value"].sum()),
    }


def run(*, series: int, hours: int, repeats: int, postgres_url: str, log: Any = None) -> dict[str, Any]:
    """Seed once, then time ``repeats`` first and steady feedback cycles on copies; JSON-able result.

    :param series: demand series in the store.
    :param hours: hours of 5-minute forecast issues stored.
    :param repeats: cycles per measurement; medians are reported.
    :param postgres_url: PostgreSQL superuser URL (throw-away databases are created and dropped).
    :param log: ``print``-like progress callback.
    """
    from airflow_predictive.runtime.feedback_cycle import run_feedback_cycle
    from airflow_predictive.store import ProfileStore
    from airflow_predictive_tools.bench.scaleout import throwaway_database

    say = log or (lambda *_: None)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    first, steady = [], []
    scored: dict[str, dict[str, int]] = {}
    with throwaway_database(postgres_url, "predictive_bench_eval") as seeded_url:
        store = ProfileStore(seeded_url)
        started = time.perf_counter()
        seeded = _seed(store, series, hours, now)
        seed_seconds = round(time.perf_counter() - started, 1)
        store.dispose()
        say(f"seeded {series} series and {seeded['forecast_rows']} forecast rows in {seed_seconds} s")
        template = seeded_url.rsplit("/", 1)[1]
        for repeat in range(repeats):
            with throwaway_database(postgres_url, "predictive_bench_eval_run", template=template) as url:
                store = ProfileStore(url)
                try:
                    for name, times, at in (("first", first, now), ("steady", steady, now + INTERVAL)):
                        started = time.perf_counter()
                        result = run_feedback_cycle(store, now=at, emit_metrics=False)
                        times.append(time.perf_counter() - started)
                        # Each repeat runs on a copy of the same seed, so every repeat scores the same.
                        scored[name] = _scored(result)
                finally:
                    store.dispose()
            say(f"repeat {repeat + 1}: first {first[-1]:.2f} s, steady {steady[-1]:.2f} s")
    return {
        "benchmark": "evaluate",
        "series": series,
        "forecast_hours": hours,
        "forecast_steps": STEPS,
        **seeded,
        "seed_seconds": seed_seconds,
        "first_cycle": scored["first"],
        "steady_cycle": scored["steady"],
        "repeats": repeats,
        "first_cycle_seconds": round(statistics.median(first), 2),
        "steady_cycle_seconds": round(statistics.median(steady), 2),
        "first_cycle_seconds_all": [round(v, 2) for v in first],
        "steady_cycle_seconds_all": [round(v, 2) for v in steady],
        "steady_seconds_per_series": round(statistics.median(steady) / series, 4),
    }

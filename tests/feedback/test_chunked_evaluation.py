"""Evaluating the series chunk by chunk, then closing the cycle, does what one whole cycle does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from airflow_predictive.feedback import evaluation
from airflow_predictive.runtime.feedback_cycle import (
    WATERMARK,
    FeedbackPolicy,
    close_feedback_cycle,
    evaluate_series,
    run_feedback_cycle,
)
from airflow_predictive.store import ProfileStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SERIES = [f"pool={pool}/resource={resource}" for pool in ("etl", "ml") for resource in ("cpu", "memory")]
# Per series: forecast bias and interval half-width. The ml series' intervals are far too narrow
# (widened), ml memory's forecasts are far off too (flagged for re-selection).
ERRORS = {SERIES[0]: (0.1, 2.0), SERIES[1]: (-0.2, 2.0), SERIES[2]: (0.0, 0.2), SERIES[3]: (6.0, 0.2)}
POLICY = FeedbackPolicy(min_samples=20, retention=timedelta(hours=72))


def _seed(store: ProfileStore) -> None:
    rng = np.random.default_rng(11)
    ts = pd.date_range(NOW - timedelta(days=3), NOW + timedelta(minutes=5), freq="5min", inclusive="left")
    phase = 2 * np.pi * (ts - ts[0]).total_seconds() / 86400
    demand = pd.concat(
        pd.DataFrame(
            {"series_id": sid, "ts": ts, "value": 10 + 3 * np.sin(phase) + rng.normal(0, 1, len(ts))}
        )
        for sid in SERIES
    )
    store.write_demand(demand)
    actual = demand.set_index(["series_id", "ts"])["value"]
    for issued in pd.date_range(NOW - timedelta(hours=13), NOW, freq="30min", inclusive="left"):
        targets = pd.date_range(issued + timedelta(minutes=5), periods=24, freq="5min")
        targets = targets[targets < NOW]
        frames = []
        for sid, (bias, width) in ERRORS.items():
            mean = actual.loc[sid].reindex(targets).to_numpy() + bias
            frames.append(
                pd.DataFrame(
                    {"series_id": sid, "ts": targets, "mean": mean, "q0.5": mean, "q0.95": mean + width}
                ).assign(model="auto_arima", fallback="", issued_at=issued)
            )
        store.write_forecasts(pd.concat(frames))
    state = {"calibration": {"offsets": [[0.0, 1.0], [0.0, 1.2]]}}
    store.save_model_states(
        [
            {"series_id": sid, "model": "auto_arima", "state": state, "fitted_at": NOW - timedelta(days=2)}
            for sid in SERIES
        ]
    )
    store.record_capacity(
        [
            {"pool": pool, "resource": "cpu", "ts": NOW - timedelta(hours=20), "value": 12.0}
            for pool in ("etl", "ml")
        ]
    )


def _outcome(store: ProfileStore) -> tuple[pd.DataFrame, dict, str | None]:
    scores = store.evaluations(SERIES).sort_values(
        ["series_id", "horizon_minutes", "metric"], ignore_index=True
    )
    states = {sid: (row["state"], row["needs_reselect"]) for sid, row in store.model_states(SERIES).items()}
    return scores, states, store.get_watermark(WATERMARK)


def test_chunks_then_close_store_the_same_scores_and_decisions_as_one_cycle(tmp_path) -> None:
    whole, chunked = ProfileStore.sqlite(tmp_path / "whole.db"), ProfileStore.sqlite(tmp_path / "chunked.db")
    _seed(whole)
    _seed(chunked)

    one = run_feedback_cycle(whole, now=NOW, policy=POLICY, emit_metrics=False)
    # The second chunk holds one series of the first chunk's pool: chunks need not follow pools.
    first = evaluate_series(chunked, SERIES[:3], now=NOW, policy=POLICY, emit_metrics=False)
    assert chunked.get_watermark(WATERMARK) is None  # a chunk leaves the window open for the others
    second = evaluate_series(chunked, SERIES[3:], now=NOW, policy=POLICY, emit_metrics=False)
    closed = close_feedback_cycle(chunked, now=NOW, policy=POLICY, emit_metrics=False)

    assert set(first.evaluations["series_id"]) == set(SERIES[:3])
    assert set(second.evaluations["series_id"]) == {SERIES[3]}
    decisions = {d.series_id: (d.factor, d.reselect) for d in [*first.decisions, *second.decisions]}
    assert decisions == {d.series_id: (d.factor, d.reselect) for d in one.decisions}
    assert one.reselected == [SERIES[3]] and SERIES[2] in one.recalibrated  # the test exercises both
    scores, states, watermark = _outcome(chunked)
    expected_scores, expected_states, expected_watermark = _outcome(whole)
    pd.testing.assert_frame_equal(scores, expected_scores)
    assert evaluation.UNMET_DEMAND in set(scores["metric"])  # capacity was scored per chunk too
    assert states == expected_states and watermark == expected_watermark == NOW.isoformat()
    assert closed.pruned_forecasts == one.pruned_forecasts
    whole.dispose()
    chunked.dispose()

"""One emitter, one convention: a fixed name with tags, plus the legacy name while legacy names are on."""

from __future__ import annotations

import pytest

from airflow_predictive.runtime import metrics


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object, dict | None]] = []

    def __getattr__(self, method: str):
        def send(name, value, tags=None):
            self.calls.append((method, name, value, tags))

        return send


@pytest.mark.parametrize("legacy", [True, False])
def test_both_cycles_send_tagged_names_and_legacy_segments(monkeypatch, legacy) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(metrics, "_stats", lambda: (recorder, legacy))
    sent = metrics.emit_cycle(
        forecasts=[{"pool": "etl.w", "resource": "cpu", "mean": 3.0, "upper": float("nan")}],
        capacity=[],
        scores=[],
        action_counts={("etl.w", "applied"): 1, ("etl.w", "failed"): 0},
        fit_seconds=[0.5],
    )
    sent += metrics.emit_allocation("etl.w", {metrics.ACTIONS_SKIPPED: 2, metrics.PLAN_CAPPED: 0})
    sent.append(metrics.incr(metrics.ALERTS, 1, kind="action_failed"))
    assert sent == [
        f"{metrics.FORECAST_MEAN}.etl_w.cpu",
        f"{metrics.ACTIONS_APPLIED}.etl_w",
        f"{metrics.ACTIONS_FAILED}.etl_w",
        metrics.FIT_TIME,
        metrics.RECALIBRATIONS,
        metrics.RESELECTIONS,
        f"{metrics.ACTIONS_SKIPPED}.etl_w",
        f"{metrics.ALERTS}.action_failed",
    ]
    tagged = {(m, n): tags for m, n, _, tags in recorder.calls}
    assert tagged[("gauge", metrics.FORECAST_MEAN)] == {"pool": "etl.w", "resource": "cpu"}
    assert tagged[("incr", metrics.ACTIONS_APPLIED)] == {"pool": "etl.w"}
    assert tagged[("incr", metrics.ACTIONS_SKIPPED)] == {"pool": "etl.w"}
    assert tagged[("incr", metrics.ALERTS)] == {"kind": "action_failed"}
    assert tagged[("incr", metrics.RECALIBRATIONS)] is None
    untagged = [n for _, n, _, tags in recorder.calls if tags is None]
    untagged_metrics = [metrics.FIT_TIME, metrics.RECALIBRATIONS, metrics.RESELECTIONS]
    segments = [s for s in sent if s not in untagged_metrics]
    assert untagged == (segments[:3] if legacy else []) + untagged_metrics + (segments[3:] if legacy else [])
    assert all(n != metrics.PLAN_CAPPED for _, n, _, _ in recorder.calls)  # zero counts are not sent


def test_unknown_tags_are_refused() -> None:
    with pytest.raises(TypeError):
        metrics.legacy_name(metrics.MASE, series="x")

"""Scores, decisions, alerts through a real BaseNotifier, the report file and the CLI, on a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from airflow.sdk import BaseNotifier

from airflow_predictive.feedback import alerts, evaluation
from airflow_predictive.feedback.recalibration import conformal_factor, decide
from airflow_predictive.feedback.report import write_report
from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy, run_feedback_cycle
from tests.ui.seed import MEANS, NOW, POOL, SERIES, seed


class FileNotifier(BaseNotifier):
    """Appends the rendered alert title to a file (a real notifier; SMTP/Slack need a network)."""

    template_fields = ("title",)

    def __init__(self, path, title: str = "{{ predictive_alert.title }}") -> None:
        super().__init__()
        self.path = path
        self.title = title

    def notify(self, context) -> None:
        with open(self.path, "a") as handle:
            handle.write(f"{context['predictive_alert']['kind']}|{self.title}\n")


def _forecast(values, issued_at, *, spread: float) -> pd.DataFrame:
    ts = pd.date_range(issued_at + timedelta(minutes=5), periods=len(values), freq="5min")
    frame = pd.DataFrame({"series_id": SERIES, "ts": ts, "mean": values, "model": "m", "fallback": ""})
    frame["issued_at"] = issued_at
    for level in (0.5, 0.9, 0.95):
        frame[f"q{level:g}"] = frame["mean"] + spread * {0.5: 0.0, 0.9: 1.2816, 0.95: 1.6449}[level]
    return frame


def test_scores_match_hand_computation() -> None:
    actual = np.array([10.0, 12.0, 9.0, 11.0])
    forecasts = _forecast([10.0, 10.0, 10.0, 10.0], NOW, spread=1.0)
    demand = pd.DataFrame({"series_id": SERIES, "ts": forecasts["ts"], "value": actual})
    history = pd.DataFrame({"series_id": SERIES, "ts": range(5), "value": [1.0, 2.0, 1.0, 2.0, 1.0]})
    out = evaluation.score_forecasts(forecasts, demand, window_end=NOW, history=history)
    all_h = out[out["horizon_minutes"] == evaluation.ALL_HORIZONS].set_index("metric")["value"]
    assert all_h[evaluation.MASE] == pytest.approx(np.mean(np.abs(actual - 10)) / 1.0)
    assert all_h[evaluation.coverage_metric(0.95)] == pytest.approx(0.75)  # 10, 9, 11 <= 11.64; 12 is not
    diff = actual - 11.6449
    assert all_h[evaluation.pinball_metric(0.95)] == pytest.approx(
        np.mean(np.maximum(0.95 * diff, -0.05 * diff))
    )
    assert set(out["horizon_minutes"]) == {0, 15, 60}


def test_conformal_factor_restores_coverage_on_fresh_errors() -> None:
    rng = np.random.default_rng(1)
    errors = rng.standard_normal(4000) * 2.0  # noise doubled; intervals still sized for sd 1
    factor = conformal_factor(errors[:2000] / 1.6449, 0.95)
    assert factor == pytest.approx(2.0, rel=0.1)
    assert np.mean(errors[2000:] <= 1.6449 * factor) == pytest.approx(0.95, abs=0.015)


def test_decide_widens_and_flags() -> None:
    rng = np.random.default_rng(2)
    forecasts = _forecast(np.full(200, 10.0), NOW, spread=1.0)
    forecasts["actual"] = 10 + 2 * rng.standard_normal(200)
    forecasts["lead_minutes"] = 5.0
    ev = pd.DataFrame([(SERIES, NOW, 0, evaluation.MASE, 1.7)], columns=evaluation.EVALUATION_COLUMNS)
    (d,) = decide(forecasts, ev, level=0.95, mase_threshold=1.5)
    assert d.coverage < 0.85 and d.factor > 1.5 and d.reselect
    with pytest.raises(ValueError, match="q0.8"):
        decide(forecasts, ev, level=0.8)


def test_cycle_stores_scores_alerts_and_flags(store, tmp_path) -> None:
    seed(store, NOW)
    store.save_model_states(
        [
            {
                "series_id": SERIES,
                "model": "auto_arima",
                "state": {"kind": "arima"},
                "fitted_at": NOW - timedelta(days=1),
            }
        ]
    )
    # What happened: demand far above the seeded forecast (degraded) for the next 2 hours.
    ts = pd.date_range(NOW, periods=24, freq="5min")
    store.write_demand(pd.DataFrame({"series_id": SERIES, "ts": ts, "value": np.array(MEANS) + 9}))
    sent = tmp_path / "alerts.txt"
    result = run_feedback_cycle(
        store,
        now=NOW + timedelta(hours=2, minutes=5),
        notifiers={"forecast_degraded": FileNotifier(sent), "action_failed": [FileNotifier(sent)]},
        emit_metrics=False,
        # 3 scored rows (targets on the 30-minute grid): the evidence this test asks an alert of
        policy=FeedbackPolicy(min_samples=3),
    )
    assert result.reselected == [SERIES]
    assert store.model_states([SERIES])[SERIES]["needs_reselect"] is True
    stored = store.evaluations([SERIES])
    assert {evaluation.MASE, evaluation.UNMET_DEMAND, evaluation.coverage_metric(0.95)} <= set(
        stored["metric"]
    )
    assert evaluation.value_of(stored, SERIES, evaluation.coverage_metric(0.95)) == 0.0
    lines = sent.read_text().splitlines()
    assert "forecast_degraded|Forecast degraded on 1 series" in lines
    assert "action_failed|1 capacity action(s) failed" in lines
    summary = result.summary()
    assert json.dumps(summary) and summary["reselect"] == [SERIES]
    # A second cycle scores nothing twice (watermark).
    again = run_feedback_cycle(store, now=NOW + timedelta(hours=2, minutes=5), emit_metrics=False)
    assert again.evaluations.empty or not (again.evaluations["metric"] == "n").any()


def test_consecutive_cycles_score_every_ended_bucket_exactly_once(store) -> None:
    issued = NOW - timedelta(hours=1)
    store.write_forecasts(_forecast([5.0] * 24, issued, spread=1.0))  # targets issued + 5 min .. + 2 h
    ts = pd.date_range(issued, NOW + timedelta(minutes=30), freq="5min", inclusive="left")
    store.write_demand(pd.DataFrame({"series_id": SERIES, "ts": ts, "value": 5.0}))
    scored = []
    for k in range(4):
        result = run_feedback_cycle(
            store,
            now=NOW + timedelta(minutes=5 * k),
            emit_metrics=False,
            policy=FeedbackPolicy(recalibrate=False),
        )
        frame = result.evaluations
        n = frame[(frame["metric"] == "n") & (frame["horizon_minutes"] == evaluation.ALL_HORIZONS)]
        scored.append(int(n["value"].sum()))
    # The first cycle scores the 11 targets that ended before NOW (the bucket at NOW is still filling);
    # each later cycle, 5 minutes on, scores the one bucket that ended since, starting with NOW's.
    assert scored == [11, 1, 1, 1]


def test_cycle_prunes_forecasts_older_than_the_retention_and_keeps_what_it_scores(store) -> None:
    seed(store, NOW)
    store.write_forecasts(_forecast([1.0, 2.0], NOW - timedelta(hours=80), spread=0.5))
    store.write_forecasts(_forecast([1.0, 2.0], NOW - timedelta(hours=40), spread=0.5))
    kept_before = store.forecasts([SERIES])
    recent = kept_before[kept_before["issued_at"] > pd.Timestamp(NOW - timedelta(hours=72))]

    dry = run_feedback_cycle(store, now=NOW, emit_metrics=False)
    assert dry.pruned_forecasts == 0 and len(store.forecasts([SERIES])) == len(kept_before)

    result = run_feedback_cycle(
        store, now=NOW, emit_metrics=False, policy=FeedbackPolicy(retention=timedelta(hours=72))
    )
    # One issue (the 80-hour-old one) went.
    assert result.pruned_forecasts == 1 and result.summary()["pruned_forecasts"] == 1
    left = store.forecasts([SERIES])
    assert len(left) == len(recent) and left["issued_at"].min() >= pd.Timestamp(NOW - timedelta(hours=72))
    with pytest.raises(ValueError, match="retention must be positive"):
        FeedbackPolicy(retention=timedelta(0))


def test_bad_notifier_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown alert kind 'forecast_bad'"):
        alerts.validate_notifiers({"forecast_bad": FileNotifier("x")})


def test_report_file_is_self_contained(store, tmp_path) -> None:
    seed(store, NOW)
    path = write_report(store, tmp_path / "out" / "report.html", now=NOW)
    html = path.read_text()
    assert "<script src=" not in html and "https://" not in html.split("</script>", 1)[1][:0] + ""
    assert "Plotly.newPlot" in html and 'data-series="' + SERIES + '"' in html
    assert "q0.95 of next 30 min exceeds capacity by 3.2 vCPU" in html
    assert f"Pool {POOL}" in html


def test_cli_report(store, tmp_path) -> None:
    seed(store, NOW)
    target = tmp_path / "cli.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_predictive.cli",
            "report",
            "--store",
            str(store.url.database),
            "-o",
            str(target),
            "--now",
            NOW.isoformat(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target) and target.stat().st_size > 1_000_000
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_predictive.cli",
            "report",
            "--store",
            str(store.url.database),
            "--now",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--now: 'x' is not an ISO 8601 timestamp" in bad.stderr


def test_one_burst_in_a_steady_cycle_does_not_flag_a_model_that_forecast_the_hours_before(store) -> None:
    """A steady cycle scores one bucket: re-selection is judged on the MASE pooled over the
    recalibration window, not on that bucket alone (which a single burst puts far above 1)."""
    start = NOW - timedelta(days=3)
    ts = pd.date_range(start, NOW + timedelta(hours=2), freq="5min", inclusive="left")
    phase = 2 * np.pi * (ts - start).total_seconds() / 86400
    noise = np.random.default_rng(5).normal(0, 0.5, len(ts))  # yesterday's value misses by ~0.5
    value = 10 + 3 * np.sin(phase) + noise
    burst_at = NOW + timedelta(minutes=30)
    demand = pd.DataFrame({"series_id": SERIES, "ts": ts, "value": value})
    demand.loc[demand["ts"] == burst_at, "value"] = 25.0  # twice the level, for five minutes
    store.write_demand(demand)
    # One issue an hour, each forecasting its next 12 buckets within 0.2 of what happened (not the burst).
    for issued in pd.date_range(NOW - timedelta(hours=12), NOW + timedelta(hours=1), freq="1h"):
        steps = demand[(demand["ts"] > issued) & (demand["ts"] <= issued + timedelta(hours=1))]
        expected = np.where(steps["ts"] == burst_at, 10.0, steps["value"]) + 0.2
        store.write_forecasts(_forecast(expected, issued.to_pydatetime(), spread=1.0))

    policy = FeedbackPolicy(recalibrate=False)
    run_feedback_cycle(store, now=NOW, emit_metrics=False, policy=policy)  # the hours before: scored
    flagged, burst_mase = [], None
    for k in range(1, 13):
        result = run_feedback_cycle(
            store, now=NOW + timedelta(minutes=5 * k), emit_metrics=False, policy=policy
        )
        flagged += result.reselected
        if result.window_start == burst_at:
            burst_mase = evaluation.value_of(result.evaluations, SERIES, evaluation.MASE)
    assert burst_mase is not None and burst_mase > 1.0  # that bucket alone would condemn the model
    assert flagged == []


def test_no_forecast_degraded_alert_before_enough_scored_points() -> None:
    # Issue #20: two scored points, one miss each, read as "coverage 0.00" and raised an alert.
    from airflow_predictive.feedback.recalibration import Decision

    early = Decision(SERIES, level=0.95, coverage=0.0, n=2, mase=3.0, reselect=True)
    assert alerts.alerts_for([early], [], []) == []
    assert alerts.MIN_ALERT_POINTS == 30
    enough = Decision(SERIES, level=0.95, coverage=0.5, n=alerts.MIN_ALERT_POINTS)
    (alert,) = alerts.alerts_for([early, enough], [], [])
    assert alert.kind == alerts.FORECAST_DEGRADED and "coverage 0.50" in alert.message
    assert [s["n"] for s in alert.details["series"]] == [alerts.MIN_ALERT_POINTS]

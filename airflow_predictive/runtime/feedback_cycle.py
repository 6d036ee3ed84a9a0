"""One feedback cycle on the ProfileStore: score, recalibrate, flag re-selection, alert, emit metrics.

:func:`run_feedback_cycle` is what the control loop's ``evaluate`` task (ForecastEvaluationOperator)
runs, and what the demo and tests run directly. It scores the forecasts whose target buckets were
observed since the last cycle (a watermark in the store), scores provisioned capacity against demand,
stores both, then recalibrates each series from the errors of the forecasts issued since its last
correction (:mod:`airflow_predictive.feedback.recalibration`) through the forecaster's own stored
calibration, and flags degraded series for model re-selection in the next cycle.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from airflow_predictive import accuracy
from airflow_predictive.contracts.demand import parse_series_id
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.contracts.stores import (
    FeedbackMetricsSource,
    FeedbackStore,
    ModelStateReader,
    ModelStateStore,
    Watermarks,
)
from airflow_predictive.feedback import alerts as alerts_mod
from airflow_predictive.feedback import evaluation, service_level
from airflow_predictive.feedback.recalibration import Decision, decide
from airflow_predictive.profiling.queue_wait import queue_waits
from airflow_predictive.runtime import metrics
from airflow_predictive.runtime.service_level_choice import choose_for_pools
from airflow_predictive.simulation.choice import Choice

log = logging.getLogger(__name__)

WATERMARK = "feedback:evaluated_until"
# Key in a model state's calibration dict: when the feedback loop last corrected it, and the product
# of its corrections since the forecaster last calibrated (for the UI and the logs).
FEEDBACK_AT = "feedback_at"
FEEDBACK_FACTOR = "feedback_factor"


@dataclass
class FeedbackResult:
    """What one feedback cycle did.

    :param window_start: start of the scored window (inclusive: the bucket the last cycle left unscored).
    :param window_end: end of the scored window (exclusive: that bucket is still filling).
    :param evaluations: the scores stored this cycle (evaluations layout).
    :param decisions: per-series recalibration decisions.
    :param alerts: alerts raised this cycle.
    :param metrics_sent: metric names emitted.
    """

    window_start: datetime
    window_end: datetime
    evaluations: pd.DataFrame
    decisions: list[Decision] = field(default_factory=list)
    alerts: list[alerts_mod.Alert] = field(default_factory=list)
    metrics_sent: list[str] = field(default_factory=list)
    notifications: int = 0
    pruned_forecasts: int = 0
    choices: dict[str, Choice] = field(default_factory=dict)

    def followed_by(self, closed: FeedbackResult) -> FeedbackResult:
        """This evaluation of the series with what closing the cycle did (pool alerts, pruning, metrics)."""
        both = [f for f in (self.evaluations, closed.evaluations) if not f.empty]
        return FeedbackResult(
            self.window_start,
            self.window_end,
            pd.concat(both, ignore_index=True) if both else self.evaluations,
            self.decisions,
            [*self.alerts, *closed.alerts],
            [*self.metrics_sent, *closed.metrics_sent],
            self.notifications + closed.notifications,
            closed.pruned_forecasts,
            closed.choices,
        )

    @property
    def recalibrated(self) -> list[str]:
        return [d.series_id for d in self.decisions if d.factor != 1.0]

    @property
    def reselected(self) -> list[str]:
        return [d.series_id for d in self.decisions if d.reselect]

    def summary(self) -> dict[str, Any]:
        """A small JSON summary (the evaluate task's XCom)."""
        coverage = {d.series_id: round(d.coverage, 4) for d in self.decisions if math.isfinite(d.coverage)}
        return {
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "scores": len(self.evaluations),
            "coverage": coverage,
            "recalibrated": {d.series_id: round(d.factor, 4) for d in self.decisions if d.factor != 1.0},
            "reselect": self.reselected,
            "alerts": [a.kind for a in self.alerts],
            "metrics": len(self.metrics_sent),
            "pruned_forecasts": self.pruned_forecasts,
            "service_level_choices": {pool: c.candidate for pool, c in self.choices.items()},
        }

    def table(self) -> str:
        """A compact text table for the task log: series, n, coverage/target, MASE, factor, re-select."""
        header = f"{'series':<44} {'n':>6} {'coverage':>9} {'target':>6} {'MASE':>7} {'factor':>7} reselect"
        lines = [header, "-" * len(header)]
        for d in self.decisions:
            mase = f"{d.mase:7.3f}" if math.isfinite(d.mase) else "      -"
            lines.append(
                f"{d.series_id:<44} {d.n:>6} {d.coverage:>9.3f} {d.level:>6.2f} {mase} {d.factor:>7.3f} "
                f"{'yes' if d.reselect else 'no'}"
            )
        return "\n".join(lines)


def apply_corrections(store: ModelStateStore, decisions: Sequence[Decision], *, now: datetime) -> list[str]:
    """Apply width corrections to the forecaster's stored calibration; flag re-selections.

    The forecaster (``AutoArima.predict``) adds ``calibration["offsets"]`` (per horizon knot and
    quantile level, in scaled units) to its point forecast, and at leads up to an hour the conditional
    ``calibration["tails"]`` times the recorded ``feedback_factor``; scaling those offsets by the factor
    widens or narrows every quantile around the point forecast, which is the correction
    :func:`~airflow_predictive.feedback.recalibration.decide` computed. The forecaster re-learns the
    offsets from its window at its next refit; the loop then measures again.

    :param store: the ProfileStore.
    :param decisions: this cycle's decisions.
    :param now: when the correction is made (stored as ``calibration.feedback_at``).
    :returns: series whose stored calibration changed.
    """
    changing = {d.series_id: d for d in decisions if d.factor != 1.0}
    changed: list[str] = []
    if changing:
        rows = store.model_states(list(changing))
        updates = []
        for sid, row in rows.items():
            state = dict(row["state"])
            calibration = dict(state.get("calibration") or {})
            offsets = calibration.get("offsets")
            if not offsets:
                continue  # a fallback or uncalibrated state: nothing to widen (re-selection handles it)
            factor = changing[sid].factor
            calibration["offsets"] = (np.asarray(offsets, dtype=float) * factor).tolist()
            calibration[FEEDBACK_FACTOR] = float(calibration.get(FEEDBACK_FACTOR, 1.0)) * factor
            calibration[FEEDBACK_AT] = now.isoformat()
            state["calibration"] = calibration
            updates.append(
                {
                    "series_id": sid,
                    "model": row["model"],
                    "state": state,
                    "fitted_at": row["fitted_at"] or now,
                    "needs_reselect": row["needs_reselect"],
                }
            )
            changed.append(sid)
        if updates:
            store.save_model_states(updates)
    reselect = [d.series_id for d in decisions if d.reselect]
    if reselect:
        store.mark_reselect(reselect)
    return changed


def _corrected_since(store: ModelStateReader, series: Sequence[str]) -> dict[str, datetime]:
    """Per series, the newest moment its forecasts' calibration changed (forecaster refit or feedback)."""
    out = {}
    for sid, row in store.model_states(list(series)).items():
        calibration = (row["state"] or {}).get("calibration") or {}
        moments = [row["fitted_at"]]
        # fitted_at is the cycle time of the last selection/refit (the forecaster re-learns its
        # calibration then); FEEDBACK_AT the time of this loop's last correction.
        if calibration.get(FEEDBACK_AT):
            moments.append(datetime.fromisoformat(calibration[FEEDBACK_AT]))
        moments = [m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments if m is not None]
        if moments:
            out[sid] = max(moments)
    return out


def target_grid(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """The bucket timestamps in ``[start, end)`` that are whole multiples of ``step`` (since the epoch).

    :param start: first moment of the window.
    :param end: end of the window (excluded).
    :param step: grid spacing, a multiple of the bucket width.
    """
    first = pd.Timestamp(start).ceil(f"{int(step.total_seconds())}s")
    return [t.to_pydatetime() for t in pd.date_range(first, pd.Timestamp(end), freq=step, inclusive="left")]


@dataclass(frozen=True)
class FeedbackPolicy:
    """How the feedback loop judges and corrects the forecasts: its windows, thresholds and retention.

    :param interval: bucket width of the demand series.
    :param max_window: score at most this far back (first cycle, or after an outage).
    :param recalibration_window: target buckets whose forecasts feed the width correction.
    :param recalibration_grid: of those, only the buckets on this grid (None: every bucket).
    :param tolerance: coverage drift tolerated before the width changes.
    :param mase_threshold: MASE above which a series is flagged for re-selection.
    :param min_samples: scored forecast rows needed before a width correction, and before a series
        can raise "forecast degraded".
    :param recalibrate: apply the corrections (False: score and report only).
    :param coverage_alert_gap: alert "forecast degraded" when coverage is this far below target.
    :param queue_wait_targets: ``{pool: queue_wait_p95_seconds}`` of the pools whose service level
        sets one (judged every cycle, over the trailing hour).
    :param queue_pools: ``{queue: pool}`` from the pools configuration (whose tasks' waits are whose).
    :param capacity_pools: the configured pools whose service-level choice the cycle makes (once a day
        each, :mod:`~airflow_predictive.runtime.service_level_choice`); empty: none.
    :param retention: after scoring, delete forecasts issued more than this before ``now`` (None: keep
        all). Scoring needs issues up to ``max(max_window, recalibration_window)`` + the forecast
        horizon old (48 h with the defaults and a 24 h horizon); ``[predictive] forecast_retention_hours``
        is 72.
    """

    interval: timedelta = timedelta(minutes=5)
    max_window: timedelta = timedelta(days=1)
    recalibration_window: timedelta = timedelta(hours=12)
    recalibration_grid: timedelta | None = timedelta(minutes=30)
    tolerance: float = 0.03
    mase_threshold: float = 1.0
    min_samples: int = 30
    recalibrate: bool = True
    coverage_alert_gap: float = 0.1
    queue_wait_targets: Mapping[str, float] | None = None
    queue_pools: Mapping[str, str] | None = None
    capacity_pools: Sequence[CapacityPool] = ()
    retention: timedelta | None = None

    def __post_init__(self) -> None:
        if self.retention is not None and self.retention <= timedelta(0):
            raise ValueError(f"retention must be positive, got {self.retention}")


@dataclass
class _Window:
    """What one cycle reads for its series: the scored window, observed demand, plans and capacity."""

    start: datetime
    end: datetime
    window_start: datetime  # start of the recalibration window (at or before ``start``)
    series: list[str]
    observed: pd.DataFrame  # demand since window_start
    scales: dict[str, float]  # MASE scale per series, from the week before ``start``
    plans: pd.DataFrame  # the week's plans of the series' pools (the quantile each was provisioned for)
    capacity: pd.DataFrame  # the window's provisioned capacity of the series' pools

    @functools.cached_property
    def _levels(self) -> dict[str, float]:
        pools = sorted({parse_series_id(sid).pool for sid in self.series})
        return evaluation.provisioning_levels(self.plans, pools)

    def level_of(self, sid: str) -> float:
        """The quantile the series' pool was provisioned for (its newest plan's)."""
        return self._levels[parse_series_id(sid).pool]

    @property
    def ended(self) -> pd.DataFrame:
        """Demand of the buckets scored now: ``[start, end)``. The bucket at the last cycle's end was still
        filling then, so it is scored now (an open start would never score it)."""
        return self.observed[self.observed["ts"] >= pd.Timestamp(self.start)]


def run_feedback_cycle(
    store: FeedbackStore,
    *,
    now: datetime,
    pools: Sequence[str] | None = None,
    policy: FeedbackPolicy | None = None,
    notifiers: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    emit_metrics: bool = True,
    fit_seconds: Sequence[float] = (),
) -> FeedbackResult:
    """Score, store, recalibrate, flag, alert and emit metrics for the window since the last cycle.

    The whole cycle in one call: :func:`evaluate_series` over every series, then
    :func:`close_feedback_cycle`. The control loop's DAG runs the first mapped over the forecast's
    chunks and the second once after them.

    :param store: the ProfileStore.
    :param now: the cycle's time; buckets ending after it are not scored.
    :param pools: only these capacity pools (default: all).
    :param policy: windows, thresholds and retention (default: :class:`FeedbackPolicy`'s).
    :param notifiers: ``{alert kind: BaseNotifier or [BaseNotifier]}``.
    :param context: the task context passed to notifiers.
    :param emit_metrics: send metrics through the installed metrics backend.
    :param fit_seconds: forecasting fit durations to report as the fit-time metric.
    """
    alerts_mod.validate_notifiers(notifiers)  # a bad notifier fails before anything is stored
    series = store.series_ids(list(pools) if pools else None)
    outputs = {"notifiers": notifiers, "context": context, "emit_metrics": emit_metrics}
    scored = evaluate_series(store, series, now=now, policy=policy, **outputs)
    closed = close_feedback_cycle(
        store, now=now, pools=pools, policy=policy, fit_seconds=fit_seconds, **outputs
    )
    return scored.followed_by(closed)


def evaluate_series(
    store: FeedbackStore,
    series: Sequence[str],
    *,
    now: datetime,
    policy: FeedbackPolicy | None = None,
    notifiers: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    emit_metrics: bool = True,
) -> FeedbackResult:
    """Score and recalibrate ``series`` over the window since the last closed cycle; store the scores.

    Reads only these series' forecasts, demand, model states and their pools' plans and capacity, so
    chunks of series can be evaluated in parallel (the DAG maps it over the forecast's chunks). It does
    not move the window: :func:`close_feedback_cycle` does, once every chunk is done.

    :param store: the ProfileStore.
    :param series: the demand series to evaluate.
    :param now: the cycle's time; buckets ending after it are not scored.
    :param policy: windows, thresholds and retention (default: :class:`FeedbackPolicy`'s).
    :param notifiers: ``{alert kind: BaseNotifier or [BaseNotifier]}`` (degraded forecasts are raised here).
    :param context: the task context passed to notifiers.
    :param emit_metrics: send these series' forecast and score metrics.
    """
    policy = policy or FeedbackPolicy()
    notifier_map = alerts_mod.validate_notifiers(notifiers)
    now = _utc(now)
    window = _read_window(store, now, list(series), policy)
    scored, evaluations = _score(store, window, policy)
    decisions = _recalibration_decisions(store, window, scored, policy)
    if policy.recalibrate and decisions:
        apply_corrections(store, decisions, now=now)
    evaluations = _with_calibration_rows(evaluations, decisions, window.end)
    if not evaluations.empty:
        store.write_evaluations(evaluations)
    raised = alerts_mod.alerts_for(
        decisions, [], [], coverage_alert_gap=policy.coverage_alert_gap, min_alert_points=policy.min_samples
    )
    result = FeedbackResult(window.start, window.end, evaluations, decisions, raised)
    if emit_metrics:
        result.metrics_sent = _emit_series(store, result, window)
    if raised:
        result.notifications = send_alerts(raised, notifier_map, context or {})
    return result


def close_feedback_cycle(
    store: FeedbackStore,
    *,
    now: datetime,
    pools: Sequence[str] | None = None,
    policy: FeedbackPolicy | None = None,
    notifiers: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    emit_metrics: bool = True,
    fit_seconds: Sequence[float] = (),
) -> FeedbackResult:
    """End the cycle: move the scored-until watermark, alert on failed actions and capped plans, prune
    old forecasts and emit the pools' capacity, action and fit-time metrics.

    :param store: the ProfileStore.
    :param now: the cycle's time (the same as the series' evaluation).
    :param pools: only these capacity pools (default: all).
    :param policy: windows, thresholds and retention (default: :class:`FeedbackPolicy`'s).
    :param notifiers: ``{alert kind: BaseNotifier or [BaseNotifier]}``.
    :param context: the task context passed to notifiers.
    :param emit_metrics: send metrics through the installed metrics backend.
    :param fit_seconds: forecasting fit durations to report as the fit-time metric.
    """
    policy = policy or FeedbackPolicy()
    notifier_map = alerts_mod.validate_notifiers(notifiers)
    now = _utc(now)
    start, end = _window_bounds(store, now, policy)
    store.set_watermark(WATERMARK, end.isoformat())
    # Queue wait is a pool's, not a series': judged once a cycle, here.
    service = _score_service(store, end, pools, policy)
    if not service.empty:
        store.write_evaluations(service)
    actions, raised = _pool_alerts(store, start, pools, policy)
    raised += service_level.queue_wait_alerts(service, policy.queue_wait_targets or {})
    result = FeedbackResult(start, end, service, alerts=raised)
    chosen = [p for p in policy.capacity_pools if not pools or p.name in pools]
    if chosen:
        # Before pruning: the replay reads the last two days' issued forecasts.
        result.choices = choose_for_pools(store, chosen, now=now, interval=policy.interval)
    if policy.retention is not None:
        # Every cycle stores an issue per series: unpruned, the table grows by that every 5 minutes.
        result.pruned_forecasts = store.prune_forecasts(now - policy.retention)
    if emit_metrics:
        series = store.series_ids(list(pools) if pools else None)
        result.metrics_sent = _emit_pools(store, actions, series, end, fit_seconds, service)
    if raised:
        result.notifications = send_alerts(raised, notifier_map, context or {})
    return result


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _window_bounds(store: Watermarks, now: datetime, policy: FeedbackPolicy) -> tuple[datetime, datetime]:
    """The scored window ``[start, end)``: since the last closed cycle's watermark, at most ``max_window``."""
    # The bucket that contains `now` is still filling: score buckets that have ended.
    end = pd.Timestamp(now).floor(f"{int(policy.interval.total_seconds())}s").to_pydatetime()
    raw_mark = store.get_watermark(WATERMARK)
    start = datetime.fromisoformat(raw_mark) if raw_mark else end - policy.max_window
    return max(start, end - policy.max_window), end


def _read_window(store: FeedbackStore, now: datetime, series: list[str], policy: FeedbackPolicy) -> _Window:
    """The window since the last cycle's watermark (at most ``max_window``) and what scoring it reads."""
    start, end = _window_bounds(store, now, policy)
    window_start = min(start, end - policy.recalibration_window)
    # The MASE scale needs only the naive forecast's error over the week before the window: the store
    # reduces the week to it, so a chunk reads the recalibration window's demand, not eight days of it.
    season = _season(policy)
    lags = list(dict.fromkeys((season, 1)))
    naive = store.naive_errors(series, lags=lags, start=window_start - timedelta(days=7), end=start)
    pools = sorted({parse_series_id(s).pool for s in series})
    return _Window(
        start=start,
        end=end,
        window_start=window_start,
        series=series,
        observed=store.demand(series, start=window_start, end=end),
        scales={sid: accuracy.mase_scale_of(errors, season) for sid, errors in naive.items()},
        plans=store.plans(since=start - timedelta(days=7), pools=pools),
        capacity=store.capacity(since=start, pools=pools),
    )


def _season(policy: FeedbackPolicy) -> int:
    """MASE against the seasonal (daily) naive forecast: below 1 means better than "same time yesterday"."""
    return max(1, round(timedelta(days=1) / policy.interval))


def _score(
    store: FeedbackStore, window: _Window, policy: FeedbackPolicy
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the forecasts whose targets were observed in the window (once, when observed) and the
    capacity provisioned for them; return the forecast scores and all scores."""
    # Forecast targets in [start, end), scored once, when observed.
    forecasts = store.forecasts(window.series, ts_from=window.start, ts_to=window.end, step=policy.interval)
    # No history before the window at all (a new deployment): the window's own demand gives the scale.
    scales = window.scales or None
    scored = evaluation.score_forecasts(
        forecasts, window.ended, window_end=window.end, season=_season(policy), scales=scales
    )
    # Capacity is scored per pool resource whose series is in the window (its demand is what it served).
    pool_scores = evaluation.score_capacity(
        window.capacity,
        window.ended,
        window_end=window.end,
        interval_minutes=policy.interval.total_seconds() / 60,
    )
    evaluations = pd.concat([f for f in (scored, pool_scores) if not f.empty] or [scored], ignore_index=True)
    return scored, evaluations


def _score_service(
    store: FeedbackStore, end: datetime, pools: Sequence[str] | None, policy: FeedbackPolicy
) -> pd.DataFrame:
    """Each pool's queue wait over the trailing hour, judged against its target when it sets one."""
    start = end - service_level.JUDGED_WINDOW
    waits = queue_waits(
        store.task_runs(start=start, end=end), start=start, end=end, queue_pools=policy.queue_pools
    )
    targets = {p: t for p, t in (policy.queue_wait_targets or {}).items() if not pools or p in pools}
    if pools:
        waits = waits[waits["pool"].isin(list(pools))]
    return service_level.score_queue_wait(waits, window_end=end, targets=targets)


def _recalibration_decisions(
    store: FeedbackStore, window: _Window, scored: pd.DataFrame, policy: FeedbackPolicy
) -> list[Decision]:
    """Per-series width and re-selection decisions from the errors of the forecasts issued since each
    series' calibration last changed."""
    interval, grid = policy.interval, policy.recalibration_grid
    # Each target bucket was forecast by every cycle of the horizon before it (288 issues a day), so the
    # window holds ~41k rows per series: read the targets on a coarser grid (their errors are the same
    # kind of sample, and neighbouring buckets' errors are strongly correlated anyway).
    grid = grid if grid and not grid % interval else interval
    sampled = store.forecasts(
        window.series, ts_in=target_grid(window.window_start, window.end, grid), step=interval
    )
    joined = evaluation.joined(sampled, window.observed)
    if joined.empty:
        return []
    since = _corrected_since(store, sorted(joined["series_id"].unique()))
    # A row is fresh when it was issued after its series' calibration last changed (no change: all).
    keep = np.ones(len(joined), dtype=bool)
    if since:
        changed = pd.Series({sid: pd.Timestamp(m) for sid, m in since.items()}, dtype="datetime64[ns, UTC]")
        keep = ~(joined["issued_at"] <= joined["series_id"].map(changed)).to_numpy()
    levels = {sid: window.level_of(sid) for sid in joined["series_id"].unique()}
    joined["fresh"] = keep
    return decide(
        joined,
        _pooled_mase(store, window, scored, policy),
        level=levels,
        tolerance=policy.tolerance,
        mase_threshold=policy.mase_threshold,
        min_samples=policy.min_samples,
    )


def _pooled_mase(
    store: FeedbackStore, window: _Window, scored: pd.DataFrame, policy: FeedbackPolicy
) -> pd.DataFrame:
    """Each series' MASE over the scores of the recalibration window: this cycle's and the stored ones,
    weighted by the forecast rows each scored (evaluations layout, all lead times).

    A steady cycle scores the one bucket that ended since the last, too little to judge a model by: a
    single burst would flag the series for re-selection (slow auto-ARIMA) every few cycles. Pooled over
    the window the recalibration already reads, one bucket moves the judgement by its share.
    """
    past = store.evaluations(
        window.series,
        since=window.end - policy.recalibration_window,
        metrics=[evaluation.MASE, "n"],
        horizon=evaluation.ALL_HORIZONS,
    )
    frames = [f for f in (past, scored) if not f.empty]
    if not frames:
        return scored
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["horizon_minutes"] == evaluation.ALL_HORIZONS]
    keys = ["series_id", "window_end"]
    pairs = rows[rows["metric"] == evaluation.MASE][[*keys, "value"]].merge(
        rows[rows["metric"] == "n"][[*keys, "value"]], on=keys, suffixes=("_mase", "_n")
    )
    pairs = pairs[np.isfinite(pairs["value_mase"].astype(float)) & (pairs["value_n"] > 0)]
    if pairs.empty:
        return scored
    weighted = (pairs["value_mase"] * pairs["value_n"]).groupby(pairs["series_id"]).sum()
    pooled = weighted / pairs.groupby("series_id")["value_n"].sum()
    return pd.DataFrame(
        [(sid, window.end, evaluation.ALL_HORIZONS, evaluation.MASE, float(v)) for sid, v in pooled.items()],
        columns=evaluation.EVALUATION_COLUMNS,
    )


def _with_calibration_rows(
    evaluations: pd.DataFrame, decisions: Sequence[Decision], end: datetime
) -> pd.DataFrame:
    """The scores plus one calibration-factor row per decision (the UI and the logs read them)."""
    rows = [
        (d.series_id, end, evaluation.ALL_HORIZONS, evaluation.CALIBRATION_SCALE, d.factor) for d in decisions
    ]
    if not rows:
        return evaluations
    return pd.concat(
        [evaluations, pd.DataFrame(rows, columns=evaluation.EVALUATION_COLUMNS)], ignore_index=True
    )


def _pool_alerts(
    store: FeedbackStore, start: datetime, pools: Sequence[str] | None, policy: FeedbackPolicy
) -> tuple[pd.DataFrame, list[alerts_mod.Alert]]:
    """The window's actions, and the pools' alerts: failed actions, plans a cap cut."""
    actions = store.actions(since=start)
    if pools and not actions.empty:
        actions = actions[actions["pool"].isin(list(pools))]
    failed = actions[actions["status"] == "failed"].to_dict("records") if not actions.empty else []
    plans = store.plans(since=start, pools=list(pools) if pools else None)
    recent_plans = plans[plans["created_at"] > pd.Timestamp(start)] if not plans.empty else plans
    capped = []
    for row in recent_plans.to_dict("records"):
        cut = (
            evaluation.json.loads(row["capped"]) if isinstance(row.get("capped"), str) else row.get("capped")
        )
        if cut:
            capped.append({"pool": row["pool"], "plan_id": row["plan_id"], "capped": list(cut)})
    raised = alerts_mod.alerts_for([], failed, capped, coverage_alert_gap=policy.coverage_alert_gap)
    return actions, raised


def _emit_series(store: FeedbackMetricsSource, result: FeedbackResult, window: _Window) -> list[str]:
    """Emit the series' numbers: newest forecast, scores, recalibrations and re-selections."""
    forecast_rows, score_rows = [], []
    latest = store.latest_forecasts(window.series) if window.series else pd.DataFrame()
    for sid, group in latest.groupby("series_id") if not latest.empty else []:
        key = parse_series_id(sid)
        first = group.sort_values("ts").iloc[0]
        level = window.level_of(sid)
        upper = first.get(f"q{level:g}", float("nan"))
        forecast_rows.append(
            {"pool": key.pool, "resource": key.resource, "mean": first["mean"], "upper": upper}
        )
    decision_of = {d.series_id: d for d in result.decisions}
    ev = result.evaluations
    mase_of, unmet_of, idle_of = (
        evaluation.values_of(ev, metric)
        for metric in (evaluation.MASE, evaluation.UNMET_DEMAND, evaluation.IDLE_CAPACITY)
    )
    for sid in sorted(set(ev["series_id"]) if not ev.empty else set()):
        key = parse_series_id(sid)
        d = decision_of.get(sid)
        score_rows.append(
            {
                "pool": key.pool,
                "resource": key.resource,
                "coverage": d.coverage if d and d.n else None,
                "mase": mase_of.get(sid, float("nan")),
                "unmet_demand": unmet_of.get(sid, float("nan")),
                "idle_capacity": idle_of.get(sid, float("nan")),
                "factor": d.factor if d else None,
            }
        )
    return metrics.emit_cycle(
        forecasts=forecast_rows,
        capacity=[],
        scores=score_rows,
        action_counts={},
        recalibrations=len(result.recalibrated),
        reselections=len(result.reselected),
    )


def _emit_pools(
    store: FeedbackMetricsSource,
    actions: pd.DataFrame,
    series: Sequence[str],
    end: datetime,
    fit_seconds: Sequence[float],
    service: pd.DataFrame,
) -> list[str]:
    """Emit the pools' numbers: newest capacity, action counts, forecast fit times, queue wait."""
    capacity_rows = []
    capacity = store.capacity(since=end - timedelta(days=1))
    for (pool, resource), group in capacity.groupby(["pool", "resource"]) if not capacity.empty else []:
        capacity_rows.append({"pool": pool, "resource": resource, "value": float(group["value"].iloc[-1])})
    counts: dict[tuple[str, str], int] = {}
    pools = {parse_series_id(s).pool for s in series}
    for pool in sorted(pools | (set(actions["pool"]) if not actions.empty else set())):
        for status in ("applied", "failed", "planned"):
            counts[(pool, status)] = 0
    for row in actions.to_dict("records") if not actions.empty else []:
        counts[(row["pool"], row["status"])] = counts.get((row["pool"], row["status"]), 0) + 1
    waits = evaluation.values_of(service, service_level.QUEUE_WAIT_P95)
    scores = [
        {"pool": parse_series_id(sid).pool, "resource": "slots", "queue_wait_p95": w}
        for sid, w in waits.items()
    ]
    return metrics.emit_cycle(
        forecasts=[],
        capacity=capacity_rows,
        scores=scores,
        action_counts=counts,
        fit_seconds=fit_seconds,
        recalibrations=None,
        reselections=None,
    )


def send_alerts(
    alerts: Iterable[alerts_mod.Alert], notifiers: Mapping[str, list[Any]], context: Mapping[str, Any]
) -> int:
    """Call each alert kind's notifiers; return how many notifications went out.

    :param alerts: this cycle's alerts.
    :param notifiers: :func:`~airflow_predictive.feedback.alerts.validate_notifiers` output.
    :param context: the task context (notifiers render their templates with it).
    """
    sent = 0
    for alert in alerts:
        metrics.incr(metrics.ALERTS, 1, kind=alert.kind)
        for notifier in notifiers.get(alert.kind, []):
            try:
                notifier({**context, "predictive_alert": alert.to_dict()})
                sent += 1
            except Exception:
                log.exception("notifier %r failed for alert %s", notifier, alert.kind)
    return sent

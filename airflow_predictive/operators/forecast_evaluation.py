"""The control loop's ``evaluate`` tasks: score, recalibrate, alert, emit metrics (mapped per chunk of
series, or the whole cycle in one task), and close the cycle after the mapped ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from airflow_predictive import config, stats
from airflow_predictive.feedback.alerts import validate_notifiers
from airflow_predictive.links import ForecastPageLink
from airflow_predictive.operators.cycle import cycle_origin


class _FeedbackOperator(BaseOperator):
    """What the evaluation tasks share: the store, the cycle's time, the policy, notifiers and metrics."""

    def __init__(
        self,
        *,
        pools: Sequence[str] | None = None,
        store_conn_id: str | None = None,
        now: str | None = None,
        interval_minutes: int | None = None,
        tolerance: float = 0.03,
        mase_threshold: float = 1.0,
        min_samples: int = 30,
        recalibrate: bool = True,
        notifiers: Mapping[str, Any] | None = None,
        emit_metrics: bool = True,
        forecast_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must lie strictly between 0 and 1, got {tolerance}")
        if mase_threshold <= 0:
            raise ValueError(f"mase_threshold must be positive, got {mase_threshold}")
        validate_notifiers(notifiers)  # fail at parse time, naming the bad kind or notifier
        self.pools = pools
        self.store_conn_id = store_conn_id
        self.now = now
        self.interval_minutes = interval_minutes
        self.tolerance = tolerance
        self.mase_threshold = mase_threshold
        self.min_samples = min_samples
        self.recalibrate = recalibrate
        self.notifiers = notifiers
        self.emit_metrics = emit_metrics
        self.forecast_task_id = forecast_task_id

    def _fit_seconds(self, context: Any) -> list[float]:
        if not self.forecast_task_id:
            return []
        pulled = context["ti"].xcom_pull(task_ids=self.forecast_task_id)
        items = pulled if isinstance(pulled, list) else [pulled]
        return [float(x["seconds"]) for x in items if isinstance(x, Mapping) and x.get("seconds") is not None]

    def _policy(self) -> Any:
        # Imported when the task runs: the DAG file imports this module at every parse.
        from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy

        configured = config.configured_pools()
        return FeedbackPolicy(
            interval=timedelta(minutes=self.interval_minutes or config.get_int("interval_minutes")),
            tolerance=self.tolerance,
            mase_threshold=self.mase_threshold,
            min_samples=self.min_samples,
            recalibrate=self.recalibrate,
            retention=timedelta(hours=config.get_int("forecast_retention_hours")),
            queue_wait_targets={
                name: pool.service_level.queue_wait_p95_seconds
                for name, pool in configured.items()
                if pool.service_level.queue_wait_p95_seconds
            },
            queue_pools={pool.queue_name: name for name, pool in configured.items()},
            capacity_pools=tuple(configured.values()),
        )

    def execute(self, context: Any) -> dict[str, Any]:
        return self.execute_at(cycle_origin(self.now, context), context)

    def execute_at(self, now: datetime, context: Any = None) -> dict[str, Any]:
        """The task's work as of ``now``, callable outside a task (the demo).

        :param now: the evaluation time (UTC).
        :param context: the task context (notifiers render with it; the forecast task's fit times).
        """
        context = context or {}
        stats.install()
        from airflow_predictive.hooks.profile_store import configured_store

        store = configured_store(self.store_conn_id)
        try:
            result = self._run(store, now, context)
        finally:
            store.dispose()
        self.log.info(
            "scored %s -> %s: %d scores stored\n%s",
            result.window_start.isoformat(),
            result.window_end.isoformat(),
            len(result.evaluations),
            result.table(),
        )
        for alert in result.alerts:
            self.log.warning("alert %s: %s (%s)", alert.kind, alert.title, alert.message)
        return result.summary()

    def _run(self, store: Any, now: datetime, context: Any) -> Any:
        raise NotImplementedError


class ForecastEvaluationOperator(_FeedbackOperator):
    """Score past forecasts and provisioned capacity, recalibrate interval widths, alert and emit metrics.

    Without ``series_ids`` it runs the whole cycle,
    :func:`airflow_predictive.runtime.feedback_cycle.run_feedback_cycle`. With them (mapped over the
    forecast's chunks: ``.partial(...).expand(series_ids=chunks)``) it scores and recalibrates only
    those series (:func:`~airflow_predictive.runtime.feedback_cycle.evaluate_series`) and leaves the
    window open for a :class:`CloseFeedbackCycleOperator` after all chunks. Alerts go to the notifiers
    given per kind (``forecast_degraded``, ``action_failed``, ``budget_cap_hit``,
    ``queue_wait_above_target``), e.g.
    ``notifiers={"action_failed": [SmtpNotifier(to="ops@example.com", subject="{{ predictive_alert.title }}")]}``.
    Metrics go through Airflow's Stats (StatsD/OpenTelemetry as ``[metrics]`` configures).

    :param series_ids: only these series, without closing the cycle (default: the whole cycle).
    :param pools: only these capacity pools (default: all; ignored with ``series_ids``).
    :param store_conn_id: profile store connection (default: ``[predictive] store_conn_id``).
    :param now: evaluate as of this ISO time (default: the DAG run's ``run_after``).
    :param interval_minutes: bucket width of the demand series (default: ``[predictive] interval_minutes``).
    :param tolerance: coverage drift tolerated before the interval width changes.
    :param mase_threshold: MASE (vs. the daily seasonal naive forecast) above which a series is re-selected.
    :param min_samples: scored forecast rows needed before a width correction.
    :param recalibrate: apply corrections (False: score, alert and report only).
    :param notifiers: ``{alert kind: BaseNotifier or list of them}``.
    :param emit_metrics: send metrics through Airflow's Stats.
    :param forecast_task_id: upstream forecasting task whose XCom ``seconds`` feeds the fit-time metric.
    """

    template_fields: Sequence[str] = ("series_ids", "pools", "now", "store_conn_id")
    operator_extra_links = (ForecastPageLink(),)
    ui_color = "#e8f4ea"

    def __init__(self, *, series_ids: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.series_ids = series_ids

    def _run(self, store: Any, now: datetime, context: Any) -> Any:
        from airflow_predictive.runtime.feedback_cycle import evaluate_series, run_feedback_cycle

        outputs = {"notifiers": self.notifiers, "context": context, "emit_metrics": self.emit_metrics}
        if self.series_ids is not None:
            return evaluate_series(store, list(self.series_ids), now=now, policy=self._policy(), **outputs)
        pools = list(self.pools) if self.pools else None
        fit_seconds = self._fit_seconds(context)
        return run_feedback_cycle(
            store, now=now, pools=pools, policy=self._policy(), fit_seconds=fit_seconds, **outputs
        )


class CloseFeedbackCycleOperator(_FeedbackOperator):
    """Close the cycle after its mapped evaluations: move the scored window on, alert on failed actions
    and capped plans, prune old forecasts, emit the pools' capacity, action and fit-time metrics.

    Runs :func:`airflow_predictive.runtime.feedback_cycle.close_feedback_cycle`. Its arguments are
    :class:`ForecastEvaluationOperator`'s (those about scoring are unused).
    """

    template_fields: Sequence[str] = ("pools", "now", "store_conn_id")
    ui_color = "#e8f4ea"

    def _run(self, store: Any, now: datetime, context: Any) -> Any:
        from airflow_predictive.runtime.feedback_cycle import close_feedback_cycle

        return close_feedback_cycle(
            store,
            now=now,
            pools=list(self.pools) if self.pools else None,
            policy=self._policy(),
            notifiers=self.notifiers,
            context=context,
            emit_metrics=self.emit_metrics,
            fit_seconds=self._fit_seconds(context),
        )

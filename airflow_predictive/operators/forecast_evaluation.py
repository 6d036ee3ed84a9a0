"""ForecastEvaluationOperator: the control loop's ``evaluate`` task (score, recalibrate, alert, emit metrics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from airflow_predictive import config, stats
from airflow_predictive.feedback.alerts import validate_notifiers
from airflow_predictive.links import ForecastPageLink
from airflow_predictive.operators.cycle import cycle_origin


class ForecastEvaluationOperator(BaseOperator):
    """Score past forecasts and provisioned capacity, recalibrate interval widths, alert and emit metrics.

    Runs :func:`airflow_predictive.runtime.feedback_cycle.run_feedback_cycle` on the profile store. Alerts go
    to the notifiers given per kind (``forecast_degraded``, ``action_failed``, ``budget_cap_hit``), e.g.
    ``notifiers={"action_failed": [SmtpNotifier(to="ops@example.com", subject="{{ predictive_alert.title }}")]}``.
    Metrics go through Airflow's Stats (StatsD/OpenTelemetry as ``[metrics]`` configures).

    :param pools: only these capacity pools (default: all).
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

    template_fields: Sequence[str] = ("pools", "now", "store_conn_id")
    operator_extra_links = (ForecastPageLink(),)
    ui_color = "#e8f4ea"

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

    def _origin(self, context: Any) -> datetime:
        return cycle_origin(self.now, context)

    def _fit_seconds(self, context: Any) -> list[float]:
        if not self.forecast_task_id:
            return []
        pulled = context["ti"].xcom_pull(task_ids=self.forecast_task_id)
        items = pulled if isinstance(pulled, list) else [pulled]
        return [float(x["seconds"]) for x in items if isinstance(x, Mapping) and x.get("seconds") is not None]

    def execute(self, context: Any) -> dict[str, Any]:
        return self.execute_at(self._origin(context), context)

    def execute_at(self, now: datetime, context: Any = None) -> dict[str, Any]:
        """Score and recalibrate as of ``now``: the task's work, callable outside a task (the demo).

        :param now: the evaluation time (UTC).
        :param context: the task context (notifiers render with it; the forecast task's fit times).
        """
        context = context or {}
        stats.install()
        # Imported when the task runs: the DAG file imports this module at every parse.
        from airflow_predictive.hooks.profile_store import configured_store
        from airflow_predictive.runtime.feedback_cycle import FeedbackPolicy, run_feedback_cycle

        interval = timedelta(minutes=self.interval_minutes or config.get_int("interval_minutes"))
        configured = config.configured_pools()
        store = configured_store(self.store_conn_id)
        try:
            result = run_feedback_cycle(
                store,
                now=now,
                pools=list(self.pools) if self.pools else None,
                policy=FeedbackPolicy(
                    interval=interval,
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
                ),
                notifiers=self.notifiers,
                context=context,
                emit_metrics=self.emit_metrics,
                fit_seconds=self._fit_seconds(context),
            )
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

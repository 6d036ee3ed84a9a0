"""Alerts through Airflow's notifiers: forecast degraded, action failed, budget cap hit.

The user passes ``BaseNotifier`` instances (``SmtpNotifier``, ``SlackNotifier``, ...) per alert kind.
Each notifier is called like an Airflow callback with the task context plus ``predictive_alert``
(``kind``, ``title``, ``message``, ``details``), so its templated fields can use
``{{ predictive_alert.title }}``. One failing notifier is logged and does not stop the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FORECAST_DEGRADED = "forecast_degraded"
ACTION_FAILED = "action_failed"
BUDGET_CAP_HIT = "budget_cap_hit"
QUEUE_WAIT_ABOVE_TARGET = "queue_wait_above_target"
ALERT_KINDS = (FORECAST_DEGRADED, ACTION_FAILED, BUDGET_CAP_HIT, QUEUE_WAIT_ABOVE_TARGET)
#: Scored forecast rows a series needs before "forecast degraded" can fire: as many as the width
#: correction needs. A calibrated q0.95 shows coverage below 0.85 on 30 rows about 1.6% of the time;
#: on 2 rows a single miss reads as coverage 0.50 (issue #20: an alert after the first two points).
MIN_ALERT_POINTS = 30


@dataclass
class Alert:
    """One alert.

    :param kind: one of :data:`ALERT_KINDS`.
    :param title: one line.
    :param message: what happened and what the loop did about it.
    :param details: JSON-able specifics (series, request ids, caps).
    """

    kind: str
    title: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "message": self.message, "details": self.details}


def validate_notifiers(notifiers: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """Normalise ``{kind: notifier or [notifiers]}``; unknown kinds or non-callables fail clearly.

    :param notifiers: the user's mapping.
    """
    result: dict[str, list[Any]] = {kind: [] for kind in ALERT_KINDS}
    for kind, value in (notifiers or {}).items():
        if kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {kind!r} in notifiers; use one of {', '.join(ALERT_KINDS)}")
        items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        for item in items:
            if not callable(item):
                raise ValueError(
                    f"notifier for {kind!r} must be a BaseNotifier instance (e.g. SmtpNotifier(...)), got {item!r}"
                )
        result[kind] = items
    return result


def alerts_for(
    decisions: Iterable[Any],
    failed_actions: Iterable[Mapping[str, Any]],
    capped_plans: Iterable[Mapping[str, Any]],
    *,
    coverage_alert_gap: float = 0.1,
    min_alert_points: int = MIN_ALERT_POINTS,
) -> list[Alert]:
    """Build this cycle's alerts from recalibration decisions, failed actions and capped plans.

    :param decisions: :class:`~airflow_predictive.feedback.recalibration.Decision` objects.
    :param failed_actions: ledger rows with status ``failed``.
    :param capped_plans: plan rows whose ``capped`` list is not empty.
    :param coverage_alert_gap: alert when coverage is this far below its target.
    :param min_alert_points: scored forecast rows a series needs before it can raise "forecast
        degraded" (the coverage and the MASE of fewer points say nothing yet).
    """
    alerts: list[Alert] = []
    degraded = [
        d
        for d in decisions
        if d.n >= min_alert_points
        and (d.reselect or (math.isfinite(d.coverage) and d.coverage < d.level - coverage_alert_gap))
    ]
    if degraded:
        alerts.append(
            Alert(
                FORECAST_DEGRADED,
                f"Forecast degraded on {len(degraded)} series",
                "; ".join(f"{d.series_id}: {d.reason or f'coverage {d.coverage:.2f}'}" for d in degraded),
                {"series": [d.to_dict() for d in degraded]},
            )
        )
    failed = list(failed_actions)
    if failed:
        alerts.append(
            Alert(
                ACTION_FAILED,
                f"{len(failed)} capacity action(s) failed",
                "; ".join(
                    f"{a['pool']} {a['kind']} {a['amount']:g} {a['resource']}: {a.get('error') or '?'}"
                    for a in failed
                ),
                {"request_ids": [a["request_id"] for a in failed]},
            )
        )
    capped = list(capped_plans)
    if capped:
        alerts.append(
            Alert(
                BUDGET_CAP_HIT,
                f"Budget or size cap cut {len(capped)} plan(s)",
                "; ".join(f"{p['pool']}: {', '.join(p['capped'])}" for p in capped),
                {"plans": [p["plan_id"] for p in capped]},
            )
        )
    return alerts

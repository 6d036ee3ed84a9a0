"""Names of the scores the feedback loop stores in ``evaluations`` (``metric`` column) and the UI reads.

Per series and horizon bucket: ``mase``, ``pinball_q<level>``, ``coverage_q<level>``. Per pool resource
(stored under the pool's series id with :data:`ALL_HORIZONS`): unmet demand, idle capacity and the queue
wait avoided. ``horizon_minutes`` is the upper edge of the lead-time bucket; :data:`ALL_HORIZONS` (0)
aggregates every lead time of a cycle.
"""

from __future__ import annotations

ALL_HORIZONS = 0
MASE = "mase"
UNMET_DEMAND = "unmet_demand"
IDLE_CAPACITY = "idle_capacity"
QUEUE_WAIT_AVOIDED = "queue_wait_avoided_minutes"
CALIBRATION_SCALE = "calibration_scale"


def coverage_metric(level: float) -> str:
    """Metric name of the empirical coverage of quantile ``level``: ``coverage_q0.95``."""
    return f"coverage_q{level:g}"


def pinball_metric(level: float) -> str:
    """Metric name of the pinball (quantile) loss at ``level``: ``pinball_q0.95``."""
    return f"pinball_q{level:g}"

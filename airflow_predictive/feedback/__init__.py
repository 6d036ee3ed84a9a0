"""Feedback loop: score past forecasts against what happened, recalibrate, alert, emit metrics, report."""

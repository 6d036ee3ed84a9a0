"""Runtime: the cycles that tie the core to the adapters (profile refresh, forecast, allocation, feedback) and the metrics emitter."""

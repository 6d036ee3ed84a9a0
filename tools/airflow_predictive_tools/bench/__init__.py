"""Benchmarks: forecasting speed and accuracy, sampler overhead, evaluate, scale-out, combination (JSON output)."""

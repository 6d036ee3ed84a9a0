"""Forecasting: auto-ARIMA engine, baselines, structural forecast, combination and accuracy metrics."""

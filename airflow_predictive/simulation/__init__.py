"""Replay of demand traces through the production forecaster and planner (the backtest)."""

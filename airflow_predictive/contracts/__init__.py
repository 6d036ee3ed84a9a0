"""Contracts every layer shares: demand series, forecasts, plans and actions, capacity, machine types, pools."""

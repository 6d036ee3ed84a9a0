"""Allocation: capacity-pool policy, the pure planner, the cost model and the action ledger."""

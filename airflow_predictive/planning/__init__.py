"""Planning: the pure planner (forecast + capacity + pool policy -> plan) and the cost model."""

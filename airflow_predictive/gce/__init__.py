"""Compute Engine side of the provider: the allocator hook's helpers and the local emulator.

Kept light on purpose: import ``airflow_predictive.gce.emulator`` (stdlib only until a client is
built) or ``airflow_predictive.gce.compute`` explicitly.
"""

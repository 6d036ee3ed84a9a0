"""Behavioural profiler: task history over the REST API, worker usage samples, demand series, summaries.

Kept import-free so the worker listener (``airflow_predictive.plugins.listener``) loads cheaply.
"""

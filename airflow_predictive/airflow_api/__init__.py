"""Airflow REST API adapter: the API client and the task-history collector the profiler reads through."""

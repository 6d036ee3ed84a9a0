"""Real Airflow for tests: the same runner ``make demo`` uses (airflow_predictive_tools.deployment)."""

from airflow_predictive_tools.deployment import AirflowDeployment, airflow_cli, free_port, poll

__all__ = ["AirflowDeployment", "airflow_cli", "free_port", "poll"]

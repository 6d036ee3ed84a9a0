"""Real Airflow for tests: the same runner ``make demo`` uses (airflow_predictive.demo.deployment)."""

from airflow_predictive.demo.deployment import AirflowDeployment, airflow_cli, free_port

__all__ = ["AirflowDeployment", "airflow_cli", "free_port"]

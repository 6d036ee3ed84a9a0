"""A small scheduled DAG whose tasks carry resource hints: the DAG tab of the forecast page shows it."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="ui_forecast_page",
    schedule="0 */6 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["predictive", "test"],
) as dag:
    extract = BashOperator(
        task_id="extract",
        bash_command="echo extract",
        queue="etl-workers",
        resources={"cpus": 2, "ram": 4096},
    )
    transform = BashOperator(
        task_id="transform",
        bash_command="echo transform",
        queue="etl-workers",
        resources={"cpus": 4, "ram": 8192},
    )
    extract >> transform

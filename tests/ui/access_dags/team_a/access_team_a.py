"""A DAG in team_a's bundle: the access test's viewer of team_a may read it."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="access_team_a",
    schedule="0 */6 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["predictive", "test"],
) as dag:
    BashOperator(task_id="work", bash_command="echo a", queue="etl-workers", resources={"cpus": 2})

"""Preset-scheduled (@hourly) DAG whose tasks carry plain Airflow ``resources`` (no template)."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="template_preset",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    BashOperator(task_id="crunch", bash_command="true", resources={"cpus": 3, "ram": 6144}, queue="default")

"""A DAG that knows nothing about templates: the cluster policy binds it (platform_etl template)."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="nightly_sales", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC")
) as dag:
    pull = BashOperator(task_id="pull_orders", bash_command="true")
    crunch = BashOperator(task_id="crunch", bash_command="true")
    notify = BashOperator(task_id="notify", bash_command="true")
    pull >> crunch >> notify

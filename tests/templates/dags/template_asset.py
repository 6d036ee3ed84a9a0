"""Asset-triggered DAG: the endpoint lists it as such, with no time-based runs."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Asset

with DAG(
    dag_id="template_asset",
    schedule=[Asset("file:///tmp/predictive-test/orders.parquet")],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
) as dag:
    BashOperator(task_id="consume", bash_command="true")

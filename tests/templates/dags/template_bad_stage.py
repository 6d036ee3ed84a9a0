"""DAG naming a stage the template does not have: must fail to import with a message naming both."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from airflow_predictive.templates import stage_kwargs

with DAG(
    dag_id="template_bad_stage", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")
) as dag:
    BashOperator(task_id="x", bash_command="true", **stage_kwargs("etl_batch", "transfrom"))

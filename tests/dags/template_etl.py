"""Test DAG: an ETL batch bound to the etl_batch template three ways (kwargs, @task, apply_template)."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

from airflow_predictive.templates import apply_template, stage_kwargs

with DAG(
    dag_id="template_etl",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=8,
    tags=["predictive-test"],
) as dag:
    extract = BashOperator(
        task_id="extract",
        bash_command="echo extract",
        **stage_kwargs("etl_batch", "extract", queue="default"),
    )

    @task(**stage_kwargs("etl_batch", "transform", queue="etl"))
    def transform(partition: int) -> int:
        return partition

    load_one = BashOperator(task_id="load_warehouse", bash_command="echo load")
    load_two = BashOperator(task_id="load_marts", bash_command="echo load")
    parts = transform.expand(partition=[1, 2, 3])
    extract >> parts >> [load_one, load_two]
    apply_template(dag, "etl_batch", {"load": "load_*"})

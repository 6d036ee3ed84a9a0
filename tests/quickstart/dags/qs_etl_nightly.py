"""Quickstart user DAG: an ETL bound to the built-in etl_batch template, on queue qs_etl (pool qs-etl)."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

from airflow_predictive.templates import stage_kwargs

with DAG(
    dag_id="qs_etl_nightly",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["quickstart"],
):
    extract = BashOperator(
        task_id="extract", bash_command="echo extract", **stage_kwargs("etl_batch", "extract", queue="qs_etl")
    )

    @task(**stage_kwargs("etl_batch", "transform", queue="qs_etl"))
    def transform(partition: int) -> int:
        return partition

    load = BashOperator(
        task_id="load", bash_command="echo load", **stage_kwargs("etl_batch", "load", queue="qs_etl")
    )
    extract >> transform.expand(partition=[1, 2]) >> load

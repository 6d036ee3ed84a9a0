"""Quickstart user DAG: an hourly report bound to the built-in data_analysis template, on queue qs_etl."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from airflow_predictive.templates import stage_kwargs

with DAG(
    dag_id="qs_reports_hourly",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["quickstart"],
):
    analyze = BashOperator(
        task_id="analyze",
        bash_command="echo analyze",
        **stage_kwargs("data_analysis", "analyze", queue="qs_etl"),
    )
    report = BashOperator(
        task_id="report",
        bash_command="echo report",
        **stage_kwargs("data_analysis", "report", queue="qs_etl"),
    )
    analyze >> report

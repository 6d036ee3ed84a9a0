"""Cron-scheduled DAG bound to the short_training user template (its second stage needs 16 vCPUs)."""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from airflow_predictive.templates import stage_kwargs

USER_TEMPLATES = Path(__file__).resolve().parents[1] / "user_templates"

with DAG(
    dag_id="template_cron",
    schedule="15 */6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
) as dag:
    prepare = BashOperator(
        task_id="prepare",
        bash_command="sleep 4",
        **stage_kwargs("short_training", "prepare", templates_folder=USER_TEMPLATES),
    )
    train = BashOperator(
        task_id="train",
        bash_command="sleep 6",
        **stage_kwargs("short_training", "train", templates_folder=USER_TEMPLATES),
    )
    publish = BashOperator(
        task_id="publish",
        bash_command="true",
        **stage_kwargs("short_training", "publish", templates_folder=USER_TEMPLATES),
    )
    prepare >> train >> publish

"""A DAG run for real whose second stage (train) needs 16 vCPUs, per the short_training template."""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from airflow_predictive.templates import stage_kwargs

USER_TEMPLATES = Path(__file__).resolve().parents[1] / "user_templates"


def bound(stage: str) -> dict:
    return stage_kwargs("short_training", stage, templates_folder=USER_TEMPLATES)


with DAG(
    dag_id="template_two_stage",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    prepare = BashOperator(task_id="prepare", bash_command="sleep 90", **bound("prepare"))
    train = BashOperator(task_id="train", bash_command="sleep 2", **bound("train"))
    publish = BashOperator(task_id="publish", bash_command="true", **bound("publish"))
    prepare >> train >> publish

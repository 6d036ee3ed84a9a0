"""DAG on a custom timetable registered by the test plugin (twice daily at 06:00 and 18:00 UTC)."""

from __future__ import annotations

import sys
from pathlib import Path

# Airflow puts its plugins folder on sys.path; outside Airflow (in-process DagBag) add the test one.
sys.path.append(str(Path(__file__).resolve().parents[1] / "plugins"))
import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from template_test_timetables import TwiceDailyTimetable

from airflow_predictive.templates import stage_kwargs

with DAG(
    dag_id="template_custom",
    schedule=TwiceDailyTimetable((6, 18)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    BashOperator(
        task_id="report", bash_command="true", **stage_kwargs("data_analysis", "report", queue="default")
    )

"""DAG whose timetable cannot be evaluated (its calendar is unreachable): the endpoint skips it."""

from __future__ import annotations

import sys
from pathlib import Path

# Airflow puts its plugins folder on sys.path; outside Airflow (in-process DagBag) add the test one.
sys.path.append(str(Path(__file__).resolve().parents[1] / "plugins"))
import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from template_test_timetables import UnreachableCalendarTimetable

with DAG(
    dag_id="template_broken_timetable",
    schedule=UnreachableCalendarTimetable(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    BashOperator(task_id="noop", bash_command="true")

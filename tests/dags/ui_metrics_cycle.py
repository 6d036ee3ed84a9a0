"""One control-loop cycle (forecast -> evaluate) on the store named by [predictive]: the StatsD test runs it."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_predictive.operators.demand_forecast import DemandForecastOperator
from airflow_predictive.operators.forecast_evaluation import ForecastEvaluationOperator

with DAG(
    dag_id="ui_metrics_cycle",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["predictive", "test"],
) as dag:
    forecast = DemandForecastOperator(task_id="forecast", pools=["etl-workers"], horizon_minutes=120)
    evaluate = ForecastEvaluationOperator(
        task_id="evaluate", pools=["etl-workers"], forecast_task_id="forecast", min_samples=5
    )
    forecast >> evaluate

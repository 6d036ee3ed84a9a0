"""DemandForecastOperator mapped over chunks of the store's series (run by tests/forecasting under `airflow dags test`)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from airflow_predictive.operators.demand_forecast import DemandForecastOperator, series_chunks


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["predictive-test"])
def forecast_demand():
    @task
    def chunks() -> list[list[str]]:
        return series_chunks(chunk_size=2)

    DemandForecastOperator.partial(task_id="forecast", max_selections=5).expand(series_ids=chunks())


forecast_demand()

"""airflow-predictive: predictive capacity management for Apache Airflow on Google Compute Engine."""

__version__ = "0.1.0"

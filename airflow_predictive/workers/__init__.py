"""Adapters to the Airflow workers on a pool's VMs (Celery remote control)."""

"""After `pip install`, Airflow's own commands see the provider, its config and its plugin."""

from __future__ import annotations

import json

import pytest

from tests.airflow_harness import airflow_cli

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_providers_list_shows_the_provider():
    out = airflow_cli("providers", "list", "--output", "json").stdout
    providers = {p["package_name"]: p for p in json.loads(out)}
    assert providers["airflow-predictive"]["version"] == "0.1.0"


def test_providers_hooks_show_the_connection_types():
    out = airflow_cli("providers", "hooks", "--output", "json").stdout
    conn_types = {h["connection_type"] for h in json.loads(out)}
    assert {"predictive_store", "predictive_gce", "predictive_airflow_api"} <= conn_types


def test_config_get_value_returns_the_documented_default():
    assert airflow_cli("config", "get-value", "predictive", "default_mode").stdout.strip() == "forecast_only"
    assert airflow_cli("config", "get-value", "predictive", "horizon_minutes").stdout.strip() == "1440"


def test_airflow_plugins_shows_the_plugin():
    out = airflow_cli("plugins", "--output", "json").stdout
    plugins = {p["name"]: p for p in json.loads(out)}
    assert "predictive" in plugins

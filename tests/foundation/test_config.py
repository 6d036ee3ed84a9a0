"""The [predictive] config section: documented defaults, env overrides, unknown keys refused."""

from __future__ import annotations

import pytest

from airflow_predictive import config
from airflow_predictive.get_provider_info import get_provider_info


def test_every_option_is_documented_in_the_provider_info():
    options = get_provider_info()["config"]["predictive"]["options"]
    assert set(options) == set(config.OPTIONS)
    assert all(o["description"] and o["default"] is not None for o in options.values())


def test_environment_overrides_the_default(monkeypatch):
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__INTERVAL_MINUTES", "15")
    assert config.get_int("interval_minutes") == 15
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__INTERVAL_MINUTES", "fifteen")
    with pytest.raises(config.ConfigError, match=r"\[predictive\] interval_minutes must be an integer"):
        config.get_int("interval_minutes")


def test_unknown_key_names_the_key(monkeypatch):
    with pytest.raises(config.ConfigError, match="unknown config key \\[predictive\\] 'horizon'"):
        config.get("horizon")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__HORIZON_MINUTS", "60")
    with pytest.raises(config.ConfigError, match="horizon_minuts"):
        config.validate()


def test_relative_paths_live_under_airflow_home(airflow_home):
    assert config.get_path("store_path") == airflow_home / "predictive" / "profile.db"


def test_quantiles_are_validated(monkeypatch):
    assert config.quantiles() == (0.5, 0.8, 0.9, 0.95, 0.99)
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__QUANTILES", "0.5,1.5")
    with pytest.raises(config.ConfigError, match="strictly between 0 and 1"):
        config.quantiles()

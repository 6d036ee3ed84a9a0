"""Shared inputs for the forecasting tests: generated demand and one order selection per module."""

from __future__ import annotations

import pandas as pd
import pytest
from airflow_predictive_tools.bench.forecasting import generate_history

from airflow_predictive.forecasting.engine import Forecaster

SID = "pool=bench-0000/resource=cpu"


@pytest.fixture(scope="session")
def demand() -> pd.DataFrame:
    """Two weeks of one realistic generated cpu series (5-minute buckets)."""
    history = generate_history(1, days=14, seed=7)
    return history


@pytest.fixture(scope="session")
def origin(demand: pd.DataFrame):
    """A Wednesday 00:00 forecast origin: the two held-out days after it are weekdays like the last ones."""
    return (demand["ts"].max() - pd.Timedelta(days=5)).to_pydatetime()


@pytest.fixture(scope="session")
def selected(demand: pd.DataFrame, origin) -> tuple[Forecaster, dict]:
    """The production forecaster and the states of its (in-process) order selection at ``origin``."""
    forecaster = Forecaster(select_workers=0)
    states = forecaster.select(demand[demand["ts"] <= origin], now=origin)
    assert not forecaster.errors, forecaster.errors
    return forecaster, states

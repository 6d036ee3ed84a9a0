"""Shared builders for allocation tests: forecast frames and pool states from plain numbers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, quantile_column
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.gce.compute import ComputeEngine, RetryPolicy

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SPREAD = {0.5: 1.0, 0.8: 1.1, 0.9: 1.2, 0.95: 1.3, 0.99: 1.5}


def forecast_frame(
    pool: str, levels: Mapping[str, list[float]], *, start: datetime = NOW, step_minutes: int = 5
) -> pd.DataFrame:
    """A forecast in the contract: per resource a list of median values, quantiles scaled by SPREAD."""
    rows = []
    for resource, values in levels.items():
        for k, value in enumerate(values):
            row = {
                "series_id": f"pool={pool}/resource={resource}",
                "ts": start + timedelta(minutes=step_minutes * k),
                "mean": value,
                "model": "test",
                "fallback": "",
                "issued_at": start,
            }
            row.update({quantile_column(q): value * SPREAD[q] for q in DEFAULT_QUANTILES})
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the Compute Engine emulator

PROJECT, ZONE = "demo-project", "us-central1-a"
FAST = RetryPolicy(attempts=8, initial_seconds=0.01, max_seconds=0.05)


@pytest.fixture(scope="module")
def emulator_url():
    """One emulator per test module, on a free port; fast boots and operations."""
    from airflow_predictive_tools.emulator.server import running_emulator

    with running_emulator(
        config={"boot_seconds": 0.1, "stop_seconds": 0.05, "operation_seconds": 0.01}
    ) as url:
        yield url


@pytest.fixture
def control(emulator_url):
    """The emulator's control API, emptied for each test; injected faults cleared after it."""
    from airflow_predictive_tools.emulator.server import EmulatorControl

    ctl = EmulatorControl(emulator_url)
    ctl.reset()
    ctl.configure(boot_seconds=0.1, stop_seconds=0.05, operation_seconds=0.01)
    yield ctl
    ctl.clear_faults()


@pytest.fixture
def engine(emulator_url, control):
    """The real google-cloud-compute client against the emulator, with quick retries."""
    return ComputeEngine(PROJECT, ZONE, endpoint=emulator_url, retry=FAST, operation_timeout=30)


def make_pool(**overrides) -> CapacityPool:
    """The pool ``etl`` in the emulator's project, applying its plans, with any setting overridden."""
    settings = {
        "name": "etl",
        "project": PROJECT,
        "zone": ZONE,
        "machine_type": "n2-standard-8",
        "max_instances": 20,
        "thresholds": {"storage": 0},
        "spot": {"mode": "none"},
        "mode": "forecast_and_scale",
    }
    settings.update(overrides)
    return CapacityPool(**settings)

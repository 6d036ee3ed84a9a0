"""Fixtures for tests that drive the real google-cloud-compute client against the local emulator.

Other test folders can reuse the same thing without fixtures:
``from airflow_predictive_tools.emulator.server import running_emulator`` (yields the base URL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from airflow_predictive_tools.emulator.server import ComputeEngineEmulator, EmulatorControl, compute_client

PROJECT = "demo-project"
ZONE = "us-central1-a"
REGION = "us-central1"
FAST = {"boot_seconds": 0.3, "stop_seconds": 0.1, "operation_seconds": 0.02, "recreate_seconds": 0.2}


@pytest.fixture
def gce_emulator() -> Iterator[ComputeEngineEmulator]:
    """A running emulator on 127.0.0.1 (free port, fast boot), stopped after the test."""
    emulator = ComputeEngineEmulator(config=FAST).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def gce_emulator_url(gce_emulator: ComputeEngineEmulator) -> str:
    """Base URL of a running emulator, e.g. ``http://127.0.0.1:40123``."""
    return gce_emulator.url


@pytest.fixture
def control(gce_emulator_url: str) -> EmulatorControl:
    """The emulator's control API (faults, preemption, quotas, seeding)."""
    return EmulatorControl(gce_emulator_url)


@pytest.fixture
def client(gce_emulator_url: str) -> Callable[[type], Any]:
    """Build a real ``compute_v1`` client of the given class pointed at the emulator."""
    return lambda client_class: compute_client(client_class, gce_emulator_url)


@pytest.fixture
def wait_op(client: Callable[[type], Any]) -> Callable[[Any], Any]:
    """Wait for an operation through ``zoneOperations.wait`` and return the final Operation."""
    from google.cloud import compute_v1

    operations = client(compute_v1.ZoneOperationsClient)

    def wait(operation: Any, zone: str = ZONE) -> Any:
        return operations.wait(project=PROJECT, zone=zone, operation=operation.name, timeout=30)

    return wait


def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.03) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    assert value, f"condition not met within {timeout}s (last value {value!r})"
    return value

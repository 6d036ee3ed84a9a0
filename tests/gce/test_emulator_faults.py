"""Injected faults (HTTP errors, failed operations, delays) as the real client sees them."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions
from google.cloud import compute_v1

from tests.gce.conftest import PROJECT, ZONE


def _vm(name: str) -> compute_v1.Instance:
    return compute_v1.Instance(name=name, machine_type=f"zones/{ZONE}/machineTypes/e2-standard-2")


def test_injected_429_then_503_then_success(client, control):
    instances = client(compute_v1.InstancesClient)
    control.inject_fault(method="POST", path_regex=r"/instances$", status=429, count=1)
    control.inject_fault(method="POST", path_regex=r"/instances$", status=503, count=1)
    with pytest.raises(exceptions.TooManyRequests) as first:
        instances.insert(project=PROJECT, zone=ZONE, instance_resource=_vm("w"))
    assert first.value.errors[0]["reason"] == "rateLimitExceeded"
    with pytest.raises(exceptions.ServiceUnavailable):
        instances.insert(project=PROJECT, zone=ZONE, instance_resource=_vm("w"))
    instances.insert(project=PROJECT, zone=ZONE, instance_resource=_vm("w")).result(timeout=20)
    assert control.state()["faults"] == []


def test_fault_matches_only_its_method_and_path(client, control):
    instances = client(compute_v1.InstancesClient)
    control.inject_fault(method="GET", path_regex=r"/instances/target$", status=500, count=-1)
    with pytest.raises(exceptions.InternalServerError):
        instances.get(project=PROJECT, zone=ZONE, instance="target")
    with pytest.raises(exceptions.NotFound):
        instances.get(project=PROJECT, zone=ZONE, instance="other")
    with pytest.raises(exceptions.InternalServerError):
        instances.get(project=PROJECT, zone=ZONE, instance="target")
    control.clear_faults()
    with pytest.raises(exceptions.NotFound):
        instances.get(project=PROJECT, zone=ZONE, instance="target")


def test_client_retries_a_get_through_transient_503s(client, control):
    instances = client(compute_v1.InstancesClient)
    control.seed(project=PROJECT, zone=ZONE, instances=[{"name": "w", "machineType": "e2-medium"}])
    control.inject_fault(method="GET", path_regex=r"/instances/w$", status=503, count=2)
    assert instances.get(project=PROJECT, zone=ZONE, instance="w").status == "RUNNING"
    assert control.state()["faults"] == []


def test_injected_operation_error_fails_the_operation_and_changes_nothing(client, control):
    instances = client(compute_v1.InstancesClient)
    control.inject_fault(
        method="POST",
        path_regex=r"/instances$",
        operation_error={
            "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
            "message": "The zone does not have enough resources.",
            "http_status": 503,
        },
    )
    operation = instances.insert(project=PROJECT, zone=ZONE, instance_resource=_vm("w"))
    with pytest.raises(exceptions.ServiceUnavailable):
        operation.result(timeout=20)
    assert operation.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert operation.target_link.endswith(f"zones/{ZONE}/instances/w")
    assert list(instances.list(project=PROJECT, zone=ZONE)) == []


def test_delay_fault_makes_the_client_time_out(client, control):
    instances = client(compute_v1.InstancesClient)
    control.inject_fault(method="GET", path_regex=r"/instances$", delay_seconds=1.0)
    with pytest.raises((requests.exceptions.Timeout, exceptions.DeadlineExceeded)):
        list(instances.list(project=PROJECT, zone=ZONE, timeout=0.2))
    assert list(instances.list(project=PROJECT, zone=ZONE, timeout=5)) == []


def test_bad_fault_is_refused(control):
    with pytest.raises(RuntimeError, match="needs 'status'"):
        control.inject_fault(method="GET")

"""Managed instance groups, quotas and Spot preemption through the real google-cloud-compute client."""

from __future__ import annotations

import json

import pytest
from google.api_core import exceptions
from google.cloud import compute_v1

from tests.gce.conftest import PROJECT, REGION, ZONE, eventually

TEMPLATE = {
    "name": "etl-template",
    "properties": {
        "machineType": "e2-standard-4",
        "labels": {"pool": "etl"},
        "scheduling": {"provisioningModel": "STANDARD"},
    },
}


def _create_group(client, wait_op, size: int, template: dict | None = None) -> None:
    templates = client(compute_v1.InstanceTemplatesClient)
    body = template or TEMPLATE
    resource = compute_v1.InstanceTemplate(
        name=body["name"], properties=compute_v1.InstanceProperties.from_json(json.dumps(body["properties"]))
    )
    templates.insert(project=PROJECT, instance_template_resource=resource).result(timeout=20)
    groups = client(compute_v1.InstanceGroupManagersClient)
    group = compute_v1.InstanceGroupManager(
        name="etl",
        base_instance_name="etl",
        instance_template=f"global/instanceTemplates/{body['name']}",
        target_size=size,
    )
    wait_op(groups.insert(project=PROJECT, zone=ZONE, instance_group_manager_resource=group))


def _managed(groups) -> list[compute_v1.ManagedInstance]:
    return list(groups.list_managed_instances(project=PROJECT, zone=ZONE, instance_group_manager="etl"))


def test_resize_up_creates_booting_instances_then_the_group_is_stable(client, wait_op):
    _create_group(client, wait_op, size=0)
    groups = client(compute_v1.InstanceGroupManagersClient)
    operation = groups.resize(project=PROJECT, zone=ZONE, instance_group_manager="etl", size=3)
    done = wait_op(operation)
    assert done.operation_type == "compute.instanceGroupManagers.resize"
    group = groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl")
    assert group.target_size == 3
    assert group.current_actions.creating == 3 and not group.status.is_stable
    eventually(lambda: groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl").status.is_stable)
    group = groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl")
    assert group.current_actions.none == 3
    managed = _managed(groups)
    assert [m.instance_status for m in managed] == ["RUNNING"] * 3
    assert all(m.name.startswith("etl-") and len(m.name) == len("etl-") + 4 for m in managed)
    instances = client(compute_v1.InstancesClient)
    request = compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE, filter="labels.pool = etl")
    assert sorted(i.name for i in instances.list(request=request)) == [m.name for m in managed]


def test_resize_down_deletes_instances_and_request_id_dedupes(client, wait_op):
    _create_group(client, wait_op, size=3)
    groups = client(compute_v1.InstanceGroupManagersClient)
    eventually(lambda: groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl").status.is_stable)
    request = compute_v1.ResizeInstanceGroupManagerRequest(
        project=PROJECT,
        zone=ZONE,
        instance_group_manager="etl",
        size=1,
        request_id="6f1c7d2e-0000-4e4b-9a51-0000000000aa",
    )
    first = groups.resize(request=request)
    assert groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl").current_actions.deleting == 2
    wait_op(first)
    # A retry with the same request id after other changes returns the old operation and changes nothing.
    wait_op(groups.resize(project=PROJECT, zone=ZONE, instance_group_manager="etl", size=2))
    assert groups.resize(request=request).name == first.name
    assert groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl").target_size == 2
    eventually(
        lambda: len(_managed(groups)) == 2 and all(m.current_action == "NONE" for m in _managed(groups))
    )


def test_delete_instances_shrinks_the_target_size(client, wait_op):
    _create_group(client, wait_op, size=2)
    groups = client(compute_v1.InstanceGroupManagersClient)
    victim = _managed(groups)[0]
    body = compute_v1.InstanceGroupManagersDeleteInstancesRequest(instances=[victim.instance])
    wait_op(
        groups.delete_instances(
            project=PROJECT,
            zone=ZONE,
            instance_group_manager="etl",
            instance_group_managers_delete_instances_request_resource=body,
        )
    )
    assert groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl").target_size == 1
    eventually(
        lambda: (
            [m.name for m in _managed(groups)] != [] and victim.name not in [m.name for m in _managed(groups)]
        )
    )
    unknown = compute_v1.InstanceGroupManagersDeleteInstancesRequest(
        instances=[f"zones/{ZONE}/instances/stranger"]
    )
    with pytest.raises(exceptions.BadRequest, match="not a member"):
        groups.delete_instances(
            project=PROJECT,
            zone=ZONE,
            instance_group_manager="etl",
            instance_group_managers_delete_instances_request_resource=unknown,
        )


def test_cpu_quota_fails_the_insert_operation_with_forbidden(client, control):
    control.set_quota(REGION, "CPUS", 8)
    instances = client(compute_v1.InstancesClient)
    ok = compute_v1.Instance(name="fits", machine_type=f"zones/{ZONE}/machineTypes/e2-standard-8")
    instances.insert(project=PROJECT, zone=ZONE, instance_resource=ok).result(timeout=20)
    too_big = compute_v1.Instance(name="too-big", machine_type=f"zones/{ZONE}/machineTypes/e2-standard-2")
    operation = instances.insert(project=PROJECT, zone=ZONE, instance_resource=too_big)
    with pytest.raises(exceptions.Forbidden) as raised:
        operation.result(timeout=20)
    assert operation.error.errors[0].code == "QUOTA_EXCEEDED"
    assert "Quota 'CPUS' exceeded" in operation.error.errors[0].message
    assert raised.value.code == 403
    assert [i.name for i in instances.list(project=PROJECT, zone=ZONE)] == ["fits"]


def test_group_over_quota_queues_creations_until_quota_frees(client, control, wait_op):
    control.set_quota(REGION, "CPUS", 8)
    _create_group(client, wait_op, size=3)
    groups = client(compute_v1.InstanceGroupManagersClient)
    managed = _managed(groups)
    queued = [m for m in managed if not m.instance_status]
    assert len(queued) == 1
    assert queued[0].current_action == "CREATING"
    assert queued[0].last_attempt.errors.errors[0].code == "QUOTA_EXCEEDED"
    errors = list(groups.list_errors(project=PROJECT, zone=ZONE, instance_group_manager="etl"))
    assert errors[0].error.code == "QUOTA_EXCEEDED"
    control.set_quota(REGION, "CPUS", 12)
    eventually(lambda: groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl").status.is_stable)
    assert len([m for m in _managed(groups) if m.instance_status == "RUNNING"]) == 3


def test_spot_preemption_terminates_the_vm_and_records_an_operation(client, control, wait_op):
    instances = client(compute_v1.InstancesClient)
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instances=[
            {"name": "spot-1", "machineType": "e2-standard-4", "scheduling": {"provisioningModel": "SPOT"}},
            {"name": "standard-1", "machineType": "e2-standard-4"},
        ],
    )
    control.preempt("spot-1")
    vm = instances.get(project=PROJECT, zone=ZONE, instance="spot-1")
    assert (vm.status, vm.status_message) == ("TERMINATED", "Instance was preempted.")
    operations = client(compute_v1.ZoneOperationsClient)
    request = compute_v1.ListZoneOperationsRequest(
        project=PROJECT, zone=ZONE, filter="operationType = compute.instances.preempted"
    )
    preempted = list(operations.list(request=request))
    assert [op.target_link.rsplit("/", 1)[-1] for op in preempted] == ["spot-1"]
    with pytest.raises(RuntimeError, match="not a Spot"):
        control.preempt("standard-1")
    wait_op(instances.start(project=PROJECT, zone=ZONE, instance="spot-1"))
    assert instances.get(project=PROJECT, zone=ZONE, instance="spot-1").status == "RUNNING"


def test_preempted_group_member_is_recreated(client, control, wait_op):
    spot = {
        "name": "spot-template",
        "properties": {**TEMPLATE["properties"], "scheduling": {"provisioningModel": "SPOT"}},
    }
    _create_group(client, wait_op, size=1, template=spot)
    groups = client(compute_v1.InstanceGroupManagersClient)
    eventually(lambda: groups.get(project=PROJECT, zone=ZONE, instance_group_manager="etl").status.is_stable)
    member = _managed(groups)[0].name
    control.preempt(member, zone=ZONE)
    after = _managed(groups)[0]
    assert (after.name, after.instance_status, after.current_action) == (member, "TERMINATED", "RECREATING")
    eventually(
        lambda: (
            _managed(groups)[0].instance_status == "RUNNING" and _managed(groups)[0].current_action == "NONE"
        )
    )


def test_a_template_with_labels_compute_engine_refuses_is_a_400_at_insert(client):
    templates = client(compute_v1.InstanceTemplatesClient)
    properties = {**TEMPLATE["properties"], "labels": {"predictive-pool": "etl.v2"}}
    resource = compute_v1.InstanceTemplate(
        name="bad-template", properties=compute_v1.InstanceProperties.from_json(json.dumps(properties))
    )
    with pytest.raises(exceptions.BadRequest, match="'resource.properties.labels'.*Label value 'etl.v2'"):
        templates.insert(project=PROJECT, instance_template_resource=resource)

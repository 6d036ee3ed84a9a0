"""Instances, disks and operations through the real google-cloud-compute client."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import compute_v1

from tests.gce.conftest import PROJECT, REGION, ZONE, eventually


def _instance(name: str, machine: str = "e2-standard-4", **kwargs) -> compute_v1.Instance:
    return compute_v1.Instance(name=name, machine_type=f"zones/{ZONE}/machineTypes/{machine}", **kwargs)


def _insert(instances, instance: compute_v1.Instance, request_id: str | None = None):
    request = compute_v1.InsertInstanceRequest(project=PROJECT, zone=ZONE, instance_resource=instance)
    if request_id:
        request.request_id = request_id
    return instances.insert(request=request)


def test_instance_boots_through_provisioning_and_staging_to_running(client, control, wait_op):
    control.configure(boot_seconds=0.8)
    instances = client(compute_v1.InstancesClient)
    operation = _insert(instances, _instance("worker-1", labels={"pool": "etl"}))
    seen = []

    def running() -> bool:
        status = instances.get(project=PROJECT, zone=ZONE, instance="worker-1").status
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "RUNNING"

    eventually(running)
    assert seen == ["PROVISIONING", "STAGING", "RUNNING"]
    done = wait_op(operation)
    assert done.status == compute_v1.Operation.Status.DONE
    assert done.operation_type == "insert"
    assert done.target_link.endswith(f"projects/{PROJECT}/zones/{ZONE}/instances/worker-1")
    assert int(done.id) > 0


def test_extended_operation_result_polls_the_emulator(client):
    instances = client(compute_v1.InstancesClient)
    operation = _insert(instances, _instance("worker-1"))
    operation.result(timeout=20)
    assert operation.done()
    assert instances.get(project=PROJECT, zone=ZONE, instance="worker-1").status == "RUNNING"


def test_zone_operation_wait_blocks_until_the_vm_runs(client, control, wait_op):
    control.configure(boot_seconds=0.5)
    instances = client(compute_v1.InstancesClient)
    operation = _insert(instances, _instance("worker-1"))
    assert wait_op(operation).status == compute_v1.Operation.Status.DONE
    assert instances.get(project=PROJECT, zone=ZONE, instance="worker-1").status == "RUNNING"


def test_request_id_makes_a_retried_insert_return_the_same_operation(client, wait_op):
    instances = client(compute_v1.InstancesClient)
    first = _insert(instances, _instance("worker-1"), request_id="6f1c7d2e-0000-4e4b-9a51-000000000001")
    again = _insert(instances, _instance("worker-1"), request_id="6f1c7d2e-0000-4e4b-9a51-000000000001")
    assert again.name == first.name
    assert [i.name for i in instances.list(project=PROJECT, zone=ZONE)] == ["worker-1"]
    with pytest.raises(exceptions.Conflict):
        _insert(instances, _instance("worker-1"), request_id="6f1c7d2e-0000-4e4b-9a51-000000000002")
    wait_op(first)
    after_done = _insert(instances, _instance("worker-1"), request_id="6f1c7d2e-0000-4e4b-9a51-000000000001")
    assert after_done.name == first.name
    assert after_done.status == compute_v1.Operation.Status.DONE


def test_list_filters_on_labels_and_status_and_pages(client, control):
    instances = client(compute_v1.InstancesClient)
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instances=[
            {"name": "etl-1", "machineType": "e2-standard-2", "labels": {"pool": "etl"}},
            {"name": "etl-2", "machineType": "e2-standard-2", "labels": {"pool": "etl"}},
            {"name": "ml-1", "machineType": "n2-standard-8", "labels": {"pool": "ml"}},
        ],
    )

    def names(filter_: str, max_results: int = 500) -> list[str]:
        request = compute_v1.ListInstancesRequest(
            project=PROJECT, zone=ZONE, filter=filter_, max_results=max_results
        )
        return [i.name for i in instances.list(request=request)]

    assert names("labels.pool = etl") == ["etl-1", "etl-2"]
    assert names('(labels.pool = "ml") AND (status = RUNNING)') == ["ml-1"]
    assert names("labels.pool != etl") == ["ml-1"]
    assert names("name = etl-*") == ["etl-1", "etl-2"]
    assert names("labels.pool:*", max_results=1) == ["etl-1", "etl-2", "ml-1"]
    with pytest.raises(exceptions.BadRequest):
        names("labels.pool =")


def test_missing_instance_is_not_found(client):
    with pytest.raises(exceptions.NotFound) as raised:
        client(compute_v1.InstancesClient).get(project=PROJECT, zone=ZONE, instance="nope")
    assert "instances/nope" in raised.value.message


def test_set_machine_type_needs_a_stopped_instance(client, control, wait_op):
    instances = client(compute_v1.InstancesClient)
    control.seed(project=PROJECT, zone=ZONE, instances=[{"name": "worker-1", "machineType": "e2-standard-4"}])
    resize = compute_v1.InstancesSetMachineTypeRequest(
        machine_type=f"zones/{ZONE}/machineTypes/n2-standard-8"
    )
    with pytest.raises(exceptions.BadRequest, match="must be stopped"):
        instances.set_machine_type(
            project=PROJECT,
            zone=ZONE,
            instance="worker-1",
            instances_set_machine_type_request_resource=resize,
        )
    wait_op(instances.stop(project=PROJECT, zone=ZONE, instance="worker-1"))
    assert instances.get(project=PROJECT, zone=ZONE, instance="worker-1").status == "TERMINATED"
    wait_op(
        instances.set_machine_type(
            project=PROJECT,
            zone=ZONE,
            instance="worker-1",
            instances_set_machine_type_request_resource=resize,
        )
    )
    wait_op(instances.start(project=PROJECT, zone=ZONE, instance="worker-1"))
    vm = instances.get(project=PROJECT, zone=ZONE, instance="worker-1")
    assert (vm.status, vm.machine_type.rsplit("/", 1)[-1]) == ("RUNNING", "n2-standard-8")
    quotas = {
        q.metric: q.usage for q in client(compute_v1.RegionsClient).get(project=PROJECT, region=REGION).quotas
    }
    assert quotas["CPUS"] == 8


def test_set_labels_checks_the_label_fingerprint(client, control, wait_op):
    instances = client(compute_v1.InstancesClient)
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instances=[{"name": "w", "machineType": "e2-medium", "labels": {"pool": "etl"}}],
    )
    stale = compute_v1.InstancesSetLabelsRequest(labels={"pool": "ml"}, label_fingerprint="stale")
    with pytest.raises(exceptions.PreconditionFailed):
        instances.set_labels(
            project=PROJECT, zone=ZONE, instance="w", instances_set_labels_request_resource=stale
        )
    fingerprint = instances.get(project=PROJECT, zone=ZONE, instance="w").label_fingerprint
    fresh = compute_v1.InstancesSetLabelsRequest(labels={"pool": "ml"}, label_fingerprint=fingerprint)
    wait_op(
        instances.set_labels(
            project=PROJECT, zone=ZONE, instance="w", instances_set_labels_request_resource=fresh
        )
    )
    assert dict(instances.get(project=PROJECT, zone=ZONE, instance="w").labels) == {"pool": "ml"}


def test_disks_are_created_attached_resized_detached_and_deleted(client, control, wait_op):
    instances, disks = client(compute_v1.InstancesClient), client(compute_v1.DisksClient)
    control.seed(project=PROJECT, zone=ZONE, instances=[{"name": "worker-1", "machineType": "e2-standard-4"}])
    wait_op(
        disks.insert(
            project=PROJECT,
            zone=ZONE,
            disk_resource=compute_v1.Disk(
                name="scratch", size_gb=100, type_=f"zones/{ZONE}/diskTypes/pd-ssd"
            ),
        )
    )
    attach = compute_v1.AttachedDisk(
        source=f"projects/{PROJECT}/zones/{ZONE}/disks/scratch", device_name="scratch"
    )
    wait_op(
        instances.attach_disk(project=PROJECT, zone=ZONE, instance="worker-1", attached_disk_resource=attach)
    )
    with pytest.raises(exceptions.BadRequest, match="already being used"):
        disks.delete(project=PROJECT, zone=ZONE, disk="scratch")
    grow = compute_v1.DisksResizeRequest(size_gb=250)
    wait_op(disks.resize(project=PROJECT, zone=ZONE, disk="scratch", disks_resize_request_resource=grow))
    with pytest.raises(exceptions.BadRequest, match="larger"):
        disks.resize(
            project=PROJECT,
            zone=ZONE,
            disk="scratch",
            disks_resize_request_resource=compute_v1.DisksResizeRequest(size_gb=20),
        )
    vm = instances.get(project=PROJECT, zone=ZONE, instance="worker-1")
    assert {d.device_name: d.disk_size_gb for d in vm.disks}["scratch"] == 250
    disk = disks.get(project=PROJECT, zone=ZONE, disk="scratch")
    assert (disk.size_gb, disk.status, list(disk.users)) == (250, "READY", [vm.self_link])
    quotas = {
        q.metric: q.usage for q in client(compute_v1.RegionsClient).get(project=PROJECT, region=REGION).quotas
    }
    assert quotas["SSD_TOTAL_GB"] == 250
    wait_op(instances.detach_disk(project=PROJECT, zone=ZONE, instance="worker-1", device_name="scratch"))
    wait_op(disks.delete(project=PROJECT, zone=ZONE, disk="scratch"))
    assert [d.name for d in disks.list(project=PROJECT, zone=ZONE)] == ["worker-1"]  # the boot disk


def test_bulk_insert_creates_numbered_spot_instances(client, wait_op):
    instances = client(compute_v1.InstancesClient)
    bulk = compute_v1.BulkInsertInstanceResource(
        count=3,
        name_pattern="spot-###",
        instance_properties=compute_v1.InstanceProperties(
            machine_type="e2-standard-2",
            labels={"pool": "etl"},
            scheduling=compute_v1.Scheduling(provisioning_model="SPOT"),
        ),
    )
    wait_op(instances.bulk_insert(project=PROJECT, zone=ZONE, bulk_insert_instance_resource_resource=bulk))
    listed = list(instances.list(project=PROJECT, zone=ZONE))
    assert [i.name for i in listed] == ["spot-001", "spot-002", "spot-003"]
    assert {i.scheduling.provisioning_model for i in listed} == {"SPOT"}
    quotas = {
        q.metric: q.usage for q in client(compute_v1.RegionsClient).get(project=PROJECT, region=REGION).quotas
    }
    assert (quotas["PREEMPTIBLE_CPUS"], quotas["CPUS"]) == (6, 0)


def test_tier_1_bandwidth_only_on_large_supported_types(client, control, wait_op):
    instances = client(compute_v1.InstancesClient)
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instances=[
            {"name": "big", "machineType": "n2-standard-32"},
            {"name": "small", "machineType": "e2-standard-4"},
        ],
    )
    big = instances.get(project=PROJECT, zone=ZONE, instance="big")
    assert big.network_performance_config.total_egress_bandwidth_tier == "DEFAULT"
    big.network_performance_config.total_egress_bandwidth_tier = "TIER_1"
    request = compute_v1.UpdateInstanceRequest(
        project=PROJECT,
        zone=ZONE,
        instance="big",
        instance_resource=big,
        most_disruptive_allowed_action="RESTART",
    )
    wait_op(instances.update(request=request))
    updated = instances.get(project=PROJECT, zone=ZONE, instance="big")
    assert (updated.network_performance_config.total_egress_bandwidth_tier, updated.status) == (
        "TIER_1",
        "RUNNING",
    )
    small = instances.get(project=PROJECT, zone=ZONE, instance="small")
    small.network_performance_config.total_egress_bandwidth_tier = "TIER_1"
    with pytest.raises(exceptions.BadRequest, match="Tier 1"):
        instances.update(project=PROJECT, zone=ZONE, instance="small", instance_resource=small)


def test_delete_removes_the_vm_and_its_auto_delete_boot_disk(client, control, wait_op):
    instances, disks = client(compute_v1.InstancesClient), client(compute_v1.DisksClient)
    control.seed(project=PROJECT, zone=ZONE, instances=[{"name": "worker-1", "machineType": "e2-standard-4"}])
    operation = instances.delete(project=PROJECT, zone=ZONE, instance="worker-1")
    assert instances.get(project=PROJECT, zone=ZONE, instance="worker-1").status == "STOPPING"
    assert wait_op(operation).operation_type == "delete"
    assert list(instances.list(project=PROJECT, zone=ZONE)) == []
    assert list(disks.list(project=PROJECT, zone=ZONE)) == []


def test_reads_are_served_while_a_wait_is_blocked(client, control):
    import threading

    control.configure(boot_seconds=1.0)
    instances = client(compute_v1.InstancesClient)
    operation = _insert(instances, _instance("worker-1"))
    waited = {}
    waiter = threading.Thread(
        target=lambda: waited.update(
            op=client(compute_v1.ZoneOperationsClient).wait(
                project=PROJECT, zone=ZONE, operation=operation.name
            )
        )
    )
    waiter.start()
    assert instances.get(project=PROJECT, zone=ZONE, instance="worker-1").status in (
        "PROVISIONING",
        "STAGING",
    )
    assert waiter.is_alive()
    waiter.join(timeout=10)
    assert waited["op"].status == compute_v1.Operation.Status.DONE


def test_insert_from_a_source_instance_template_and_reset(client, control, wait_op):
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instanceTemplates=[
            {"name": "tpl", "properties": {"machineType": "n2-standard-4", "labels": {"pool": "ml"}}}
        ],
    )
    instances = client(compute_v1.InstancesClient)
    request = compute_v1.InsertInstanceRequest(
        project=PROJECT,
        zone=ZONE,
        instance_resource=compute_v1.Instance(name="from-tpl"),
        source_instance_template="global/instanceTemplates/tpl",
    )
    wait_op(instances.insert(request=request))
    vm = instances.get(project=PROJECT, zone=ZONE, instance="from-tpl")
    assert (vm.machine_type.rsplit("/", 1)[-1], dict(vm.labels)) == ("n2-standard-4", {"pool": "ml"})
    control.reset()
    assert list(instances.list(project=PROJECT, zone=ZONE)) == []
    assert control.state()["instanceTemplates"] == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "etl.v2-abc"}, "Invalid value for field 'resource.name': 'etl.v2-abc'"),
        ({"name": "9etl-abc"}, "Invalid value for field 'resource.name': '9etl-abc'"),
        ({"name": "e" * 64}, "Invalid value for field 'resource.name'"),
        ({"name": "etl-1\n"}, "Invalid value for field 'resource.name'"),
        ({"name": "etl-1", "labels": {"predictive-pool": "etl.v2"}}, "Label value 'etl.v2' violates"),
        ({"name": "etl-1", "labels": {"predictive-pool": "x" * 64}}, "violates format constraints"),
        ({"name": "etl-1", "labels": {"Pool": "etl"}}, "Label key 'Pool' violates"),
        ({"name": "etl-1", "labels": {"9pool": "etl"}}, "Label key '9pool' violates"),
    ],
)
def test_names_and_labels_compute_engine_refuses_are_a_400_in_googles_shape(gce_emulator_url, body, words):
    import httpx

    url = f"{gce_emulator_url}/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances"
    response = httpx.post(url, json={"machineType": f"zones/{ZONE}/machineTypes/e2-medium", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and words in error["message"]
    assert error["errors"] == [{"message": error["message"], "domain": "global", "reason": "invalid"}]
    assert httpx.get(url).json().get("items", []) == []  # nothing was created


def test_disk_labels_and_set_labels_follow_the_same_rules(client, control):
    instances, disks = client(compute_v1.InstancesClient), client(compute_v1.DisksClient)
    bad = compute_v1.Disk(name="data-1", size_gb=10, labels={"predictive-pool": "etl.v2"})
    with pytest.raises(exceptions.BadRequest, match="Label value 'etl.v2' violates"):
        disks.insert(project=PROJECT, zone=ZONE, disk_resource=bad)
    control.seed(project=PROJECT, zone=ZONE, instances=[{"name": "worker-1", "machineType": "e2-standard-4"}])
    fingerprint = instances.get(project=PROJECT, zone=ZONE, instance="worker-1").label_fingerprint
    request = compute_v1.InstancesSetLabelsRequest(labels={"Team": "etl"}, label_fingerprint=fingerprint)
    with pytest.raises(exceptions.BadRequest, match="Label key 'Team' violates"):
        instances.set_labels(
            project=PROJECT, zone=ZONE, instance="worker-1", instances_set_labels_request_resource=request
        )
    assert dict(instances.get(project=PROJECT, zone=ZONE, instance="worker-1").labels) == {}

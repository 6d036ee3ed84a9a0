"""The only module that knows the Compute Engine API: read a pool's capacity and apply plan actions.

Built on ``google-cloud-compute``. Every mutating call carries a deterministic ``request_id``
derived from the action's request id, so a retried call, a re-run task or a second allocator
run never provisions twice (Compute Engine returns the original operation for a repeated
request id); new instances and disks also get deterministic names, so a repeat is an
``alreadyExists`` that counts as done. 429 and 5xx answers are retried with exponential backoff and
full jitter; zone operations are awaited with a deadline; quota and permission errors become
:class:`QuotaExceeded` / :class:`PermissionDenied` with a message saying what to change.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from airflow_predictive.contracts.capacity import DiskState, InstanceState, PoolState
from airflow_predictive.contracts.machines import MachineType, family_of
from airflow_predictive.contracts.plan import Action, ActionKind, Provisioning, request_id_for
from airflow_predictive.contracts.pools import Backend, CapacityPool
from airflow_predictive.contracts.worker_metadata import metadata_items

log = logging.getLogger(__name__)

POOL_LABEL = "predictive-pool"
T = TypeVar("T")


class ComputeEngineError(RuntimeError):
    """A Compute Engine call failed; the message says which call, on what, and what to do."""


class QuotaExceeded(ComputeEngineError):
    """A regional quota (CPUS, PREEMPTIBLE_CPUS, INSTANCES, DISKS_TOTAL_GB, ...) is exhausted."""


class PermissionDenied(ComputeEngineError):
    """The credentials may not make this call."""


class OperationTimeout(ComputeEngineError):
    """A zone operation did not finish before its deadline (it may still finish: the next cycle sees it)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for 429 and 5xx answers.

    :param attempts: total tries per call.
    :param initial_seconds: first backoff ceiling.
    :param max_seconds: largest backoff ceiling.
    :param multiplier: growth per try.
    """

    attempts: int = 6
    initial_seconds: float = 0.5
    max_seconds: float = 20.0
    multiplier: float = 2.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_seconds, self.initial_seconds * self.multiplier**attempt)
        return rng.uniform(0, ceiling)


def _last(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def _parse_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ComputeEngine:
    """Compute Engine access for one project and zone, in the allocator's vocabulary (pool, capacity, action).

    :param project: project id.
    :param zone: zone, e.g. ``us-central1-a``.
    :param credentials: google-auth credentials (None: Application Default Credentials, or anonymous
        for an emulator endpoint).
    :param endpoint: base URL of a Compute Engine emulator (``http://127.0.0.1:PORT``); None for Google.
    :param operation_timeout: seconds to wait for one zone operation.
    :param retry: backoff policy for 429/5xx.
    :param sleep: sleep function (tests may pass a fast one).
    :param seed: jitter seed (None: random).
    """

    def __init__(
        self,
        project: str,
        zone: str,
        *,
        credentials: Any = None,
        endpoint: str | None = None,
        operation_timeout: float = 600.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.project = project
        self.zone = zone
        self.credentials = credentials
        self.endpoint = endpoint or None
        self.operation_timeout = operation_timeout
        self.retry = retry
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._clients: dict[str, Any] = {}
        self._machine_types: dict[str, MachineType] = {}
        self.calls = 0  # API calls made (retries included), for metrics and tests

    def __repr__(self) -> str:  # never shows credentials
        where = self.endpoint or "compute.googleapis.com"
        return f"ComputeEngine(project={self.project!r}, zone={self.zone!r}, endpoint={where!r})"

    # ----------------------------------------------------------------- clients

    def _client(self, name: str) -> Any:
        if name not in self._clients:
            from google.cloud import compute_v1

            cls = getattr(compute_v1, name)
            if self.endpoint:
                from google.auth.credentials import AnonymousCredentials

                parts = urlsplit(self.endpoint)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise ComputeEngineError(
                        f"emulator_url {self.endpoint!r} must look like http://127.0.0.1:PORT"
                    )
                transport = cls.get_transport_class("rest")(
                    host=parts.netloc,
                    url_scheme=parts.scheme,
                    credentials=self.credentials or AnonymousCredentials(),
                )
                self._clients[name] = cls(transport=transport)
            else:
                self._clients[name] = cls(credentials=self.credentials)
        return self._clients[name]

    @property
    def instances(self) -> Any:
        return self._client("InstancesClient")

    @property
    def groups(self) -> Any:
        return self._client("InstanceGroupManagersClient")

    @property
    def disks(self) -> Any:
        return self._client("DisksClient")

    @property
    def operations(self) -> Any:
        return self._client("ZoneOperationsClient")

    # ----------------------------------------------------------------- calls, retries, operations

    def _call(self, what: str, fn: Callable[[], T], *, ok_codes: tuple[int, ...] = ()) -> T | None:
        """Run one API call with retries on 429, 5xx and connection errors; None on an ``ok_codes`` status."""
        from google.api_core import exceptions as gexc

        connection_errors = _connection_errors()
        attempt = 0
        while True:
            self.calls += 1
            try:
                return fn()
            except gexc.GoogleAPICallError as exc:
                code = int(exc.code or 0) if isinstance(exc.code, int) else _http_code(exc)
                if code in ok_codes:
                    log.info("%s: %s (already in the wanted state)", what, exc.__class__.__name__)
                    return None
                if not (code == 429 or code >= 500) or attempt + 1 >= self.retry.attempts:
                    raise _map_error(what, code, str(exc.message or exc), self.project, self.zone) from None
                reason = f"HTTP {code}"
            except connection_errors as exc:
                # a reset connection, a refused port or a timeout: as transient as a 503
                if attempt + 1 >= self.retry.attempts:
                    raise ComputeEngineError(
                        f"{what}: cannot reach Compute Engine at {self.endpoint or 'compute.googleapis.com'} "
                        f"after {attempt + 1} attempts: {exc.__class__.__name__}: {str(exc)[:200]}"
                    ) from None
                reason = exc.__class__.__name__
            pause = self.retry.backoff(attempt, self._rng)
            log.warning("%s: %s, retry %d in %.2fs", what, reason, attempt + 1, pause)
            self._sleep(pause)
            attempt += 1

    def wait(self, operation: Any, what: str, timeout: float | None = None) -> None:
        """Wait for a zone operation to be DONE within ``timeout`` seconds; raise its error, mapped."""
        if operation is None:
            return
        name = getattr(operation, "name", "") or ""
        deadline = time.monotonic() + (timeout if timeout is not None else self.operation_timeout)
        result = getattr(operation, "_extended_operation", operation)
        while not _is_done(result):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationTimeout(
                    f"{what}: operation {name} not done after {timeout or self.operation_timeout:.0f}s; the next "
                    "allocation cycle will see its outcome"
                )
            result = self._call(
                f"{what} (wait {name})",
                lambda: self._do(
                    self.operations.wait, project=self.project, zone=self.zone, operation=name, timeout=60
                ),
            )
        error = getattr(result, "error", None)
        errors = list(getattr(error, "errors", []) or [])
        if errors:
            first = errors[0]
            code = str(getattr(first, "code", ""))
            message = str(getattr(first, "message", ""))
            http = int(getattr(result, "http_error_status_code", 0) or 0)
            if "QUOTA" in code.upper():
                raise QuotaExceeded(_quota_message(what, message, self.project, self.zone))
            raise ComputeEngineError(f"{what}: operation {name} failed with {code} (HTTP {http}): {message}")

    # ----------------------------------------------------------------- reading capacity

    def machine_type(self, name: str) -> MachineType:
        """vCPUs and memory of a machine type from ``machineTypes.get`` (cached per process)."""
        if name not in self._machine_types:
            client = self._client("MachineTypesClient")
            found = self._call(
                f"machineTypes.get {name}",
                lambda: self._do(client.get, project=self.project, zone=self.zone, machine_type=name),
            )
            self._machine_types[name] = MachineType(
                name, float(found.guest_cpus), round(found.memory_mb / 1024.0, 3), family_of(name)
            )
        return self._machine_types[name]

    def pool_state(self, pool: CapacityPool) -> PoolState:
        """Read the pool's capacity: MIG target sizes, instances (labels, status, spot, tier), data disks."""
        observed = datetime.now().astimezone()
        target_sizes: dict[str, int] = {}
        members: dict[str, str] = {}
        if pool.backend is Backend.MANAGED_INSTANCE_GROUP:
            for group in (pool.group, pool.spot_group):
                if not group:
                    continue
                igm = self._call(
                    f"instanceGroupManagers.get {group}",
                    lambda g=group: self._do(
                        self.groups.get, project=self.project, zone=self.zone, instance_group_manager=g
                    ),
                )
                target_sizes[group] = int(igm.target_size)
                managed = self._call(
                    f"instanceGroupManagers.listManagedInstances {group}",
                    lambda g=group: list(
                        self._do(
                            self.groups.list_managed_instances,
                            project=self.project,
                            zone=self.zone,
                            instance_group_manager=g,
                        )
                    ),
                )
                for item in managed or []:
                    if item.instance:
                        members[_last(item.instance)] = group
            listed = self._call(
                "instances.list",
                lambda: list(self._do(self.instances.list, project=self.project, zone=self.zone)),
            )
            raw = [i for i in listed or [] if i.name in members]
        else:
            raw = (
                self._call(
                    f"instances.list {POOL_LABEL}={pool.name}",
                    lambda: list(
                        self._do(
                            self.instances.list,
                            project=self.project,
                            zone=self.zone,
                            filter=f"labels.{POOL_LABEL} = {pool.name}",
                        )
                    ),
                )
                or []
            )
        instances = tuple(
            InstanceState(
                name=i.name,
                status=str(i.status),
                provisioning=Provisioning.SPOT
                if (i.scheduling.provisioning_model == "SPOT" or i.scheduling.preemptible)
                else Provisioning.STANDARD,
                machine_type=_last(i.machine_type),
                labels=dict(i.labels),
                created=_parse_time(i.creation_timestamp),
                group=members.get(i.name, ""),
                tier_1=i.network_performance_config.total_egress_bandwidth_tier == "TIER_1",
                internal_ips=tuple(n.network_i_p for n in i.network_interfaces if n.network_i_p),
            )
            for i in raw
        )
        disks_raw = (
            self._call(
                f"disks.list {POOL_LABEL}={pool.name}",
                lambda: list(
                    self._do(
                        self.disks.list,
                        project=self.project,
                        zone=self.zone,
                        filter=f"labels.{POOL_LABEL} = {pool.name}",
                    )
                ),
            )
            or []
        )
        disks = tuple(
            DiskState(d.name, float(d.size_gb), _last(d.users[0]) if d.users else "") for d in disks_raw
        )
        return PoolState(instances=instances, target_sizes=target_sizes, disks=disks, observed_at=observed)

    def instance_status(self, name: str) -> str | None:
        """One VM's status now (``instances.get``); None when it no longer exists.

        The release protocol reads it at the delete: a VM that was booting at the plan may run a
        worker by then.
        """
        found = self._call(
            f"instances.get {name}",
            lambda: self._do(self.instances.get, project=self.project, zone=self.zone, instance=name),
            ok_codes=(404,),
        )
        return None if found is None else str(found.status)

    # ----------------------------------------------------------------- applying actions

    def apply(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        """Apply one action and wait for it; returns details for the ledger (operations, names).

        :param action: a planned action.
        :param pool: its pool.
        """
        handlers = {
            ActionKind.RESIZE_GROUP: self._resize_group,
            ActionKind.LAUNCH_INSTANCES: self._launch,
            ActionKind.RESIZE_INSTANCE: self._resize_instance,
            ActionKind.ALLOCATE_STORAGE: self._storage,
            ActionKind.RAISE_BANDWIDTH: self._bandwidth,
            ActionKind.RELEASE: self._release,
        }
        return handlers[ActionKind(action.kind)](action, pool)

    @staticmethod
    def _do(method: Callable[..., T], **fields: Any) -> T:
        """Call a client method with a request mapping: flattened arguments lack request_id and filter."""
        timeout = fields.pop("timeout", None)
        if timeout is not None:
            return method(request=fields, timeout=timeout, retry=None)
        # retry=None: the client's own default retry (up to 10 minutes of 503s on reads) would hide
        # errors from _call, whose policy is the one the pool's cycle is budgeted for
        return method(request=fields, retry=None)

    def _rid(self, action: Action, *step: object) -> str:
        return request_id_for(action.request_id, *step) if step else action.request_id

    def _resize_group(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        group, size = action.target, int(action.amount)
        what = f"resize group {group} to {size}"
        op = self._call(
            what,
            lambda: self._do(
                self.groups.resize,
                project=self.project,
                zone=self.zone,
                instance_group_manager=group,
                size=size,
                request_id=self._rid(action),
            ),
        )
        self.wait(op, what)
        return {"operation": getattr(op, "name", "")}

    def _instance_body(self, name: str, action: Action, pool: CapacityPool) -> Any:
        from google.cloud import compute_v1

        labels = {POOL_LABEL: pool.name, "predictive-request": action.request_id[:8]}
        body = compute_v1.Instance(name=name, labels=labels)
        if not pool.launch.source_instance_template:
            body.machine_type = f"zones/{self.zone}/machineTypes/{pool.machine_type}"
            body.disks = [
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=pool.launch.source_image, disk_size_gb=20
                    ),
                )
            ]
            body.network_interfaces = [compute_v1.NetworkInterface(network=pool.launch.network)]
            # what the VM's startup script reads to serve the pool's queue (a template carries its own)
            body.metadata = compute_v1.Metadata(
                items=[
                    compute_v1.Items(key=i["key"], value=i["value"])
                    for i in metadata_items([pool.queue_name], pool.slots_per_instance)
                ]
            )
        if action.provisioning == Provisioning.SPOT:
            body.scheduling = compute_v1.Scheduling(
                provisioning_model="SPOT", instance_termination_action="DELETE", automatic_restart=False
            )
        return body

    def _launch(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        names = list(action.details.get("names") or [])
        if len(names) != int(action.amount):
            raise ComputeEngineError(
                f"launch_instances {action.request_id}: {len(names)} names for {action.amount} VMs"
            )
        created, existing, ops = [], [], []
        for index, name in enumerate(names):
            what = f"insert instance {name} ({action.provisioning})"
            kwargs: dict[str, Any] = {
                "project": self.project,
                "zone": self.zone,
                "instance_resource": self._instance_body(name, action, pool),
                "request_id": self._rid(action, index),
            }
            if pool.launch.source_instance_template:
                kwargs["source_instance_template"] = pool.launch.source_instance_template
            op = self._call(what, lambda kw=kwargs: self._do(self.instances.insert, **kw), ok_codes=(409,))
            (existing if op is None else created).append(name)
            ops.append((op, what))
        for op, what in ops:
            self.wait(op, what)
        return {"requested": created, "already_existed": existing}

    def _stop_change_start(self, action: Action, instance: str, change: Callable[[], Any], what: str) -> None:
        """Stop an (idle) VM, change it, start it again: machine type and Tier_1 need a stopped VM."""
        op = self._call(
            f"stop {instance}",
            lambda: self._do(
                self.instances.stop,
                project=self.project,
                zone=self.zone,
                instance=instance,
                request_id=self._rid(action, "stop"),
            ),
        )
        self.wait(op, f"stop {instance}")
        op = self._call(what, change)
        self.wait(op, what)
        op = self._call(
            f"start {instance}",
            lambda: self._do(
                self.instances.start,
                project=self.project,
                zone=self.zone,
                instance=instance,
                request_id=self._rid(action, "start"),
            ),
        )
        self.wait(op, f"start {instance}")

    def _set_machine_type(self, action: Action, instance: str, machine_type: str) -> None:
        from google.cloud import compute_v1

        current = self._call(
            f"get {instance}",
            lambda: self._do(self.instances.get, project=self.project, zone=self.zone, instance=instance),
        )
        if _last(current.machine_type) == machine_type:
            return  # a re-run after success
        body = compute_v1.InstancesSetMachineTypeRequest(
            machine_type=f"zones/{self.zone}/machineTypes/{machine_type}"
        )
        self._stop_change_start(
            action,
            instance,
            lambda: self._do(
                self.instances.set_machine_type,
                project=self.project,
                zone=self.zone,
                instance=instance,
                instances_set_machine_type_request_resource=body,
                request_id=self._rid(action, "set-machine-type"),
            ),
            f"set machine type of {instance} to {machine_type}",
        )

    def _resize_instance(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        machine_type = str(action.details["machine_type"])
        self._set_machine_type(action, action.target, machine_type)
        return {"machine_type": machine_type}

    def _bandwidth(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        from google.cloud import compute_v1

        instance = action.target
        if "machine_type" in action.details:
            self._set_machine_type(action, instance, str(action.details["machine_type"]))
            return {"machine_type": action.details["machine_type"]}
        current = self._call(
            f"get {instance}",
            lambda: self._do(self.instances.get, project=self.project, zone=self.zone, instance=instance),
        )
        if current.network_performance_config.total_egress_bandwidth_tier == "TIER_1":
            return {"tier": "TIER_1", "already": True}
        current.network_performance_config = compute_v1.NetworkPerformanceConfig(
            total_egress_bandwidth_tier="TIER_1"
        )
        self._stop_change_start(
            action,
            instance,
            lambda: self._do(
                self.instances.update,
                project=self.project,
                zone=self.zone,
                instance=instance,
                instance_resource=current,
                request_id=self._rid(action, "update"),
            ),
            f"set Tier_1 networking on {instance}",
        )
        return {"tier": "TIER_1"}

    def _storage(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        from google.cloud import compute_v1

        details = action.details
        disk, size = str(details["disk"]), int(details["size_gib"])
        if details.get("grow"):
            what = f"resize disk {disk} to {size} GiB"
            op = self._call(
                what,
                lambda: self._do(
                    self.disks.resize,
                    project=self.project,
                    zone=self.zone,
                    disk=disk,
                    disks_resize_request_resource=compute_v1.DisksResizeRequest(size_gb=size),
                    request_id=self._rid(action),
                ),
            )
            self.wait(op, what)
            return {"disk": disk, "size_gib": size}
        what = f"create disk {disk} ({size} GiB {details.get('disk_type', 'pd-balanced')})"
        body = compute_v1.Disk(
            name=disk,
            size_gb=size,
            type_=f"zones/{self.zone}/diskTypes/{details.get('disk_type', 'pd-balanced')}",
            labels={POOL_LABEL: pool.name},
        )
        op = self._call(
            what,
            lambda: self._do(
                self.disks.insert,
                project=self.project,
                zone=self.zone,
                disk_resource=body,
                request_id=self._rid(action),
            ),
            ok_codes=(409,),
        )
        self.wait(op, what)
        attach_to = str(details.get("attach_to") or "")
        if attach_to:
            current = self._call(
                f"get disk {disk}",
                lambda: self._do(self.disks.get, project=self.project, zone=self.zone, disk=disk),
            )
            if not list(current.users):
                what = f"attach disk {disk} to {attach_to}"
                attached = compute_v1.AttachedDisk(
                    source=f"projects/{self.project}/zones/{self.zone}/disks/{disk}",
                    device_name=disk,
                    auto_delete=False,
                )
                op = self._call(
                    what,
                    lambda: self._do(
                        self.instances.attach_disk,
                        project=self.project,
                        zone=self.zone,
                        instance=attach_to,
                        attached_disk_resource=attached,
                        request_id=self._rid(action, "attach"),
                    ),
                )
                self.wait(op, what)
        return {"disk": disk, "size_gib": size, "attached_to": attach_to}

    def _release(self, action: Action, pool: CapacityPool) -> dict[str, Any]:
        from google.cloud import compute_v1

        name = action.target
        group = str(action.details.get("group") or "")
        if group:
            what = f"delete {name} from group {group}"
            body = compute_v1.InstanceGroupManagersDeleteInstancesRequest(
                instances=[f"zones/{self.zone}/instances/{name}"], skip_instances_on_validation_error=True
            )
            op = self._call(
                what,
                lambda: self._do(
                    self.groups.delete_instances,
                    project=self.project,
                    zone=self.zone,
                    instance_group_manager=group,
                    instance_group_managers_delete_instances_request_resource=body,
                    request_id=self._rid(action),
                ),
                ok_codes=(404,),
            )
        else:
            what = f"delete instance {name}"
            op = self._call(
                what,
                lambda: self._do(
                    self.instances.delete,
                    project=self.project,
                    zone=self.zone,
                    instance=name,
                    request_id=self._rid(action),
                ),
                ok_codes=(404,),
            )
        self.wait(op, what)
        return {"released": name, "already_gone": op is None}


def _connection_errors() -> tuple[type[BaseException], ...]:
    import requests
    from google.auth import exceptions as auth_exc

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout, auth_exc.TransportError)


def _is_done(result: Any) -> bool:
    status = getattr(result, "status", None)
    return getattr(status, "name", str(status)) == "DONE"


def _http_code(exc: Any) -> int:
    response = getattr(exc, "response", None)
    return int(getattr(response, "status_code", 0) or 0)


def _quota_message(what: str, message: str, project: str, zone: str) -> str:
    return (
        f"{what}: Compute Engine quota exceeded in project {project} ({zone}): {message}. Request a quota "
        "increase (IAM & Admin > Quotas) or lower the pool's max_instances / machine type"
    )


def _map_error(what: str, code: int, message: str, project: str, zone: str) -> ComputeEngineError:
    if code == 403 and "quota" in message.lower():
        return QuotaExceeded(_quota_message(what, message, project, zone))
    if code in (401, 403):
        return PermissionDenied(
            f"{what}: permission denied in project {project}: {message}. Grant the connection's service account "
            "roles/compute.instanceAdmin.v1 (and roles/iam.serviceAccountUser if VMs run as a service account)"
        )
    if code == 404:
        return ComputeEngineError(f"{what}: not found in {project}/{zone}: {message}. Check the pool's names")
    return ComputeEngineError(f"{what}: HTTP {code}: {message}")

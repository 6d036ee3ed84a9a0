"""The emulated Compute Engine project: resources, long-running operations, boot timeline, quotas.

Plain Python with no HTTP: ``emulator.py`` maps REST calls onto these methods. Time-driven changes
(PROVISIONING -> STAGING -> RUNNING, operations becoming DONE, managed instance groups reconciling)
are stored as dated events and applied lazily under one lock whenever anything reads or writes, so
the state stays a plain JSON document that can be persisted and reloaded.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import random
import re
import string
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_predictive_tools.emulator.filter import FilterError, matches
from airflow_predictive_tools.emulator.machine_types import DEFAULT_TIER, MACHINE_TYPES, TIER_1

LINK_PREFIX = "https://www.googleapis.com/compute/v1/"

ZONES: dict[str, list[str]] = {
    "us-central1": ["a", "b", "c", "f"],
    "us-east1": ["b", "c", "d"],
    "us-west1": ["a", "b", "c"],
    "europe-west1": ["b", "c", "d"],
    "europe-west4": ["a", "b", "c"],
    "asia-southeast1": ["a", "b", "c"],
}

DEFAULT_QUOTAS: dict[str, float] = {
    "CPUS": 96,
    "PREEMPTIBLE_CPUS": 96,
    "INSTANCES": 200,
    "DISKS_TOTAL_GB": 4096,
    "SSD_TOTAL_GB": 2048,
}

DEFAULT_CONFIG: dict[str, float] = {
    "boot_seconds": 1.0,  # PROVISIONING -> RUNNING; STAGING starts at 40 %
    "stop_seconds": 0.3,  # STOPPING -> TERMINATED (stop, delete, MIG scale-in)
    "operation_seconds": 0.05,  # metadata-only operations (labels, disks, resize requests)
    "wait_timeout_seconds": 120.0,  # zoneOperations.wait returns after at most this long, like Google
    "recreate_seconds": 1.0,  # a preempted MIG member is recreated after this long
}

MAX_OPERATIONS = 5000  # finished operations kept (oldest dropped first, with their request ids)

_REASONS = {
    400: "invalid",
    403: "forbidden",
    404: "notFound",
    409: "alreadyExists",
    412: "conditionNotMet",
    429: "rateLimitExceeded",
    500: "backendError",
    503: "backendError",
    504: "backendError",
}
_HTTP_STATUS_TEXT = {
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    500: "INTERNAL_SERVER_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Compute Engine's label rules (without the international characters it also allows).
_LABEL_KEY = re.compile(r"[a-z][-_a-z0-9]{0,62}")
_LABEL_VALUE = re.compile(r"[-_a-z0-9]{0,63}")
MAX_LABELS = 64
_CUSTOM_TYPE = re.compile(r"^(?:(?P<family>[a-z0-9]+)-)?custom-(?P<cpus>\d+)-(?P<mb>\d+)(?:-ext)?$")
_BOOTING = ("PROVISIONING", "STAGING")


class ApiError(Exception):
    """An error Compute Engine returns synchronously, rendered in Google's JSON error shape."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "backendError")

    def body(self) -> dict[str, Any]:
        """Return ``{"error": {...}}`` as googleapis.com sends it."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }


def not_found(path: str) -> ApiError:
    return ApiError(404, f"The resource '{path}' was not found")


def _now_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fingerprint(value: Any) -> str:
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _last(segment_or_url: str) -> str:
    return segment_or_url.rstrip("/").rsplit("/", 1)[-1]


def relative_path(url_or_path: str) -> str:
    """Return ``projects/...`` from a full resource URL or a partial path.

    :param url_or_path: self link, ``projects/p/zones/z/disks/d`` or ``zones/z/disks/d`` (project implied).
    """
    index = url_or_path.find("projects/")
    return url_or_path[index:] if index >= 0 else url_or_path.lstrip("/")


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def machine_type_shape(name: str) -> tuple[int, int] | None:
    """Return ``(guest_cpus, memory_mb)`` for a catalogue or custom machine type, None if unknown.

    :param name: machine type name or URL.
    """
    name = _last(name)
    if name in MACHINE_TYPES:
        return MACHINE_TYPES[name].guest_cpus, MACHINE_TYPES[name].memory_mb
    match = _CUSTOM_TYPE.match(name)
    if match:
        return int(match["cpus"]), int(match["mb"])
    return None


def _is_spot(instance: dict[str, Any]) -> bool:
    scheduling = instance.get("scheduling", {})
    return scheduling.get("provisioningModel") == "SPOT" or bool(scheduling.get("preemptible"))


def _cpu_metric(instance: dict[str, Any]) -> str:
    """The regional quota an instance's vCPUs count against (Spot VMs have their own)."""
    return "PREEMPTIBLE_CPUS" if _is_spot(instance) else "CPUS"


def _disk_metric(disk: dict[str, Any]) -> str:
    """The regional quota a disk's size counts against (every type but pd-standard is SSD-backed)."""
    return "DISKS_TOTAL_GB" if _last(disk["type"]) == "pd-standard" else "SSD_TOTAL_GB"


def _machine_type_link(project: str, zone: str, machine: str) -> str:
    return f"{LINK_PREFIX}projects/{project}/zones/{zone}/machineTypes/{machine}"


def _invalid_name(name: str) -> ApiError:
    return ApiError(
        400,
        f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'",
    )


def _checked_labels(labels: Any, field: str = "resource.labels") -> dict[str, str]:
    """The labels as given, or the 400 Compute Engine answers for a key or value it does not accept."""
    labels = dict(labels or {})
    if len(labels) > MAX_LABELS:
        raise ApiError(
            400, f"Invalid value for field '{field}': ''. A resource can have at most {MAX_LABELS} labels."
        )
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise ApiError(
                400,
                f"Invalid value for field '{field}': ''. Label key '{key}' violates format constraints. "
                "The key must start with a lowercase character, can only contain lowercase letters, "
                "numeric characters, underscores and dashes. The key can be at most 63 characters long.",
            )
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise ApiError(
                400,
                f"Invalid value for field '{field}': ''. Label value '{value}' violates format constraints. "
                "The value can only contain lowercase letters, numeric characters, underscores and dashes. "
                "The value can be at most 63 characters long.",
            )
    return labels


def _unknown_machine_type(given: str, machine: str, zone: str) -> ApiError:
    return ApiError(
        400,
        f"Invalid value for field 'resource.machineType': '{given}'. "
        f"Machine type with name '{machine}' does not exist in zone '{zone}'.",
    )


def _disk_in_use(disk_path: str, disk: dict[str, Any]) -> ApiError:
    return ApiError(
        400,
        f"The disk resource '{disk_path}' is already being used by '{relative_path(disk['users'][0])}'",
        "resourceInUseByAnotherResource",
    )


def _attached_disk(
    spec: dict[str, Any],
    disk_path: str,
    *,
    device: str,
    index: int,
    boot: bool,
    auto_delete: bool,
    size_gb: str,
) -> dict[str, Any]:
    """Return an instance's ``compute#attachedDisk`` entry; ``spec`` is the requested AttachedDisk JSON."""
    return {
        "kind": "compute#attachedDisk",
        "type": "PERSISTENT",
        "mode": spec.get("mode", "READ_WRITE"),
        "source": LINK_PREFIX + disk_path,
        "deviceName": device,
        "index": index,
        "boot": boot,
        "autoDelete": auto_delete,
        "interface": spec.get("interface", "SCSI"),
        "diskSizeGb": size_gb,
    }


class ComputeEngineState:
    """One emulated Compute Engine (all projects), safe to call from many threads.

    :param config: overrides of DEFAULT_CONFIG (``boot_seconds``, ``stop_seconds``, ...).
    :param quotas: overrides of DEFAULT_QUOTAS applied to every region.
    :param state_file: JSON file to persist to after every change and to reload from when it exists.
    :param clock: seconds since the epoch; injectable for tests.
    """

    def __init__(
        self,
        config: dict[str, float] | None = None,
        quotas: dict[str, float] | None = None,
        state_file: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._clock = clock
        self._state_file = Path(state_file) if state_file else None
        self._dirty = False
        self._closed = False
        self._data = self._empty()
        if self._state_file and self._state_file.exists() and self._state_file.stat().st_size:
            try:
                loaded = json.loads(self._state_file.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"state file {self._state_file} is not valid JSON ({exc}): fix or delete it"
                ) from exc
            self._data.update(loaded)
        unknown = set(config or {}) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown emulator settings {sorted(unknown)}: use {sorted(DEFAULT_CONFIG)}")
        self._data["config"].update(config or {})
        self._data["default_quotas"].update(quotas or {})

    # ---------------------------------------------------------------- plumbing

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {
            "version": 1,
            "next_id": 1_000_000_000_000_000,
            "seq": 0,
            "resources": {},
            "meta": {},
            "operations": {},
            "events": [],
            "request_ids": {},
            "config": dict(DEFAULT_CONFIG),
            "default_quotas": dict(DEFAULT_QUOTAS),
            "quotas": {},
            "faults": [],
        }

    @contextmanager
    def _txn(self) -> Iterator[float]:
        with self._cond:
            now = self._clock()
            self._advance(now)
            yield now
            if self._dirty:
                self._dirty = False
                self._save()
                self._cond.notify_all()

    def _save(self) -> None:
        if not self._state_file:
            return
        directory = self._state_file.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self._state_file.name}.", dir=directory)
        with os.fdopen(fd, "w") as handle:
            json.dump(self._data, handle)
        os.replace(tmp, self._state_file)

    def _next_id(self) -> str:
        self._data["next_id"] += random.randint(1, 997)
        return str(self._data["next_id"])

    def _cfg(self, key: str) -> float:
        return float(self._data["config"][key])

    def _schedule(self, at: float, event: dict[str, Any]) -> None:
        self._data["seq"] += 1
        self._data["events"].append([at, self._data["seq"], event])
        self._data["events"].sort(key=lambda e: (e[0], e[1]))
        self._dirty = True

    def _schedule_status(self, at: float, path: str, status: str) -> None:
        # Tagged with the instance's generation: a later stop, start or preemption voids the change.
        self._schedule(
            at, {"type": "status", "path": path, "gen": self._data["meta"][path]["gen"], "status": status}
        )

    def _advance(self, now: float) -> None:
        events = self._data["events"]
        while events and events[0][0] <= now:
            at, _, event = events.pop(0)
            self._apply(event, at)
            self._dirty = True
        for path in [p for p in self._data["resources"] if "/instanceGroupManagers/" in p]:
            self._reconcile_group(path, now)

    def _apply(self, event: dict[str, Any], at: float) -> None:
        kind = event["type"]
        if kind == "op_done":
            op = self._data["operations"].get(event["path"])
            if op and op["status"] != "DONE":
                self._finish_operation(op, at, event.get("error"))
            return
        path = event["path"]
        resource = self._data["resources"].get(path)
        if kind == "disk_ready":
            if resource is not None:
                resource["status"] = "READY"
            return
        meta = self._data["meta"].get(path, {})
        if resource is None or meta.get("gen") != event.get("gen"):
            return  # the instance changed since the event was scheduled (deleted, stopped, preempted)
        if kind == "status":
            resource["status"] = event["status"]
            if event["status"] == "RUNNING":
                resource["lastStartTimestamp"] = _now_iso(at)
                resource.pop("statusMessage", None)
                meta.pop("recreating", None)
            elif event["status"] == "TERMINATED":
                resource["lastStopTimestamp"] = _now_iso(at)
        elif kind == "remove":
            self._remove_instance(path)
        elif kind == "recreate" and resource["status"] == "TERMINATED":
            meta["recreating"] = True
            self._boot(path, at)

    # ---------------------------------------------------------------- operations

    def _operation(
        self,
        now: float,
        scope: str,
        op_type: str,
        target: str,
        *,
        done_at: float | None,
        error: dict[str, Any] | None = None,
        target_id: str | None = None,
    ) -> dict[str, Any]:
        project = target.split("/")[1]
        name = f"operation-{int(now * 1000)}-{''.join(random.choices('0123456789abcdef', k=13))}-{''.join(random.choices('0123456789abcdef', k=8))}"
        path = f"projects/{project}/{scope}/operations/{name}"
        op: dict[str, Any] = {
            "kind": "compute#operation",
            "id": self._next_id(),
            "name": name,
            "operationType": op_type,
            "targetLink": LINK_PREFIX + target,
            "targetId": target_id or str(self._data["meta"].get(target, {}).get("id", "0")),
            "status": "RUNNING",
            "user": "emulator@airflow-predictive.local",
            "progress": 0,
            "insertTime": _now_iso(now),
            "startTime": _now_iso(now),
            "selfLink": LINK_PREFIX + path,
        }
        if scope.startswith("zones/"):
            op["zone"] = f"{LINK_PREFIX}projects/{project}/{scope}"
        elif scope.startswith("regions/"):
            op["region"] = f"{LINK_PREFIX}projects/{project}/{scope}"
        self._data["operations"][path] = op
        self._prune_operations()
        if error is not None or done_at is None or done_at <= now:
            self._finish_operation(op, now, error)
        else:
            self._schedule(done_at, {"type": "op_done", "path": path})
        self._dirty = True
        return op

    def _prune_operations(self) -> None:
        # Google keeps finished operations for a while, not forever; a long demo must not grow without bound.
        operations = self._data["operations"]
        if len(operations) <= MAX_OPERATIONS:
            return
        done = [p for p, op in operations.items() if op["status"] == "DONE"]
        for path in done[: len(operations) - MAX_OPERATIONS]:
            del operations[path]
        kept = set(operations)
        self._data["request_ids"] = {k: v for k, v in self._data["request_ids"].items() if v in kept}

    def _metadata_operation(
        self, now: float, scope: str, op_type: str, target: str, target_id: str | None = None
    ) -> dict[str, Any]:
        """An Operation that only changes stored fields: DONE after ``operation_seconds``."""
        return self._operation(
            now, scope, op_type, target, done_at=now + self._cfg("operation_seconds"), target_id=target_id
        )

    @staticmethod
    def _finish_operation(op: dict[str, Any], at: float, error: dict[str, Any] | None) -> None:
        op["status"] = "DONE"
        op["progress"] = 100
        op["endTime"] = _now_iso(at)
        if error:
            status = int(error.get("http_status", 400))
            op["error"] = {
                "errors": [
                    {"code": error.get("code", "ERROR"), "message": error.get("message", "Operation failed")}
                ]
            }
            op["httpErrorStatusCode"] = status
            op["httpErrorMessage"] = error.get("http_message", _HTTP_STATUS_TEXT.get(status, "ERROR"))

    def mutate(
        self,
        project: str,
        request_id: str | None,
        run: Callable[[float], dict[str, Any]],
        *,
        forced_error: dict[str, Any] | None = None,
        forced_scope: str = "global",
        forced_target: str = "",
        forced_type: str = "",
    ) -> dict[str, Any]:
        """Run one mutating call and return its Operation, honouring requestId de-duplication.

        :param project: project id (request ids are scoped per project).
        :param request_id: the client's ``requestId``; a repeat returns the first Operation unchanged.
        :param run: does the work under the lock and returns the Operation (receives ``now``).
        :param forced_error: injected fault: return a failed Operation without doing the work.
        :param forced_scope: operation scope (``zones/z``, ``regions/r``, ``global``) for forced_error.
        :param forced_target: target path for forced_error.
        :param forced_type: operationType for forced_error.
        """
        with self._txn() as now:
            key = f"{project}|{request_id}" if request_id else None
            if key and key in self._data["request_ids"]:
                op = self._data["operations"].get(self._data["request_ids"][key])
                if op is not None:
                    return copy.deepcopy(op)
            if forced_error is not None:
                op = self._operation(
                    now, forced_scope, forced_type, forced_target, done_at=None, error=forced_error
                )
            else:
                op = run(now)
            if key:
                self._data["request_ids"][key] = relative_path(op["selfLink"])
                self._dirty = True
            return copy.deepcopy(op)

    def get_operation(self, path: str) -> dict[str, Any]:
        """Return an Operation by path.

        :param path: ``projects/p/zones/z/operations/name`` (or regions/global).
        """
        with self._txn():
            op = self._data["operations"].get(path)
            if op is None:
                raise not_found(path)
            return copy.deepcopy(op)

    def wait_operation(self, path: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until an Operation is DONE or the deadline passes, then return it (like ``wait``).

        :param path: operation path.
        :param timeout: seconds; defaults to ``wait_timeout_seconds`` (Google: 2 minutes).
        """
        deadline = time.monotonic() + (self._cfg("wait_timeout_seconds") if timeout is None else timeout)
        with self._cond:
            while True:
                with self._txn():
                    op = self._data["operations"].get(path)
                    if op is None:
                        raise not_found(path)
                    if op["status"] == "DONE" or self._closed:
                        return copy.deepcopy(op)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return copy.deepcopy(op)
                events = self._data["events"]
                until_next = events[0][0] - self._clock() if events else remaining
                self._cond.wait(max(0.005, min(remaining, until_next, 0.25)))

    def delete_operation(self, path: str) -> None:
        with self._txn():
            if self._data["operations"].pop(path, None) is None:
                raise not_found(path)
            self._dirty = True

    def close(self) -> None:
        """Release threads blocked in ``wait_operation`` (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ---------------------------------------------------------------- reads

    def get(self, path: str) -> dict[str, Any]:
        """Return a stored resource (instance, disk, group, template) rendered as the API does.

        :param path: ``projects/p/zones/z/instances/name`` etc.
        """
        with self._txn():
            self._resource(path)
            return self._render(path)

    def list(
        self, prefix: str, filter_expr: str | None = None, operations: bool = False
    ) -> list[dict[str, Any]]:
        """Return resources of one collection, filtered, sorted by name.

        :param prefix: collection path, e.g. ``projects/p/zones/z/instances``.
        :param filter_expr: Compute Engine filter expression.
        :param operations: list Operations instead of resources.
        """
        with self._txn():
            source = self._data["operations"] if operations else self._data["resources"]
            items = [
                self._data["operations"][p] if operations else self._render(p)
                for p in source
                if p.startswith(prefix + "/") and "/" not in p[len(prefix) + 1 :]
            ]
            try:
                selected = [copy.deepcopy(i) for i in items if matches(i, filter_expr)]
            except FilterError as exc:
                raise ApiError(400, str(exc)) from exc
            if operations:
                return sorted(selected, key=lambda op: op["insertTime"])
            return sorted(selected, key=lambda r: r["name"])

    def _render(self, path: str) -> dict[str, Any]:
        resource = copy.deepcopy(self._data["resources"][path])
        if "/instanceGroupManagers/" in path:
            actions, stable = self._group_actions(path)
            resource["currentActions"] = actions
            resource["status"] = {
                "isStable": stable,
                "versionTarget": {"isReached": True},
                "stateful": {"hasStatefulConfig": False},
            }
        return resource

    def region(self, project: str, region: str) -> dict[str, Any]:
        """Return the ``compute#region`` resource with quota limits and current usage.

        :param project: project id.
        :param region: region name.
        """
        if region not in ZONES:
            raise not_found(f"projects/{project}/regions/{region}")
        with self._txn():
            usage = self._usage(project, region)
            limits = self._limits(project, region)
            return {
                "kind": "compute#region",
                "id": str(1000 + sorted(ZONES).index(region)),
                "name": region,
                "description": region,
                "status": "UP",
                "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
                "zones": [f"{LINK_PREFIX}projects/{project}/zones/{region}-{z}" for z in ZONES[region]],
                "quotas": [
                    {"metric": m, "limit": float(limits[m]), "usage": float(usage.get(m, 0))}
                    for m in sorted(limits)
                ],
                "selfLink": f"{LINK_PREFIX}projects/{project}/regions/{region}",
                "supportsPzs": False,
            }

    # ---------------------------------------------------------------- quotas

    def _limits(self, project: str, region: str) -> dict[str, float]:
        limits = dict(self._data["default_quotas"])
        limits.update(self._data["quotas"].get(f"{project}/{region}", {}))
        limits.update(self._data["quotas"].get(f"*/{region}", {}))
        return limits

    def _usage(self, project: str, region: str) -> dict[str, float]:
        usage = dict.fromkeys(DEFAULT_QUOTAS, 0.0)
        zone_prefix = f"projects/{project}/zones/{region}-"
        for path, res in self._data["resources"].items():
            if not path.startswith(zone_prefix):
                continue
            if "/instances/" in path:
                usage["INSTANCES"] += 1
                if res["status"] != "TERMINATED":
                    cpus = self._data["meta"][path]["cpus"]
                    usage[_cpu_metric(res)] += cpus
            elif "/disks/" in path:
                usage[_disk_metric(res)] += int(res["sizeGb"])
        return usage

    def _quota_error(self, project: str, zone: str, extra: dict[str, float]) -> dict[str, Any] | None:
        region = region_of(zone)
        usage = self._usage(project, region)
        limits = self._limits(project, region)
        for metric, amount in extra.items():
            if amount > 0 and usage.get(metric, 0) + amount > limits.get(metric, float("inf")):
                return {
                    "code": "QUOTA_EXCEEDED",
                    "message": f"Quota '{metric}' exceeded.  Limit: {float(limits[metric])} in region {region}.",
                    "http_status": 403,
                }
        return None

    def set_quota(self, region: str, metric: str, limit: float, project: str = "*") -> None:
        """Set one regional quota limit.

        :param region: region name (``*`` for the default of every region).
        :param metric: CPUS, PREEMPTIBLE_CPUS, INSTANCES, DISKS_TOTAL_GB, SSD_TOTAL_GB.
        :param limit: new limit.
        :param project: project id, ``*`` for all projects.
        """
        if metric not in DEFAULT_QUOTAS:
            raise ValueError(f"unknown quota metric {metric!r}: use one of {sorted(DEFAULT_QUOTAS)}")
        with self._txn():
            if region == "*":
                self._data["default_quotas"][metric] = float(limit)
            else:
                self._data["quotas"].setdefault(f"{project}/{region}", {})[metric] = float(limit)
            self._dirty = True

    # ---------------------------------------------------------------- instances

    def _instance_from_properties(
        self,
        now: float,
        project: str,
        zone: str,
        name: str,
        props: dict[str, Any],
        *,
        template_link: str | None = None,
    ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], int]:
        if not _NAME.fullmatch(name or ""):
            raise _invalid_name(name)
        path = f"projects/{project}/zones/{zone}/instances/{name}"
        if path in self._data["resources"]:
            raise ApiError(409, f"The resource '{path}' already exists")
        machine = _last(props.get("machineType") or "")
        shape = machine_type_shape(machine)
        if not machine or shape is None:
            raise _unknown_machine_type(props.get("machineType", ""), machine, zone)
        cpus = shape[0]
        scheduling = {
            "onHostMaintenance": "MIGRATE",
            "automaticRestart": True,
            "preemptible": False,
            "provisioningModel": "STANDARD",
        }
        scheduling.update(props.get("scheduling") or {})
        if scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible"):
            scheduling.update({"automaticRestart": False, "onHostMaintenance": "TERMINATE"})
            scheduling.setdefault("instanceTerminationAction", "STOP")
        network = {"totalEgressBandwidthTier": DEFAULT_TIER}
        network.update(props.get("networkPerformanceConfig") or {})
        self._check_tier(machine, cpus, network["totalEgressBandwidthTier"])
        labels = _checked_labels(props.get("labels"))
        instance_id = self._next_id()
        disks: list[dict[str, Any]] = []
        new_disks: list[tuple[str, dict[str, Any]]] = []
        requested = props.get("disks") or [{"boot": True, "autoDelete": True, "initializeParams": {}}]
        for index, spec in enumerate(requested):
            boot = bool(spec.get("boot", index == 0))
            if spec.get("source"):
                disk_path = self._zonal_path(project, zone, "disks", spec["source"])
                disk = self._data["resources"].get(disk_path)
                if disk is None:
                    raise ApiError(400, f"The resource '{disk_path}' was not found", "notFound")
                if disk.get("users"):
                    raise _disk_in_use(disk_path, disk)
                disk_name, size = _last(disk_path), int(disk["sizeGb"])
            else:
                params = spec.get("initializeParams") or {}
                disk_name = params.get("diskName") or (name if boot else f"{name}-{index}")
                disk_path = f"projects/{project}/zones/{zone}/disks/{disk_name}"
                if disk_path in self._data["resources"]:
                    raise ApiError(409, f"The resource '{disk_path}' already exists")
                size = int(params.get("diskSizeGb") or 10)
                disk_type = _last(params.get("diskType") or "pd-standard")
                new_disks.append(
                    (
                        disk_path,
                        self._disk_resource(
                            now,
                            project,
                            zone,
                            disk_name,
                            size,
                            disk_type,
                            dict(params.get("labels") or {}),
                            params.get("sourceImage"),
                        ),
                    )
                )
            disks.append(
                _attached_disk(
                    spec,
                    disk_path,
                    device=spec.get("deviceName")
                    or (f"persistent-disk-{index}" if not spec.get("source") else disk_name),
                    index=index,
                    boot=boot,
                    auto_delete=bool(spec.get("autoDelete", not spec.get("source"))),
                    size_gb=str(size),
                )
            )
        instance = {
            "kind": "compute#instance",
            "id": instance_id,
            "creationTimestamp": _now_iso(now),
            "name": name,
            "description": props.get("description", ""),
            "tags": {
                "fingerprint": _fingerprint(props.get("tags", {}).get("items", [])),
                **(props.get("tags") or {}),
            },
            "machineType": _machine_type_link(project, zone, machine),
            "status": "PROVISIONING",
            "zone": f"{LINK_PREFIX}projects/{project}/zones/{zone}",
            "networkInterfaces": [
                {
                    "kind": "compute#networkInterface",
                    "name": "nic0",
                    "network": f"{LINK_PREFIX}projects/{project}/global/networks/default",
                    "subnetwork": f"{LINK_PREFIX}projects/{project}/regions/{region_of(zone)}/subnetworks/default",
                    "networkIP": f"10.{128 + int(instance_id) % 64}.{int(instance_id) // 64 % 256}.{int(instance_id) // 16384 % 254 + 1}",
                    "stackType": "IPV4_ONLY",
                    "fingerprint": _fingerprint(instance_id),
                }
            ],
            "disks": disks,
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": _fingerprint(props.get("metadata", {})),
                "items": (props.get("metadata") or {}).get("items", []),
            },
            "scheduling": scheduling,
            "networkPerformanceConfig": network,
            "cpuPlatform": "Unknown CPU Platform",
            "labels": labels,
            "labelFingerprint": _fingerprint(labels),
            "startRestricted": False,
            "deletionProtection": bool(props.get("deletionProtection", False)),
            "fingerprint": _fingerprint([name, instance_id]),
            "selfLink": LINK_PREFIX + path,
        }
        if template_link:
            instance["metadata"]["items"] = [
                *instance["metadata"]["items"],
                {"key": "instance-template", "value": template_link},
            ]
        return instance, new_disks, cpus

    @staticmethod
    def _check_tier(machine: str, cpus: int, tier: str) -> None:
        if tier not in (DEFAULT_TIER, TIER_1):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.networkPerformanceConfig.totalEgressBandwidthTier': '{tier}'.",
            )
        family = machine.split("-", 1)[0]
        if tier == TIER_1 and (family not in ("n2", "n2d", "c2", "c3") or cpus < 30):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.networkPerformanceConfig.totalEgressBandwidthTier': 'TIER_1'. "
                f"Tier 1 networking is not supported for machine type '{machine}' (needs N2, N2D, C2 or C3 with at least 30 vCPUs).",
            )

    def _create_instance(
        self,
        now: float,
        project: str,
        zone: str,
        instance: dict[str, Any],
        new_disks: list[tuple[str, dict[str, Any]]],
        cpus: int,
        *,
        group: str | None = None,
    ) -> float:
        path = relative_path(instance["selfLink"])
        for disk_path, disk in new_disks:
            self._store(disk_path, disk)
        for attached in instance["disks"]:
            disk = self._data["resources"][relative_path(attached["source"])]
            disk["status"] = "READY"
            disk["users"] = [*disk.get("users", []), instance["selfLink"]]
        self._store(path, instance, cpus=cpus, gen=0, created=now)
        if group:
            self._data["meta"][path]["group"] = group
        return self._boot(path, now)

    def _boot(self, path: str, now: float) -> float:
        meta = self._data["meta"][path]
        meta["gen"] += 1
        self._data["resources"][path]["status"] = "PROVISIONING"
        boot = self._cfg("boot_seconds")
        self._schedule_status(now + 0.4 * boot, path, "STAGING")
        self._schedule_status(now + boot, path, "RUNNING")
        return now + boot

    def _shutdown(self, path: str, now: float, then: str) -> float:
        meta = self._data["meta"][path]
        meta["gen"] += 1
        resource = self._data["resources"][path]
        done = now + self._cfg("stop_seconds")
        if resource["status"] == "TERMINATED" and then == "TERMINATED":
            return now
        resource["status"] = "STOPPING"
        if then == "TERMINATED":
            self._schedule_status(done, path, "TERMINATED")
        else:
            meta["deleting"] = True
            self._schedule(done, {"type": "remove", "path": path, "gen": meta["gen"]})
        self._dirty = True
        return done

    def _remove_instance(self, path: str) -> None:
        instance = self._data["resources"].pop(path)
        self._data["meta"].pop(path, None)
        for attached in instance.get("disks", []):
            disk_path = relative_path(attached["source"])
            disk = self._data["resources"].get(disk_path)
            if disk is None:
                continue
            if attached.get("autoDelete"):
                self._forget(disk_path)
            else:
                disk["users"] = [u for u in disk.get("users", []) if relative_path(u) != path]
        self._dirty = True

    def _resource(self, path: str) -> dict[str, Any]:
        resource = self._data["resources"].get(path)
        if resource is None:
            raise not_found(path)
        return resource

    def _store(self, path: str, resource: dict[str, Any], **meta: Any) -> None:
        """Keep a new resource, with its emulator-only bookkeeping (id, and e.g. vCPUs, boot generation)."""
        self._data["resources"][path] = resource
        self._data["meta"][path] = {"id": resource["id"], **meta}
        self._dirty = True

    def _forget(self, path: str) -> None:
        del self._data["resources"][path]
        self._data["meta"].pop(path, None)
        self._dirty = True

    def _instance(self, path: str) -> dict[str, Any]:
        instance = self._data["resources"].get(path)
        if instance is None or "/instances/" not in path:
            raise not_found(path)
        return instance

    def _zonal_path(self, project: str, zone: str, collection: str, ref: str) -> str:
        return self._ref_path(project, ref, f"projects/{project}/zones/{zone}/{collection}/")

    @staticmethod
    def _ref_path(project: str, ref: str, bare_prefix: str) -> str:
        """Resolve a bare name, a partial path (``global/...``, ``zones/...``) or a URL to ``projects/...``."""
        if "/" not in ref:
            return bare_prefix + ref
        rel = relative_path(ref)
        return rel if rel.startswith("projects/") else f"projects/{project}/{rel}"

    def insert_instance(
        self, project: str, zone: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.insert``: create a VM that boots PROVISIONING -> STAGING -> RUNNING.

        :param project: project id.
        :param zone: zone name.
        :param body: the Instance JSON (or with ``sourceInstanceTemplate`` resolved by the caller).
        :param request_id: idempotency key.
        """
        self._check_zone(project, zone)

        def run(now: float) -> dict[str, Any]:
            props = dict(body)
            instance, new_disks, cpus = self._instance_from_properties(
                now, project, zone, body.get("name", ""), props
            )
            target = relative_path(instance["selfLink"])
            error = self._quota_error(project, zone, self._demand(instance, cpus, new_disks))
            if error:
                return self._operation(
                    now,
                    f"zones/{zone}",
                    "insert",
                    target,
                    done_at=None,
                    error=error,
                    target_id=instance["id"],
                )
            done = self._create_instance(now, project, zone, instance, new_disks, cpus)
            return self._operation(
                now, f"zones/{zone}", "insert", target, done_at=done, target_id=instance["id"]
            )

        return self.mutate(project, request_id, run)

    def bulk_insert_instances(
        self, project: str, zone: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.bulkInsert``: create ``count`` VMs named by ``namePattern`` (``worker-####``), all or nothing.

        :param project: project id.
        :param zone: zone name.
        :param body: BulkInsertInstanceResource JSON.
        :param request_id: idempotency key.
        """
        self._check_zone(project, zone)

        def run(now: float) -> dict[str, Any]:
            count = int(body.get("count") or 0)
            pattern = body.get("namePattern") or ""
            props = dict(body.get("instanceProperties") or {})
            if body.get("sourceInstanceTemplate"):
                template = self._data["resources"].get(
                    self._ref_path(
                        project,
                        body["sourceInstanceTemplate"],
                        f"projects/{project}/global/instanceTemplates/",
                    )
                )
                if template is None:
                    raise ApiError(
                        400,
                        f"The resource '{relative_path(body['sourceInstanceTemplate'])}' was not found",
                        "notFound",
                    )
                props = {**copy.deepcopy(template["properties"]), **props}
            if count < 1 or "#" not in pattern:
                raise ApiError(
                    400,
                    "Invalid value for field 'resource': bulkInsert needs count >= 1 and a namePattern with '#' placeholders.",
                )
            width = pattern.count("#")
            created: list[tuple[dict, list, int]] = []
            number = 1
            while len(created) < count:
                name = re.sub("#+", str(number).zfill(width), pattern, count=1)
                number += 1
                if f"projects/{project}/zones/{zone}/instances/{name}" in self._data["resources"]:
                    continue
                created.append(self._instance_from_properties(now, project, zone, name, props))
            target = f"projects/{project}/zones/{zone}/instances"
            demand: dict[str, float] = {}
            for instance, new_disks, cpus in created:
                for metric, amount in self._demand(instance, cpus, new_disks).items():
                    demand[metric] = demand.get(metric, 0) + amount
            error = self._quota_error(project, zone, demand)
            if error:
                return self._operation(now, f"zones/{zone}", "bulkInsert", target, done_at=None, error=error)
            done = now
            for instance, new_disks, cpus in created:
                done = max(done, self._create_instance(now, project, zone, instance, new_disks, cpus))
            return self._operation(now, f"zones/{zone}", "bulkInsert", target, done_at=done)

        return self.mutate(project, request_id, run)

    def _demand(
        self, instance: dict[str, Any], cpus: int, new_disks: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, float]:
        demand: dict[str, float] = {
            "INSTANCES": 1,
            _cpu_metric(instance): cpus,
        }
        for _, disk in new_disks:
            metric = _disk_metric(disk)
            demand[metric] = demand.get(metric, 0) + int(disk["sizeGb"])
        return demand

    def delete_instance(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.delete``: STOPPING, then gone (auto-delete disks removed, others detached).

        :param project: project id.
        :param zone: zone name.
        :param name: instance name.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instances/{name}"

        def run(now: float) -> dict[str, Any]:
            instance = self._instance(path)
            if instance.get("deletionProtection"):
                raise ApiError(
                    400,
                    "Invalid resource usage: 'Resource cannot be deleted if it's protected against deletion.'.",
                    "resourceInUseByAnotherResource",
                )
            group = self._data["meta"][path].get("group")
            done = self._shutdown(path, now, "DELETED")
            if group and group in self._data["meta"]:
                # Deleting a managed instance directly: the group recreates it (target size unchanged).
                self._data["meta"][group]["members"] = [
                    m for m in self._data["meta"][group]["members"] if m != name
                ]
            return self._operation(now, f"zones/{zone}", "delete", path, done_at=done)

        return self.mutate(project, request_id, run)

    def stop_instance(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.stop``: RUNNING -> STOPPING -> TERMINATED.

        :param project: project id.
        :param zone: zone name.
        :param name: instance name.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instances/{name}"

        def run(now: float) -> dict[str, Any]:
            self._instance(path)
            done = self._shutdown(path, now, "TERMINATED")
            return self._operation(now, f"zones/{zone}", "stop", path, done_at=done)

        return self.mutate(project, request_id, run)

    def start_instance(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.start``: TERMINATED -> PROVISIONING -> STAGING -> RUNNING, checking CPU quota.

        :param project: project id.
        :param zone: zone name.
        :param name: instance name.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instances/{name}"

        def run(now: float) -> dict[str, Any]:
            instance = self._instance(path)
            if instance["status"] != "TERMINATED":
                return self._operation(now, f"zones/{zone}", "start", path, done_at=None)
            cpus = self._data["meta"][path]["cpus"]
            error = self._quota_error(project, zone, {_cpu_metric(instance): cpus})
            if error:
                return self._operation(now, f"zones/{zone}", "start", path, done_at=None, error=error)
            done = self._boot(path, now)
            instance.pop("statusMessage", None)
            return self._operation(now, f"zones/{zone}", "start", path, done_at=done)

        return self.mutate(project, request_id, run)

    def set_machine_type(
        self, project: str, zone: str, name: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.setMachineType``: only on a stopped (TERMINATED) instance, as on Google.

        :param project: project id.
        :param zone: zone name.
        :param name: instance name.
        :param body: ``{"machineType": "zones/z/machineTypes/n2-standard-8"}``.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instances/{name}"

        def run(now: float) -> dict[str, Any]:
            instance = self._instance(path)
            machine = _last(body.get("machineType") or "")
            shape = machine_type_shape(machine)
            if shape is None:
                raise _unknown_machine_type(body.get("machineType", ""), machine, zone)
            if instance["status"] != "TERMINATED":
                raise ApiError(
                    400,
                    f"The resource '{path}' is not ready: the instance must be stopped (status TERMINATED) before its machine type can be changed.",
                    "resourceNotReady",
                )
            self._check_tier(
                machine, shape[0], instance["networkPerformanceConfig"]["totalEgressBandwidthTier"]
            )
            instance["machineType"] = _machine_type_link(project, zone, machine)
            self._data["meta"][path]["cpus"] = shape[0]
            return self._metadata_operation(now, f"zones/{zone}", "setMachineType", path)

        return self.mutate(project, request_id, run)

    def update_instance(
        self,
        project: str,
        zone: str,
        name: str,
        body: dict[str, Any],
        most_disruptive: str | None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """``instances.update`` (PUT): labels, machine type and bandwidth tier, restarting if allowed.

        :param project: project id.
        :param zone: zone name.
        :param name: instance name.
        :param body: the full Instance JSON as read, with fields changed.
        :param most_disruptive: ``mostDisruptiveAllowedAction`` (NONE, REFRESH, RESTART).
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instances/{name}"

        def run(now: float) -> dict[str, Any]:
            instance = self._instance(path)
            labels = _checked_labels(body["labels"]) if "labels" in body else None  # before any change
            if body.get("fingerprint") and body["fingerprint"] != instance["fingerprint"]:
                raise ApiError(
                    412, "Supplied fingerprint does not match current fingerprint.", "conditionNotMet"
                )
            machine = _last(body.get("machineType") or instance["machineType"])
            shape = machine_type_shape(machine)
            if shape is None:
                raise ApiError(
                    400, f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'."
                )
            tier = (body.get("networkPerformanceConfig") or instance["networkPerformanceConfig"]).get(
                "totalEgressBandwidthTier", DEFAULT_TIER
            )
            self._check_tier(machine, shape[0], tier)
            needs_restart = (
                machine != _last(instance["machineType"])
                or tier != instance["networkPerformanceConfig"]["totalEgressBandwidthTier"]
            )
            running = instance["status"] != "TERMINATED"
            if needs_restart and running and (most_disruptive or "RESTART") != "RESTART":
                raise ApiError(
                    400,
                    f"Invalid value for field 'mostDisruptiveAllowedAction': '{most_disruptive}'. The update needs a RESTART of '{name}'.",
                )
            instance["machineType"] = _machine_type_link(project, zone, machine)
            instance["networkPerformanceConfig"] = {"totalEgressBandwidthTier": tier}
            self._data["meta"][path]["cpus"] = shape[0]
            if labels is not None:
                instance["labels"] = labels
                instance["labelFingerprint"] = _fingerprint(instance["labels"])
            instance["fingerprint"] = _fingerprint([instance["fingerprint"], now])
            done = now + self._cfg("operation_seconds")
            if needs_restart and running:
                done = self._boot(path, now + self._cfg("stop_seconds"))
            return self._operation(now, f"zones/{zone}", "update", path, done_at=done)

        return self.mutate(project, request_id, run)

    def set_labels(
        self,
        project: str,
        zone: str,
        collection: str,
        name: str,
        body: dict[str, Any],
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """``setLabels`` on an instance or disk; the label fingerprint must match, as on Google.

        :param project: project id.
        :param zone: zone name.
        :param collection: ``instances`` or ``disks``.
        :param name: resource name.
        :param body: ``{"labels": {...}, "labelFingerprint": "..."}``.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/{collection}/{name}"

        def run(now: float) -> dict[str, Any]:
            resource = self._resource(path)
            given = body.get("labelFingerprint")
            if (given or "") != resource["labelFingerprint"] and (given or resource["labels"]):
                raise ApiError(
                    412,
                    "Labels fingerprint either invalid or resource labels have changed",
                    "conditionNotMet",
                )
            resource["labels"] = _checked_labels(body.get("labels"), "labels")
            resource["labelFingerprint"] = _fingerprint(resource["labels"])
            return self._metadata_operation(now, f"zones/{zone}", "setLabels", path)

        return self.mutate(project, request_id, run)

    def attach_disk(
        self, project: str, zone: str, name: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.attachDisk``: attach an existing disk (``source``) read-write.

        :param project: project id.
        :param zone: zone name.
        :param name: instance name.
        :param body: AttachedDisk JSON with ``source`` and optional ``deviceName``/``autoDelete``.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instances/{name}"

        def run(now: float) -> dict[str, Any]:
            instance = self._instance(path)
            if not body.get("source"):
                raise ApiError(
                    400,
                    "Invalid value for field 'resource.source': ''. Source must be specified.",
                    "required",
                )
            disk_path = self._zonal_path(project, zone, "disks", body["source"])
            disk = self._data["resources"].get(disk_path)
            if disk is None:
                raise ApiError(404, f"The resource '{disk_path}' was not found")
            if disk.get("users"):
                raise _disk_in_use(disk_path, disk)
            device = body.get("deviceName") or _last(disk_path)
            if any(d["deviceName"] == device for d in instance["disks"]):
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.deviceName': '{device}'. Device name is already in use.",
                )
            instance["disks"].append(
                _attached_disk(
                    body,
                    disk_path,
                    device=device,
                    index=max((d["index"] for d in instance["disks"]), default=-1) + 1,
                    boot=False,
                    auto_delete=bool(body.get("autoDelete", False)),
                    size_gb=disk["sizeGb"],
                )
            )
            disk["users"] = [instance["selfLink"]]
            disk["lastAttachTimestamp"] = _now_iso(now)
            return self._metadata_operation(now, f"zones/{zone}", "attachDisk", path)

        return self.mutate(project, request_id, run)

    def detach_disk(
        self, project: str, zone: str, name: str, device_name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """``instances.detachDisk``: detach by device name.

        :param project: project id.
        :param zone: zone name.
        :param name: instance name.
        :param device_name: ``deviceName`` query parameter.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instances/{name}"

        def run(now: float) -> dict[str, Any]:
            instance = self._instance(path)
            found = [d for d in instance["disks"] if d["deviceName"] == device_name]
            if not found:
                raise ApiError(
                    400,
                    f"Invalid value for field 'deviceName': '{device_name}'. No attached disk found with device name '{device_name}'.",
                )
            if found[0].get("boot") and instance["status"] != "TERMINATED":
                raise ApiError(
                    400,
                    "Invalid value for field 'deviceName': the boot disk can only be detached from a stopped instance.",
                )
            instance["disks"] = [d for d in instance["disks"] if d["deviceName"] != device_name]
            disk = self._data["resources"].get(relative_path(found[0]["source"]))
            if disk is not None:
                disk["users"] = [u for u in disk.get("users", []) if relative_path(u) != path]
                disk["lastDetachTimestamp"] = _now_iso(now)
            return self._metadata_operation(now, f"zones/{zone}", "detachDisk", path)

        return self.mutate(project, request_id, run)

    # ---------------------------------------------------------------- disks

    def _disk_resource(
        self,
        now: float,
        project: str,
        zone: str,
        name: str,
        size: int,
        disk_type: str,
        labels: dict[str, str],
        image: str | None = None,
    ) -> dict[str, Any]:
        if disk_type not in ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced"):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.type': '{disk_type}'. Disk type does not exist in zone '{zone}'.",
            )
        if size < 1 or size > 65536:
            raise ApiError(
                400,
                f"Invalid value for field 'resource.sizeGb': '{size}'. Disk size must be between 1 and 65536 GB.",
            )
        labels = _checked_labels(labels)
        disk = {
            "kind": "compute#disk",
            "id": self._next_id(),
            "creationTimestamp": _now_iso(now),
            "name": name,
            "sizeGb": str(size),
            "zone": f"{LINK_PREFIX}projects/{project}/zones/{zone}",
            "status": "READY",
            "type": f"{LINK_PREFIX}projects/{project}/zones/{zone}/diskTypes/{disk_type}",
            "labels": labels,
            "labelFingerprint": _fingerprint(labels),
            "physicalBlockSizeBytes": "4096",
            "users": [],
            "selfLink": f"{LINK_PREFIX}projects/{project}/zones/{zone}/disks/{name}",
        }
        if image:
            disk["sourceImage"] = image
        return disk

    def insert_disk(
        self, project: str, zone: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``disks.insert``: create a persistent disk (checks DISKS_TOTAL_GB / SSD_TOTAL_GB quota).

        :param project: project id.
        :param zone: zone name.
        :param body: Disk JSON (``name``, ``sizeGb``, ``type``, ``labels``).
        :param request_id: idempotency key.
        """
        self._check_zone(project, zone)

        def run(now: float) -> dict[str, Any]:
            name = body.get("name") or ""
            if not _NAME.fullmatch(name):
                raise _invalid_name(name)
            path = f"projects/{project}/zones/{zone}/disks/{name}"
            if path in self._data["resources"]:
                raise ApiError(409, f"The resource '{path}' already exists")
            disk = self._disk_resource(
                now,
                project,
                zone,
                name,
                int(body.get("sizeGb") or 500 if not body.get("sourceImage") else 10),
                _last(body.get("type") or "pd-standard"),
                dict(body.get("labels") or {}),
                body.get("sourceImage"),
            )
            error = self._quota_error(project, zone, {_disk_metric(disk): int(disk["sizeGb"])})
            if error:
                return self._operation(
                    now, f"zones/{zone}", "insert", path, done_at=None, error=error, target_id=disk["id"]
                )
            disk["status"] = "CREATING"
            self._store(path, disk)
            done = now + self._cfg("operation_seconds")
            self._schedule(done, {"type": "disk_ready", "path": path})
            return self._operation(now, f"zones/{zone}", "insert", path, done_at=done)

        return self.mutate(project, request_id, run)

    def delete_disk(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """``disks.delete``: refused while the disk is attached, as on Google.

        :param project: project id.
        :param zone: zone name.
        :param name: disk name.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/disks/{name}"

        def run(now: float) -> dict[str, Any]:
            disk = self._resource(path)
            if disk.get("users"):
                raise _disk_in_use(path, disk)
            self._forget(path)
            return self._metadata_operation(now, f"zones/{zone}", "delete", path, target_id=disk["id"])

        return self.mutate(project, request_id, run)

    def resize_disk(
        self, project: str, zone: str, name: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``disks.resize``: grow only (shrinking is an error on Google), checking disk quota.

        :param project: project id.
        :param zone: zone name.
        :param name: disk name.
        :param body: ``{"sizeGb": "200"}``.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/disks/{name}"

        def run(now: float) -> dict[str, Any]:
            disk = self._resource(path)
            size = int(body.get("sizeGb") or 0)
            if size <= int(disk["sizeGb"]):
                raise ApiError(
                    400,
                    f"Invalid value for field 'sizeGb': '{size}'. Requested size must be larger than current size ({disk['sizeGb']} GB).",
                )
            error = self._quota_error(project, zone, {_disk_metric(disk): size - int(disk["sizeGb"])})
            if error:
                return self._operation(now, f"zones/{zone}", "resize", path, done_at=None, error=error)
            disk["sizeGb"] = str(size)
            for user in disk.get("users", []):
                instance = self._data["resources"].get(relative_path(user))
                for attached in (instance or {}).get("disks", []):
                    if relative_path(attached["source"]) == path:
                        attached["diskSizeGb"] = str(size)
            return self._metadata_operation(now, f"zones/{zone}", "resize", path)

        return self.mutate(project, request_id, run)

    # ---------------------------------------------------------------- templates

    def insert_template(
        self, project: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``instanceTemplates.insert`` (global operation).

        :param project: project id.
        :param body: InstanceTemplate JSON with ``name`` and ``properties.machineType`` (a bare name).
        :param request_id: idempotency key.
        """

        def run(now: float) -> dict[str, Any]:
            name = body.get("name") or ""
            if not _NAME.fullmatch(name):
                raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'.")
            path = f"projects/{project}/global/instanceTemplates/{name}"
            if path in self._data["resources"]:
                raise ApiError(409, f"The resource '{path}' already exists")
            props = copy.deepcopy(body.get("properties") or {})
            if machine_type_shape(props.get("machineType") or "") is None:
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.properties.machineType': '{props.get('machineType', '')}'. Machine type does not exist.",
                )
            # refused here, as on Google, not later when a group creates an instance from the template
            _checked_labels(props.get("labels"), "resource.properties.labels")
            template = {
                "kind": "compute#instanceTemplate",
                "id": self._next_id(),
                "creationTimestamp": _now_iso(now),
                "name": name,
                "description": body.get("description", ""),
                "properties": props,
                "selfLink": LINK_PREFIX + path,
            }
            self._store(path, template)
            return self._metadata_operation(now, "global", "insert", path)

        return self.mutate(project, request_id, run)

    def delete_template(self, project: str, name: str, request_id: str | None = None) -> dict[str, Any]:
        """``instanceTemplates.delete``: refused while a group uses the template.

        :param project: project id.
        :param name: template name.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/global/instanceTemplates/{name}"

        def run(now: float) -> dict[str, Any]:
            self._resource(path)
            for other, res in self._data["resources"].items():
                if "/instanceGroupManagers/" in other and relative_path(res["instanceTemplate"]) == path:
                    raise ApiError(
                        400,
                        f"The instance_template resource '{path}' is already being used by '{other}'",
                        "resourceInUseByAnotherResource",
                    )
            self._forget(path)
            return self._metadata_operation(now, "global", "delete", path)

        return self.mutate(project, request_id, run)

    # ---------------------------------------------------------------- managed instance groups

    def insert_group(
        self, project: str, zone: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``instanceGroupManagers.insert``: a zonal MIG from a template, scaled to ``targetSize``.

        :param project: project id.
        :param zone: zone name.
        :param body: InstanceGroupManager JSON (``name``, ``instanceTemplate``, ``targetSize``, ``baseInstanceName``).
        :param request_id: idempotency key.
        """
        self._check_zone(project, zone)

        def run(now: float) -> dict[str, Any]:
            name = body.get("name") or ""
            if not _NAME.fullmatch(name):
                raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'.")
            path = f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}"
            if path in self._data["resources"]:
                raise ApiError(409, f"The resource '{path}' already exists")
            template_ref = (
                body.get("instanceTemplate")
                or ((body.get("versions") or [{}])[0].get("instanceTemplate"))
                or ""
            )
            template_path = self._ref_path(
                project, template_ref, f"projects/{project}/global/instanceTemplates/"
            )
            if template_path not in self._data["resources"]:
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.instanceTemplate': '{template_ref}'. The referenced instance template does not exist.",
                    "invalid",
                )
            group = {
                "kind": "compute#instanceGroupManager",
                "id": self._next_id(),
                "creationTimestamp": _now_iso(now),
                "name": name,
                "description": body.get("description", ""),
                "zone": f"{LINK_PREFIX}projects/{project}/zones/{zone}",
                "instanceTemplate": LINK_PREFIX + template_path,
                "versions": [
                    {"instanceTemplate": LINK_PREFIX + template_path, "targetSize": {"calculated": 0}}
                ],
                "instanceGroup": f"{LINK_PREFIX}projects/{project}/zones/{zone}/instanceGroups/{name}",
                "baseInstanceName": body.get("baseInstanceName") or name,
                "fingerprint": _fingerprint([name, now]),
                "targetSize": int(body.get("targetSize") or 0),
                "listManagedInstancesResults": "PAGELESS",
                "updatePolicy": {
                    "type": "OPPORTUNISTIC",
                    "instanceRedistributionType": "NONE",
                    "minimalAction": "REPLACE",
                    "maxSurge": {"fixed": 1, "calculated": 1},
                    "maxUnavailable": {"fixed": 1, "calculated": 1},
                    "replacementMethod": "SUBSTITUTE",
                },
                "selfLink": LINK_PREFIX + path,
            }
            self._store(path, group, members=[], pending={})
            self._reconcile_group(path, now)
            return self._metadata_operation(
                now, f"zones/{zone}", "compute.instanceGroupManagers.insert", path
            )

        return self.mutate(project, request_id, run)

    def _group(self, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        group = self._data["resources"].get(path)
        if group is None or "/instanceGroupManagers/" not in path:
            raise not_found(path)
        return group, self._data["meta"][path]

    def resize_group(
        self, project: str, zone: str, name: str, size: int, request_id: str | None = None
    ) -> dict[str, Any]:
        """``instanceGroupManagers.resize``: set ``targetSize``; the group creates or deletes VMs.

        Scale-in deletes queued creations first, then VMs that are not RUNNING yet, then the newest.

        :param project: project id.
        :param zone: zone name.
        :param name: group name.
        :param size: new target size.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}"

        def run(now: float) -> dict[str, Any]:
            group, meta = self._group(path)
            if size < 0 or size > 1000:
                raise ApiError(400, f"Invalid value for field 'size': '{size}'. Must be between 0 and 1000.")
            group["targetSize"] = size
            self._trim_group(path, now)
            self._reconcile_group(path, now)
            return self._metadata_operation(
                now, f"zones/{zone}", "compute.instanceGroupManagers.resize", path
            )

        return self.mutate(project, request_id, run)

    def delete_group_instances(
        self, project: str, zone: str, name: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        """``instanceGroupManagers.deleteInstances``: delete chosen VMs and shrink ``targetSize`` by as many.

        :param project: project id.
        :param zone: zone name.
        :param name: group name.
        :param body: ``{"instances": [url or zones/z/instances/name, ...], "skipInstancesOnValidationError": bool}``.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}"

        def run(now: float) -> dict[str, Any]:
            group, meta = self._group(path)
            chosen = [_last(ref) for ref in body.get("instances") or []]
            unknown = [n for n in chosen if n not in meta["members"] and n not in meta["pending"]]
            if unknown and not body.get("skipInstancesOnValidationError"):
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.instances': '{unknown[0]}'. The instance is not a member of the instance group manager '{name}'.",
                )
            for member in [n for n in chosen if n not in unknown]:
                self._drop_member(path, member, now)
                group["targetSize"] = max(0, group["targetSize"] - 1)
            return self._metadata_operation(
                now, f"zones/{zone}", "compute.instanceGroupManagers.deleteInstances", path
            )

        return self.mutate(project, request_id, run)

    def delete_group(
        self, project: str, zone: str, name: str, request_id: str | None = None
    ) -> dict[str, Any]:
        """``instanceGroupManagers.delete``: delete the group and all its VMs.

        :param project: project id.
        :param zone: zone name.
        :param name: group name.
        :param request_id: idempotency key.
        """
        path = f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}"

        def run(now: float) -> dict[str, Any]:
            group, meta = self._group(path)
            done = now + self._cfg("operation_seconds")
            for member in list(meta["members"]) + list(meta["pending"]):
                self._drop_member(path, member, now)
                done = now + self._cfg("stop_seconds")
            self._forget(path)
            return self._operation(
                now,
                f"zones/{zone}",
                "compute.instanceGroupManagers.delete",
                path,
                done_at=done,
                target_id=group["id"],
            )

        return self.mutate(project, request_id, run)

    def _drop_member(self, group_path: str, member: str, now: float) -> None:
        meta = self._data["meta"][group_path]
        if member in meta["pending"]:
            del meta["pending"][member]
        if member in meta["members"]:
            meta["members"].remove(member)
            instance_path = group_path.replace(
                f"instanceGroupManagers/{_last(group_path)}", f"instances/{member}"
            )
            if instance_path in self._data["resources"] and not self._data["meta"][instance_path].get(
                "deleting"
            ):
                self._shutdown(instance_path, now, "DELETED")
        self._dirty = True

    def _trim_group(self, path: str, now: float) -> None:
        group, meta = self._group(path)
        excess = len(meta["members"]) + len(meta["pending"]) - group["targetSize"]
        if excess <= 0:
            return
        victims = list(meta["pending"])[::-1]
        zone_prefix = path.rsplit("/instanceGroupManagers/", 1)[0] + "/instances/"

        def rank(member: str) -> tuple[int, float]:
            instance = self._data["resources"].get(zone_prefix + member, {})
            running = 1 if instance.get("status") == "RUNNING" else 0
            return running, -self._data["meta"].get(zone_prefix + member, {}).get("created", 0)

        victims += sorted(meta["members"], key=rank)
        for member in victims[:excess]:
            self._drop_member(path, member, now)

    def _reconcile_group(self, path: str, now: float) -> None:
        group, meta = self._group(path)
        project, zone = path.split("/")[1], path.split("/")[3]
        zone_prefix = f"projects/{project}/zones/{zone}/instances/"
        before = (list(meta["members"]), dict(meta["pending"]))
        meta["members"] = [
            m
            for m in meta["members"]
            if zone_prefix + m in self._data["resources"]
            and not self._data["meta"][zone_prefix + m].get("deleting")
        ]
        while len(meta["members"]) + len(meta["pending"]) < group["targetSize"]:
            meta["pending"][self._member_name(group["baseInstanceName"], zone_prefix, meta)] = {}
        template = self._data["resources"].get(relative_path(group["instanceTemplate"]))
        for member in list(meta["pending"]):
            if template is None:
                meta["pending"][member] = {
                    "code": "RESOURCE_NOT_FOUND",
                    "message": f"The resource '{relative_path(group['instanceTemplate'])}' was not found",
                }
                continue
            try:
                instance, new_disks, cpus = self._instance_from_properties(
                    now,
                    project,
                    zone,
                    member,
                    copy.deepcopy(template["properties"]),
                    template_link=group["instanceTemplate"],
                )
            except ApiError as exc:
                meta["pending"][member] = {"code": exc.reason.upper(), "message": exc.message}
                continue
            instance["metadata"]["items"].append(
                {
                    "key": "created-by",
                    "value": f"projects/{project}/zones/{zone}/instanceGroupManagers/{group['name']}",
                }
            )
            error = self._quota_error(project, zone, self._demand(instance, cpus, new_disks))
            if error:
                meta["pending"][member] = {"code": error["code"], "message": error["message"]}
                continue
            del meta["pending"][member]
            meta["members"].append(member)
            self._create_instance(now, project, zone, instance, new_disks, cpus, group=path)
        if before != (meta["members"], meta["pending"]):
            self._dirty = True

    def _member_name(self, base: str, zone_prefix: str, meta: dict[str, Any]) -> str:
        while True:
            name = f"{base}-{''.join(random.choices(string.ascii_lowercase + string.digits, k=4))}"
            if zone_prefix + name not in self._data["resources"] and name not in meta["pending"]:
                return name

    def _group_actions(self, path: str) -> tuple[dict[str, int], bool]:
        group, meta = self._group(path)
        actions = dict.fromkeys(
            [
                "abandoning",
                "creating",
                "creatingWithoutRetries",
                "deleting",
                "none",
                "recreating",
                "refreshing",
                "restarting",
                "resuming",
                "starting",
                "stopping",
                "suspending",
                "verifying",
            ],
            0,
        )
        for managed in self._managed(path):
            key = managed["currentAction"].lower()
            actions[key] = actions.get(key, 0) + 1
        stable = actions["none"] == sum(actions.values())
        return actions, stable

    def _managed(self, path: str) -> list[dict[str, Any]]:
        group, meta = self._group(path)
        zone_prefix = path.rsplit("/instanceGroupManagers/", 1)[0] + "/instances/"
        managed = []
        for instance_path, instance_meta in self._data["meta"].items():
            if instance_meta.get("group") != path:
                continue
            instance = self._data["resources"][instance_path]
            if instance_meta.get("deleting"):
                action = "DELETING"
            elif instance_meta.get("recreating") or instance["status"] in ("STOPPING", "TERMINATED"):
                action = "RECREATING"
            elif instance["status"] in _BOOTING:
                action = "CREATING"
            else:
                action = "NONE"
            managed.append(
                {
                    "instance": instance["selfLink"],
                    "id": instance["id"],
                    "name": instance["name"],
                    "instanceStatus": instance["status"],
                    "currentAction": action,
                    "version": {"instanceTemplate": group["instanceTemplate"]},
                }
            )
        for member, error in meta["pending"].items():
            entry: dict[str, Any] = {
                "instance": LINK_PREFIX + zone_prefix + member,
                "name": member,
                "currentAction": "CREATING",
            }
            if error:
                entry["lastAttempt"] = {
                    "errors": {"errors": [{"code": error["code"], "message": error["message"]}]}
                }
            managed.append(entry)
        return sorted(managed, key=lambda m: m["name"])

    def list_managed_instances(
        self, project: str, zone: str, name: str, filter_expr: str | None = None
    ) -> list[dict[str, Any]]:
        """``instanceGroupManagers.listManagedInstances``: each VM with instanceStatus and currentAction.

        :param project: project id.
        :param zone: zone name.
        :param name: group name.
        :param filter_expr: optional filter on the managed-instance JSON.
        """
        with self._txn():
            managed = self._managed(f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}")
            try:
                return [m for m in managed if matches(m, filter_expr)]
            except FilterError as exc:
                raise ApiError(400, str(exc)) from exc

    def list_group_errors(self, project: str, zone: str, name: str) -> list[dict[str, Any]]:
        """``instanceGroupManagers.listErrors``: why queued creations are not happening (quota...).

        :param project: project id.
        :param zone: zone name.
        :param name: group name.
        """
        with self._txn() as now:
            path = f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}"
            _, meta = self._group(path)
            return [
                {
                    "instanceActionDetails": {
                        "action": "CREATING",
                        "instance": f"{LINK_PREFIX}projects/{project}/zones/{zone}/instances/{member}",
                    },
                    "error": {"code": error["code"], "message": error["message"]},
                    "timestamp": _now_iso(now),
                }
                for member, error in meta["pending"].items()
                if error
            ]

    # ---------------------------------------------------------------- control (outside the REST API)

    def preempt(self, instance: str, zone: str | None = None, project: str | None = None) -> dict[str, Any]:
        """Preempt a Spot VM: it stops (TERMINATED, or deleted with ``instanceTerminationAction=DELETE``).

        A preempted VM in a managed group is recreated after ``recreate_seconds``. A
        ``compute.instances.preempted`` operation is recorded as Google does.

        :param instance: instance name.
        :param zone: zone; searched when omitted.
        :param project: project; searched when omitted.
        """
        with self._txn() as now:
            matches_ = [
                p
                for p in self._data["resources"]
                if "/instances/" in p
                and _last(p) == instance
                and (zone is None or f"/zones/{zone}/" in p)
                and (project is None or p.startswith(f"projects/{project}/"))
            ]
            if not matches_:
                raise not_found(f"instances/{instance}")
            path = matches_[0]
            resource = self._data["resources"][path]
            if not _is_spot(resource):
                raise ApiError(
                    400, f"Instance '{instance}' is not a Spot (or preemptible) VM and cannot be preempted."
                )
            zone_name = path.split("/")[3]
            meta = self._data["meta"][path]
            meta["gen"] += 1
            if resource["scheduling"].get("instanceTerminationAction") == "DELETE" and not meta.get("group"):
                self._remove_instance(path)
            else:
                resource["status"] = "TERMINATED"
                resource["statusMessage"] = "Instance was preempted."
                resource["lastStopTimestamp"] = _now_iso(now)
                if meta.get("group"):
                    self._schedule(
                        now + self._cfg("recreate_seconds"),
                        {"type": "recreate", "path": path, "gen": meta["gen"]},
                    )
            self._dirty = True
            # The id is passed explicitly: a Spot VM with instanceTerminationAction=DELETE is gone by now.
            op = self._operation(
                now,
                f"zones/{zone_name}",
                "compute.instances.preempted",
                path,
                done_at=None,
                target_id=resource["id"],
            )
            return copy.deepcopy(op)

    def instance_boots(self) -> list[dict[str, Any]]:
        """Every instance of every project and zone as a VM's guest sees it, timeline advanced first.

        One entry per instance: ``project``, ``zone``, ``name``, ``id``, ``gen`` (boot generation,
        bumped by every boot, stop, delete and preemption), ``status``, ``statusMessage``, ``deleting``
        (a delete is under way), ``metadata`` (its ``items``) and ``networkIP``. Read by the emulated
        workers (``workers.py``) several times a second, so only these fields are copied.
        """
        with self._txn():
            return [
                self._boot_view(path, resource)
                for path, resource in self._data["resources"].items()
                if "/instances/" in path
            ]

    def _boot_view(self, path: str, resource: dict[str, Any]) -> dict[str, Any]:
        meta = self._data["meta"].get(path, {})
        interfaces = resource.get("networkInterfaces") or [{}]
        return {
            "project": path.split("/")[1],
            "zone": path.split("/")[3],
            "name": resource["name"],
            "id": resource["id"],
            "gen": meta.get("gen", 0),
            "status": resource["status"],
            "statusMessage": resource.get("statusMessage", ""),
            "deleting": bool(meta.get("deleting")),
            "metadata": copy.deepcopy((resource.get("metadata") or {}).get("items") or []),
            "networkIP": interfaces[0].get("networkIP", ""),
        }

    def was_preempted(self, instance_id: str, since: float = 0.0) -> bool:
        """Whether a ``compute.instances.preempted`` Operation targets this instance id.

        Tells a preempted Spot VM that was deleted (``instanceTerminationAction=DELETE``) from one
        deleted by a call. Scans the kept Operations: call it when an instance vanished, not per read.

        :param instance_id: the instance's numeric id (string).
        :param since: only preemptions at or after this time (seconds since the epoch).
        """
        after = _now_iso(since)  # same format as insertTime, so the strings compare as times
        with self._txn():
            return any(
                op["operationType"] == "compute.instances.preempted"
                and op["targetId"] == instance_id
                and op["insertTime"] >= after
                for op in self._data["operations"].values()
            )

    def add_fault(self, fault: dict[str, Any]) -> dict[str, Any]:
        """Register an injected fault (see the emulator module docstring for the shape).

        :param fault: ``method``, ``path_regex``, ``count`` and one of ``status``, ``operation_error``,
            ``delay_seconds``, ``drop_connection``.
        """
        if not any(k in fault for k in ("status", "operation_error", "delay_seconds", "drop_connection")):
            raise ValueError(
                "a fault needs 'status', 'operation_error', 'delay_seconds' or 'drop_connection'"
            )
        try:
            re.compile(fault.get("path_regex", ".*"))
        except re.error as exc:
            raise ValueError(f"invalid path_regex: {exc}") from exc
        if "status" in fault and not 400 <= int(fault["status"]) <= 599:
            raise ValueError("fault 'status' must be an HTTP error status (400-599)")
        entry = {"id": len(self._data["faults"]) + 1, "method": "*", "path_regex": ".*", "count": 1, **fault}
        with self._txn():
            entry["id"] = max((f["id"] for f in self._data["faults"]), default=0) + 1
            self._data["faults"].append(entry)
            self._dirty = True
        return entry

    def clear_faults(self) -> None:
        with self._txn():
            self._data["faults"] = []
            self._dirty = True

    def take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        """Consume one use of the oldest fault matching a request and return it (None when none match).

        Faults queue up: two faults on the same path hit two successive calls, in the order added.

        :param method: HTTP method.
        :param path: request path (``/compute/v1/...``).
        """
        with self._txn():
            for fault in self._data["faults"]:
                if fault["method"].upper() not in ("*", method.upper()) or not re.search(
                    fault["path_regex"], path
                ):
                    continue
                if fault["count"] > 0:
                    fault["count"] -= 1
                self._data["faults"] = [f for f in self._data["faults"] if f["count"] != 0]
                self._dirty = True
                return dict(fault)
            return None

    def configure(self, settings: dict[str, float]) -> dict[str, float]:
        """Change timing settings at run time (``boot_seconds``...).

        :param settings: subset of DEFAULT_CONFIG.
        """
        unknown = set(settings) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown emulator settings {sorted(unknown)}: use {sorted(DEFAULT_CONFIG)}")
        with self._txn():
            self._data["config"].update({k: float(v) for k, v in settings.items()})
            self._dirty = True
            return dict(self._data["config"])

    def reset(self) -> None:
        """Forget every resource, operation, fault and quota override (timing settings stay)."""
        with self._txn():
            config, defaults = self._data["config"], DEFAULT_QUOTAS
            self._data = self._empty()
            self._data["config"] = config
            self._data["default_quotas"] = dict(defaults)
            self._dirty = True

    def snapshot(self) -> dict[str, Any]:
        """Return everything in one JSON document (control API ``GET /_emulator/state``)."""
        with self._txn():
            out: dict[str, Any] = {
                "instances": [],
                "disks": [],
                "instanceGroupManagers": [],
                "instanceTemplates": [],
            }
            for path in sorted(self._data["resources"]):
                collection = path.split("/")[-2]
                out.setdefault(collection, []).append(self._render(path))
            out["operations"] = len(self._data["operations"])
            out["pendingEvents"] = len(self._data["events"])
            out["faults"] = copy.deepcopy(self._data["faults"])
            out["config"] = dict(self._data["config"])
            out["defaultQuotas"] = dict(self._data["default_quotas"])
            out["quotas"] = copy.deepcopy(self._data["quotas"])
            return out

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create templates, groups, instances and disks in one call, bypassing faults and requestIds.

        With ``"ready": true`` (the default) VMs are RUNNING at once instead of booting.

        :param spec: ``{"project", "zone", "instanceTemplates": [...], "instanceGroupManagers": [...],
            "instances": [...], "disks": [...], "ready": bool}`` with the same JSON bodies as the REST calls.
        """
        project = spec.get("project") or "demo-project"
        zone = spec.get("zone") or "us-central1-a"
        self._check_zone(project, zone)
        created: dict[str, list[str]] = {}
        for body in spec.get("instanceTemplates") or []:
            self.insert_template(project, body)
            created.setdefault("instanceTemplates", []).append(body["name"])
        for body in spec.get("disks") or []:
            self.insert_disk(project, zone, body)
            created.setdefault("disks", []).append(body["name"])
        for body in spec.get("instances") or []:
            op = self.insert_instance(project, zone, body)
            if op.get("error"):
                raise ApiError(int(op["httpErrorStatusCode"]), op["error"]["errors"][0]["message"])
            created.setdefault("instances", []).append(body["name"])
        for body in spec.get("instanceGroupManagers") or []:
            self.insert_group(project, zone, body)
            created.setdefault("instanceGroupManagers", []).append(body["name"])
        if spec.get("ready", True):
            with self._txn() as now:
                for path, meta in self._data["meta"].items():
                    if "/instances/" in path and self._data["resources"][path]["status"] in _BOOTING:
                        meta["gen"] += 1
                        self._data["resources"][path]["status"] = "RUNNING"
                        self._data["resources"][path]["lastStartTimestamp"] = _now_iso(now)
                for event in self._data["events"]:
                    event[0] = min(event[0], now)
                self._dirty = True
        return {"project": project, "zone": zone, "created": created}

    def _check_zone(self, project: str, zone: str) -> None:
        if region_of(zone) not in ZONES or zone.rsplit("-", 1)[-1] not in ZONES[region_of(zone)]:
            raise ApiError(400, f"Invalid value for field 'zone': '{zone}'. Unknown zone.")

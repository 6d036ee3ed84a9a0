"""Local Compute Engine emulator: an HTTP server speaking ``compute/v1`` REST JSON on 127.0.0.1.

The real ``google-cloud-compute`` client is pointed at it (see ``compute_client`` and
``transport_kwargs``), so tests and the demo drive the same code that talks to Google Cloud. It
serves, with Google's URL paths, verbs, field names, Operation objects and error JSON:

- ``zones`` get/list, ``regions`` get/list (with ``quotas``: limit and usage), ``machineTypes``
  get/list (catalogue in ``emulator_machine_types``);
- ``instances`` insert/bulkInsert/get/list (``filter``, e.g. ``labels.pool = etl``)/delete/stop/start/
  setMachineType/setLabels/attachDisk/detachDisk/update, and ``aggregated/instances``;
- ``disks`` insert/get/list/delete/resize/setLabels; ``instanceTemplates`` insert/get/list/delete;
- ``instanceGroupManagers`` insert/get/list/delete/resize/listManagedInstances/deleteInstances/listErrors;
- ``zoneOperations``, ``regionOperations``, ``globalOperations`` get/list/wait/delete.

Simulated behaviour: VMs boot PROVISIONING -> STAGING -> RUNNING over ``boot_seconds``; insert/start
Operations are DONE when the VM is RUNNING; a MIG resize is DONE at once while its VMs boot
(``currentActions.creating``); ``requestId`` de-duplicates retries (same Operation, nothing new);
regional quotas (CPUS, PREEMPTIBLE_CPUS for Spot, INSTANCES, DISKS_TOTAL_GB, SSD_TOTAL_GB) fail the
Operation with ``QUOTA_EXCEEDED`` (HTTP 403, the client raises ``Forbidden``); a MIG over quota keeps
the missing VMs queued with the error in ``listManagedInstances``/``listErrors`` and creates them
when quota frees up; ``setMachineType`` needs a stopped VM; ``TIER_1`` bandwidth needs N2/N2D/C2/C3
with 30+ vCPUs.

Control API (JSON, outside ``/compute/v1``):

- ``GET /_emulator/health`` -> ``{"status": "ok"}``; ``GET /_emulator/state`` -> every resource,
  faults, quotas and timing settings; ``POST /_emulator/reset`` forgets everything.
- ``POST /_emulator/config {"boot_seconds": 2, "stop_seconds": 0.3, "operation_seconds": 0.05,
  "wait_timeout_seconds": 120, "recreate_seconds": 1}`` (any subset).
- ``POST /_emulator/faults`` registers a fault for the next ``count`` matching ``/compute/v1`` calls
  (``count`` defaults to 1, -1 = forever; ``method`` defaults to any; ``path_regex`` is searched in
  the request path):
  ``{"method": "POST", "path_regex": "/instances$", "status": 429, "count": 2}`` answers with that
  HTTP error (optional ``message``, ``reason``); ``{"operation_error": {"code": "ZONE_RESOURCE_POOL_EXHAUSTED",
  "message": "...", "http_status": 503}}`` makes a mutating call return an Operation that ends in that
  error without doing anything; ``{"delay_seconds": 5}`` delays the answer (client timeouts);
  ``{"drop_connection": true}`` closes the connection without an answer (a connection error).
  ``GET /_emulator/faults`` lists the active faults, ``DELETE /_emulator/faults`` clears them.
- ``POST /_emulator/preempt {"instance": "name", "zone": "...", "project": "..."}`` preempts a Spot
  VM (TERMINATED, ``statusMessage`` "Instance was preempted."; MIG members are recreated).
- ``POST /_emulator/quotas {"region": "us-central1", "metric": "CPUS", "limit": 8, "project": "p"}``
  (``region`` ``*`` changes the default of every region, ``project`` defaults to all).
- ``POST /_emulator/seed {"project": "p", "zone": "z", "instanceTemplates": [...],
  "instanceGroupManagers": [...], "instances": [...], "disks": [...], "ready": true}`` creates
  resources from the same JSON bodies as the REST calls (``ready`` makes VMs RUNNING at once).
- ``GET /_emulator/workers`` (emulator started with workers, ``--workers``; else 404): the real Airflow
  Celery workers run by RUNNING VMs whose metadata names queues (``workers.py``):
  ``{"workers": [{"instance", "project", "zone", "pid", "queues", "concurrency", "hostname",
  "celery_hostname", "log_server_port", "log", "started_at"}], "kills": [{"instance", "project",
  "zone", "reason", "pid", "at"}], "killed": {reason: count}, "exits": [...], "skipped": [{"instance",
  "why", ...}], "started": N, "hostname_form", "log_dir"}``. ``pid`` is the VM's init, leader of the
  session holding the worker; a kill ``reason`` is ``deleted``, ``stopped``, ``preempted``,
  ``restarted`` or ``closed``; ``exits`` are workers that ended on their own (not restarted);
  ``skipped`` are RUNNING VMs without a worker.

Run it with ``airflow-predictive gce-emulator --host 127.0.0.1 --port 8085 [--state FILE] [--workers]``
or, in Python, ``with running_emulator() as url: ...``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_predictive_tools.emulator.machine_types import MACHINE_TYPES
from airflow_predictive_tools.emulator.state import (
    LINK_PREFIX,
    ZONES,
    ApiError,
    ComputeEngineState,
    not_found,
    region_of,
)
from airflow_predictive_tools.emulator.workers import WorkerFleet, WorkerOptions

__all__ = [
    "ComputeEngineEmulator",
    "ComputeEngineState",
    "EmulatorControl",
    "WorkerOptions",
    "compute_client",
    "running_emulator",
    "transport_kwargs",
]

_SEG = r"(?P<{}>[^/]+)"
_P = "projects/" + _SEG.format("project")
_Z = _P + "/zones/" + _SEG.format("zone")
_MUTATING_POSTS = {"listManagedInstances", "wait"}
_FAULT_MESSAGES = {
    429: ("Rate Limit Exceeded", "rateLimitExceeded"),
    500: ("Internal error. Please try again or contact Google Support.", "backendError"),
    503: ("The service is currently unavailable.", "backendError"),
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Request:
    """One parsed REST call handed to a route."""

    def __init__(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any], params: dict[str, str]
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.params = params

    def __getitem__(self, key: str) -> str:
        return self.params[key]

    @property
    def request_id(self) -> str | None:
        return self.query.get("requestId") or self.query.get("request_id") or None

    @property
    def filter(self) -> str | None:
        return self.query.get("filter") or None


Route = tuple[str, re.Pattern[str], Callable[[ComputeEngineState, _Request], Any]]


def _list_response(
    kind: str, collection: str, items: list[dict[str, Any]], query: dict[str, str], key: str = "items"
) -> dict[str, Any]:
    max_results = int(query.get("maxResults") or query.get("max_results") or 500)
    start = int(query.get("pageToken") or query.get("page_token") or 0)
    page = items[start : start + max(1, min(max_results, 500))]
    out: dict[str, Any] = {"kind": kind, "id": collection, key: page, "selfLink": LINK_PREFIX + collection}
    if start + len(page) < len(items):
        out["nextPageToken"] = str(start + len(page))
    return out


def _zone_resource(project: str, zone: str) -> dict[str, Any]:
    region = region_of(zone)
    if region not in ZONES or zone.rsplit("-", 1)[-1] not in ZONES[region]:
        raise not_found(f"projects/{project}/zones/{zone}")
    return {
        "kind": "compute#zone",
        "id": str(2000 + sorted(f"{r}-{z}" for r in ZONES for z in ZONES[r]).index(zone)),
        "name": zone,
        "description": zone,
        "status": "UP",
        "region": f"{LINK_PREFIX}projects/{project}/regions/{region}",
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "availableCpuPlatforms": [
            "Intel Cascade Lake",
            "Intel Ice Lake",
            "AMD Milan",
            "Intel Sapphire Rapids",
        ],
        "selfLink": f"{LINK_PREFIX}projects/{project}/zones/{zone}",
        "supportsPzs": False,
    }


def _machine_type(project: str, zone: str, name: str) -> dict[str, Any]:
    _zone_resource(project, zone)
    if name not in MACHINE_TYPES:
        raise not_found(f"projects/{project}/zones/{zone}/machineTypes/{name}")
    return MACHINE_TYPES[name].to_resource(project, zone, LINK_PREFIX)


def _aggregated(state: ComputeEngineState, r: _Request, collection: str, kind: str) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for region, letters in sorted(ZONES.items()):
        for letter in letters:
            zone = f"{region}-{letter}"
            found = state.list(f"projects/{r['project']}/zones/{zone}/{collection}", r.filter)
            if found:
                items[f"zones/{zone}"] = {collection: found}
    return {
        "kind": kind,
        "id": f"projects/{r['project']}/aggregated/{collection}",
        "items": items,
        "selfLink": f"{LINK_PREFIX}projects/{r['project']}/aggregated/{collection}",
    }


def _operation_routes() -> list[Route]:
    routes: list[Route] = []
    for scope in (r"zones/(?P<zone>[^/]+)", r"regions/(?P<region>[^/]+)", "global"):
        base = f"{_P}/{scope}/operations"

        def path_of(r: _Request) -> str:
            return r.path[len("/compute/v1/") :].removesuffix("/wait")

        routes += [
            (
                "GET",
                re.compile(f"^{base}$"),
                lambda s, r: _list_response(
                    "compute#operationList",
                    r.path[len("/compute/v1/") :],
                    s.list(r.path[len("/compute/v1/") :], r.filter, operations=True),
                    r.query,
                ),
            ),
            ("GET", re.compile(f"^{base}/(?P<op>[^/]+)$"), lambda s, r: s.get_operation(path_of(r))),
            ("POST", re.compile(f"^{base}/(?P<op>[^/]+)/wait$"), lambda s, r: s.wait_operation(path_of(r))),
            (
                "DELETE",
                re.compile(f"^{base}/(?P<op>[^/]+)$"),
                lambda s, r: s.delete_operation(path_of(r)) or {},
            ),
        ]
    return routes


def _collection(r: _Request) -> str:
    return r.path[len("/compute/v1/") :]


def _read_routes(scope: str, collection: str, kind: str, *, aggregated: bool) -> list[Route]:
    """``list`` and ``get`` of one stored collection (and ``aggregatedList`` of a zonal one).

    :param scope: path pattern of the collection's parent (``_Z`` for zonal, ``_P/global`` for global).
    :param collection: REST collection name, e.g. ``disks``.
    :param kind: resource kind without ``compute#``, e.g. ``disk``.
    :param aggregated: whether Google serves ``projects/P/aggregated/<collection>``.
    """
    routes: list[Route] = [
        (
            "GET",
            re.compile(f"^{scope}/{collection}$"),
            lambda s, r: _list_response(
                f"compute#{kind}List", _collection(r), s.list(_collection(r), r.filter), r.query
            ),
        ),
        ("GET", re.compile(f"^{scope}/{collection}/(?P<name>[^/]+)$"), lambda s, r: s.get(_collection(r))),
    ]
    if aggregated:
        routes.append(
            (
                "GET",
                re.compile(f"^{_P}/aggregated/{collection}$"),
                lambda s, r: _aggregated(s, r, collection, f"compute#{kind}AggregatedList"),
            )
        )
    return routes


ROUTES: list[Route] = [
    (
        "GET",
        re.compile(f"^{_P}/zones$"),
        lambda s, r: _list_response(
            "compute#zoneList",
            f"projects/{r['project']}/zones",
            [_zone_resource(r["project"], f"{g}-{z}") for g in sorted(ZONES) for z in ZONES[g]],
            r.query,
        ),
    ),
    ("GET", re.compile(f"^{_Z}$"), lambda s, r: _zone_resource(r["project"], r["zone"])),
    (
        "GET",
        re.compile(f"^{_P}/regions$"),
        lambda s, r: _list_response(
            "compute#regionList",
            f"projects/{r['project']}/regions",
            [s.region(r["project"], g) for g in sorted(ZONES)],
            r.query,
        ),
    ),
    (
        "GET",
        re.compile(f"^{_P}/regions/(?P<region>[^/]+)$"),
        lambda s, r: s.region(r["project"], r["region"]),
    ),
    (
        "GET",
        re.compile(f"^{_Z}/machineTypes$"),
        lambda s, r: _list_response(
            "compute#machineTypeList",
            _collection(r),
            [
                m
                for m in (_machine_type(r["project"], r["zone"], n) for n in sorted(MACHINE_TYPES))
                if _matches(m, r.filter)
            ],
            r.query,
        ),
    ),
    (
        "GET",
        re.compile(f"^{_Z}/machineTypes/(?P<name>[^/]+)$"),
        lambda s, r: _machine_type(r["project"], r["zone"], r["name"]),
    ),
    # instances
    (
        "POST",
        re.compile(f"^{_Z}/instances$"),
        lambda s, r: s.insert_instance(r["project"], r["zone"], _with_template(s, r), r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instances/bulkInsert$"),
        lambda s, r: s.bulk_insert_instances(r["project"], r["zone"], r.body, r.request_id),
    ),
    (
        "DELETE",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)$"),
        lambda s, r: s.delete_instance(r["project"], r["zone"], r["name"], r.request_id),
    ),
    (
        "PUT",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)$"),
        lambda s, r: s.update_instance(
            r["project"],
            r["zone"],
            r["name"],
            r.body,
            r.query.get("mostDisruptiveAllowedAction"),
            r.request_id,
        ),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)/stop$"),
        lambda s, r: s.stop_instance(r["project"], r["zone"], r["name"], r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)/start$"),
        lambda s, r: s.start_instance(r["project"], r["zone"], r["name"], r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)/setMachineType$"),
        lambda s, r: s.set_machine_type(r["project"], r["zone"], r["name"], r.body, r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)/setLabels$"),
        lambda s, r: s.set_labels(r["project"], r["zone"], "instances", r["name"], r.body, r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)/attachDisk$"),
        lambda s, r: s.attach_disk(r["project"], r["zone"], r["name"], r.body, r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instances/(?P<name>[^/]+)/detachDisk$"),
        lambda s, r: s.detach_disk(
            r["project"], r["zone"], r["name"], r.query.get("deviceName", ""), r.request_id
        ),
    ),
    # disks
    (
        "POST",
        re.compile(f"^{_Z}/disks$"),
        lambda s, r: s.insert_disk(r["project"], r["zone"], r.body, r.request_id),
    ),
    (
        "DELETE",
        re.compile(f"^{_Z}/disks/(?P<name>[^/]+)$"),
        lambda s, r: s.delete_disk(r["project"], r["zone"], r["name"], r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/disks/(?P<name>[^/]+)/resize$"),
        lambda s, r: s.resize_disk(r["project"], r["zone"], r["name"], r.body, r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/disks/(?P<name>[^/]+)/setLabels$"),
        lambda s, r: s.set_labels(r["project"], r["zone"], "disks", r["name"], r.body, r.request_id),
    ),
    # instance templates
    (
        "POST",
        re.compile(f"^{_P}/global/instanceTemplates$"),
        lambda s, r: s.insert_template(r["project"], r.body, r.request_id),
    ),
    (
        "DELETE",
        re.compile(f"^{_P}/global/instanceTemplates/(?P<name>[^/]+)$"),
        lambda s, r: s.delete_template(r["project"], r["name"], r.request_id),
    ),
    # managed instance groups
    (
        "POST",
        re.compile(f"^{_Z}/instanceGroupManagers$"),
        lambda s, r: s.insert_group(r["project"], r["zone"], r.body, r.request_id),
    ),
    (
        "DELETE",
        re.compile(f"^{_Z}/instanceGroupManagers/(?P<name>[^/]+)$"),
        lambda s, r: s.delete_group(r["project"], r["zone"], r["name"], r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instanceGroupManagers/(?P<name>[^/]+)/resize$"),
        lambda s, r: s.resize_group(r["project"], r["zone"], r["name"], _int_param(r, "size"), r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instanceGroupManagers/(?P<name>[^/]+)/deleteInstances$"),
        lambda s, r: s.delete_group_instances(r["project"], r["zone"], r["name"], r.body, r.request_id),
    ),
    (
        "POST",
        re.compile(f"^{_Z}/instanceGroupManagers/(?P<name>[^/]+)/listManagedInstances$"),
        lambda s, r: _list_response(
            "",
            _collection(r),
            s.list_managed_instances(r["project"], r["zone"], r["name"], r.filter),
            r.query,
            key="managedInstances",
        ),
    ),
    (
        "GET",
        re.compile(f"^{_Z}/instanceGroupManagers/(?P<name>[^/]+)/listErrors$"),
        lambda s, r: _list_response(
            "", _collection(r), s.list_group_errors(r["project"], r["zone"], r["name"]), r.query
        ),
    ),
    *_read_routes(_Z, "instances", "instance", aggregated=True),
    *_read_routes(_Z, "disks", "disk", aggregated=True),
    *_read_routes(f"{_P}/global", "instanceTemplates", "instanceTemplate", aggregated=False),
    *_read_routes(_Z, "instanceGroupManagers", "instanceGroupManager", aggregated=True),
    *_operation_routes(),
]


def _matches(resource: dict[str, Any], expression: str | None) -> bool:
    from airflow_predictive_tools.emulator.filter import FilterError, matches

    try:
        return matches(resource, expression)
    except FilterError as exc:
        raise ApiError(400, str(exc)) from exc


def _int_param(r: _Request, name: str) -> int:
    try:
        return int(r.query[name])
    except (KeyError, ValueError) as exc:
        raise ApiError(
            400,
            f"Invalid value for field '{name}': '{r.query.get(name, '')}'. Must be an integer.",
            "required",
        ) from exc


def _with_template(state: ComputeEngineState, r: _Request) -> dict[str, Any]:
    """Merge ``sourceInstanceTemplate`` (query parameter of instances.insert) into the body."""
    source = r.query.get("sourceInstanceTemplate")
    if not source:
        return r.body
    template = state.get(
        source[source.find("projects/") :]
        if "projects/" in source
        else f"projects/{r['project']}/{source.lstrip('/')}"
    )
    return {**template["properties"], **r.body}


def _route(
    method: str, path: str
) -> tuple[Callable[[ComputeEngineState, _Request], Any], dict[str, str]] | None:
    relative = path[len("/compute/v1/") :]
    for verb, pattern, handler in ROUTES:
        if verb == method:
            match = pattern.match(relative)
            if match:
                return handler, match.groupdict()
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _EmulatorHTTPServer
    protocol_version = "HTTP/1.1"
    # One buffered write per response and no Nagle: otherwise every call pays a 40 ms delayed ACK.
    wbufsize = -1
    disable_nagle_algorithm = True
    server_version = "ComputeEngineEmulator/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        # SO_LINGER 0: close with a TCP reset, so the client fails at once instead of waiting
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _handle(self, method: str) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            try:
                body = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise ApiError(400, f"Invalid JSON payload received. {exc}", "parseError") from exc
            if url.path.startswith("/_emulator/"):
                self._send(200, _control(state, method, url.path, body, self.server.fleet))
                return
            if not url.path.startswith("/compute/v1/"):
                raise ApiError(404, f"The requested URL {url.path} was not found on this server.")
            forced_error = None
            fault = state.take_fault(method, url.path)
            if fault is not None:
                if fault.get("delay_seconds"):
                    time.sleep(float(fault["delay_seconds"]))
                if fault.get("drop_connection"):
                    self._drop()  # the client sees a reset connection, as when a load balancer drops it
                    return
                if fault.get("status"):
                    status = int(fault["status"])
                    message, reason = _FAULT_MESSAGES.get(status, ("Injected fault", None))
                    raise ApiError(status, fault.get("message", message), fault.get("reason", reason))
                forced_error = fault.get("operation_error")
            found = _route(method, url.path)
            if found is None:
                raise ApiError(404, f"The requested URL {url.path} was not found on this server.")
            handler, params = found
            request = _Request(method, url.path, query, body, params)
            verb = url.path.rsplit("/", 1)[-1]
            if forced_error and method != "GET" and verb not in _MUTATING_POSTS:
                self._send(200, _failed_operation(state, request, verb, forced_error))
                return
            self._send(200, handler(state, request))
        except ApiError as exc:
            self._send(exc.code, exc.body())
        except ValueError as exc:
            self._send(400, ApiError(400, str(exc)).body())


def _failed_operation(
    state: ComputeEngineState, r: _Request, verb: str, error: dict[str, Any]
) -> dict[str, Any]:
    relative = r.path[len("/compute/v1/") :]
    if "zone" in r.params:
        scope = f"zones/{r['zone']}"
    elif "region" in r.params:
        scope = f"regions/{r['region']}"
    else:
        scope = "global"
    target = relative
    op_type = {"POST": "insert", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}[r.method]
    if r.method == "POST" and "name" in r.params:
        target, op_type = relative.rsplit("/", 1)[0], verb
    elif r.method == "POST":
        target = f"{relative}/{r.body.get('name', 'unnamed')}"
    if "/instanceGroupManagers/" in target:
        op_type = f"compute.instanceGroupManagers.{op_type}"
    return state.mutate(
        r["project"],
        r.request_id,
        lambda now: {},
        forced_error=error,
        forced_scope=scope,
        forced_target=target,
        forced_type=op_type,
    )


def _control(
    state: ComputeEngineState, method: str, path: str, body: dict[str, Any], fleet: WorkerFleet | None
) -> Any:
    action = path[len("/_emulator/") :].strip("/")
    if (method, action) == ("GET", "workers"):
        if fleet is None:
            raise ApiError(404, "VMs run no Airflow workers: start the emulator with --workers (workers=...)")
        return fleet.view()
    if (method, action) == ("GET", "health"):
        return {"status": "ok"}
    if (method, action) == ("GET", "state"):
        return state.snapshot()
    if (method, action) == ("POST", "reset"):
        state.reset()
        return {"status": "reset"}
    if (method, action) == ("POST", "config"):
        return state.configure(body)
    if action == "faults":
        if method == "GET":
            return state.snapshot()["faults"]
        if method == "DELETE":
            state.clear_faults()
            return {"status": "cleared"}
        if method == "POST":
            return state.add_fault(body)
    if (method, action) == ("POST", "preempt"):
        if not body.get("instance"):
            raise ApiError(400, "preempt needs {'instance': name} (optional 'zone', 'project')")
        return state.preempt(body["instance"], body.get("zone"), body.get("project"))
    if (method, action) == ("POST", "quotas"):
        missing = [k for k in ("region", "metric", "limit") if k not in body]
        if missing:
            raise ApiError(
                400,
                f"quotas needs {missing} (e.g. {{'region': 'us-central1', 'metric': 'CPUS', 'limit': 8}})",
            )
        state.set_quota(body["region"], body["metric"], float(body["limit"]), body.get("project", "*"))
        return {"status": "ok"}
    if (method, action) == ("POST", "seed"):
        return state.seed(body)
    raise ApiError(
        404,
        f"Unknown control call {method} /_emulator/{action}: see the module docstring of airflow_predictive_tools.emulator.server",
    )


class _EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        state: ComputeEngineState,
        verbose: bool,
        fleet: WorkerFleet | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.verbose = verbose
        self.fleet = fleet


class ComputeEngineEmulator:
    """The emulator server: start it in a background thread or serve in the foreground.

    :param host: loopback address to bind (127.0.0.1 by default; other interfaces are refused).
    :param port: TCP port, 0 for a free one.
    :param state_file: JSON file to persist state to (reloaded when it exists).
    :param config: timing overrides (``boot_seconds``, ``stop_seconds``, ``operation_seconds``,
        ``wait_timeout_seconds``, ``recreate_seconds``).
    :param quotas: default regional quota limits, e.g. ``{"CPUS": 24}``.
    :param verbose: log every request to stderr.
    :param workers: run a real Airflow Celery worker on every RUNNING VM whose metadata names queues
        (``WorkerOptions``, a dict of its fields, or True for the defaults; None: VMs are records only).
        Workers inherit this process's environment (``AIRFLOW_HOME``, ``AIRFLOW__CELERY__BROKER_URL``...).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | Path | None = None,
        config: dict[str, float] | None = None,
        quotas: dict[str, float] | None = None,
        verbose: bool = False,
        workers: WorkerOptions | dict[str, Any] | bool | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the emulator binds loopback addresses only, not {host!r}: use 127.0.0.1")
        options = WorkerOptions.of(workers)
        self.state = ComputeEngineState(config=config, quotas=quotas, state_file=state_file)
        self.fleet = WorkerFleet(self.state, options) if options else None
        self._server = _EmulatorHTTPServer((host, port), self.state, verbose, self.fleet)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (the API is under ``/compute/v1``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ComputeEngineEmulator:
        """Serve in a daemon thread and return self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gce-emulator",
            daemon=True,
        )
        self._thread.start()
        if self.fleet is not None:
            self.fleet.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` or KeyboardInterrupt."""
        if self.fleet is not None:
            self.fleet.start()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._close_fleet()
            self.state.close()
            self._server.server_close()

    def stop(self) -> None:
        """Stop serving, kill every emulated worker and release blocked ``wait`` calls."""
        self._close_fleet()
        self.state.close()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _close_fleet(self) -> None:
        if self.fleet is not None:
            self.fleet.close()

    def __enter__(self) -> ComputeEngineEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_emulator(
    state_file: str | Path | None = None,
    config: dict[str, float] | None = None,
    quotas: dict[str, float] | None = None,
    workers: WorkerOptions | dict[str, Any] | bool | None = None,
) -> Iterator[str]:
    """Run the emulator on 127.0.0.1 on a free port in a background thread; yield its base URL.

    :param state_file: optional JSON state file.
    :param config: timing overrides, e.g. ``{"boot_seconds": 0.5}``.
    :param quotas: default regional quota limits, e.g. ``{"CPUS": 24}``.
    :param workers: run Airflow workers on the VMs (see ``ComputeEngineEmulator``).
    """
    emulator = ComputeEngineEmulator(
        state_file=state_file, config=config, quotas=quotas, workers=workers
    ).start()
    try:
        yield emulator.url
    finally:
        emulator.stop()


def transport_kwargs(url: str) -> dict[str, Any]:
    """Return the keyword arguments of a google-cloud-compute REST transport for an emulator URL.

    ``compute_v1.InstancesClient(transport=InstancesRestTransport(**transport_kwargs(url)))`` talks to
    the emulator, but its Operation ``result()`` would still poll compute.googleapis.com: prefer
    ``compute_client`` which also points the operation pollers at the emulator.

    :param url: emulator base URL, e.g. ``http://127.0.0.1:8085``.
    """
    from google.auth.credentials import AnonymousCredentials

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"emulator URL {url!r} must look like http://127.0.0.1:PORT")
    return {"host": parts.netloc, "url_scheme": parts.scheme, "credentials": AnonymousCredentials()}


def compute_client(client_class: type, url: str) -> Any:
    """Build a real google-cloud-compute client (e.g. ``compute_v1.InstancesClient``) talking to the emulator.

    Besides the REST transport, it wires the zone/region/global operation clients that
    ``ExtendedOperation.result()`` uses to poll, which otherwise default to compute.googleapis.com.

    :param client_class: a ``google.cloud.compute_v1`` client class.
    :param url: emulator base URL.
    """
    from google.cloud import compute_v1

    kwargs = transport_kwargs(url)
    transport = client_class.get_transport_class("rest")(**kwargs)
    if not hasattr(transport, "_extended_operations_services"):
        return client_class(transport=transport)  # read-only services (machineTypes, zones...)
    for key, operations_class in (
        ("zone_operations", compute_v1.ZoneOperationsClient),
        ("region_operations", compute_v1.RegionOperationsClient),
        ("global_operations", compute_v1.GlobalOperationsClient),
    ):
        operations_transport = operations_class.get_transport_class("rest")(**kwargs)
        transport._extended_operations_services[key] = operations_class(transport=operations_transport)
    return client_class(transport=transport)


class EmulatorControl:
    """Tiny client of the control API (faults, preemption, quotas, seeding) for tests and the demo.

    :param url: emulator base URL.
    :param timeout: seconds per call.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
        """Send one control call and return its JSON answer.

        :param method: HTTP method.
        :param action: path under ``/_emulator/``.
        :param body: JSON body.
        """
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/_emulator/{action}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - loopback URL
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"emulator control call {method} {action} failed: {exc.read().decode()}"
            ) from exc

    def health(self) -> bool:
        """Return whether the emulator answers ``GET /_emulator/health``."""
        try:
            return self.call("GET", "health") == {"status": "ok"}
        except (OSError, RuntimeError):
            return False

    def state(self) -> dict[str, Any]:
        """Return every resource, the active faults, quotas and timing settings."""
        return self.call("GET", "state")

    def reset(self) -> None:
        """Forget every resource, operation, fault and quota override."""
        self.call("POST", "reset", {})

    def configure(self, **settings: float) -> dict[str, float]:
        """Change timing settings (``boot_seconds=2`` ...) and return them all.

        :param settings: ``boot_seconds``, ``stop_seconds``, ``operation_seconds``, ``wait_timeout_seconds``,
            ``recreate_seconds``.
        """
        return self.call("POST", "config", settings)

    def inject_fault(self, **fault: Any) -> dict[str, Any]:
        """Register a fault (``status=429``, ``operation_error={...}`` or ``delay_seconds=5``) and return it.

        :param fault: ``method``, ``path_regex``, ``count`` and the fault itself (see the module docstring).
        """
        return self.call("POST", "faults", fault)

    def clear_faults(self) -> None:
        """Remove every active fault."""
        self.call("DELETE", "faults")

    def preempt(self, instance: str, zone: str | None = None, project: str | None = None) -> dict[str, Any]:
        """Preempt a Spot VM and return the ``compute.instances.preempted`` Operation.

        :param instance: instance name.
        :param zone: zone, searched when omitted.
        :param project: project, searched when omitted.
        """
        return self.call("POST", "preempt", {"instance": instance, "zone": zone, "project": project})

    def set_quota(self, region: str, metric: str, limit: float, project: str = "*") -> None:
        """Set one regional quota limit.

        :param region: region name, ``*`` for every region.
        :param metric: CPUS, PREEMPTIBLE_CPUS, INSTANCES, DISKS_TOTAL_GB or SSD_TOTAL_GB.
        :param limit: new limit.
        :param project: project id, ``*`` for all.
        """
        self.call("POST", "quotas", {"region": region, "metric": metric, "limit": limit, "project": project})

    def workers(self) -> dict[str, Any]:
        """The Airflow workers the VMs run, their kills and exits (``GET /_emulator/workers``)."""
        return self.call("GET", "workers")

    def seed(self, **spec: Any) -> dict[str, Any]:
        """Create templates, groups, instances and disks at once (stops at the first error, keeping what it made).

        :param spec: ``project``, ``zone``, ``instanceTemplates``, ``instanceGroupManagers``, ``instances``,
            ``disks`` (REST JSON bodies) and ``ready`` (VMs RUNNING at once, default true).
        """
        return self.call("POST", "seed", spec)

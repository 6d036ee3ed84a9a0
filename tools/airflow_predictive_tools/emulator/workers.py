"""Emulated VMs that run a real Airflow Celery worker: one ``airflow celery worker`` per RUNNING VM.

A ``WorkerFleet`` watches the emulator's state several times a second. A VM that reaches RUNNING with
the queue metadata a real worker VM's startup script reads (``airflow-celery-queues``, optionally
``airflow-worker-concurrency``: see ``airflow_predictive.contracts.worker_metadata``) gets a worker,
started in a session of its own under a small init (``guest.py``) so that it dies with the emulator.
When the VM stops running (deleted, stopped, preempted, restarted), every process of that session is
SIGKILLed at once, as when a VM vanishes. A VM without queue metadata runs nothing, like a VM without
a startup script.

Workers inherit the emulator's environment (``AIRFLOW_HOME``, ``AIRFLOW__CELERY__BROKER_URL``...) plus
their own host name (``vm_hostname.py``) and log server port.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_predictive.contracts.worker_metadata import QUEUES_KEY, read_metadata
from airflow_predictive_tools.emulator import guest
from airflow_predictive_tools.emulator.state import ComputeEngineState
from airflow_predictive_tools.emulator.vm_hostname import CALLABLE, ENV_VAR, FORMS, boot_hostname

log = logging.getLogger(__name__)

PREEMPTED_MESSAGE = "Instance was preempted."
_BOOTING_OR_RUNNING = ("PROVISIONING", "STAGING", "RUNNING")
_TOOLS_ROOT = str(Path(__file__).resolve().parents[2])
_MAX_RECORDS = 1000  # kills and exits kept for the control API (a long demo must not grow without bound)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class WorkerOptions:
    """How the emulator runs Airflow workers on its VMs.

    :param hostname_form: host name the worker reports: ``fqdn`` (``<vm>.<zone>.c.<project>.internal``),
        ``short`` (``<vm>``) or ``ip`` (the VM's internal IP).
    :param log_dir: folder for one ``<project>.<zone>.<vm>.log`` per VM (kept); None: a temporary folder
        removed when the fleet closes.
    :param tick_seconds: how often the fleet compares VMs and workers.
    """

    hostname_form: str = "fqdn"
    log_dir: str | Path | None = None
    tick_seconds: float = 0.2

    def __post_init__(self) -> None:
        if self.hostname_form not in FORMS:
            raise ValueError(f"worker hostname form {self.hostname_form!r}: use one of {', '.join(FORMS)}")
        if not 0 < self.tick_seconds <= 10:
            raise ValueError(f"worker tick_seconds {self.tick_seconds}: must be in (0, 10]")
        if self.log_dir is not None and Path(self.log_dir).exists() and not Path(self.log_dir).is_dir():
            raise ValueError(f"worker log directory {self.log_dir}: exists and is not a directory")

    @classmethod
    def of(cls, value: WorkerOptions | Mapping[str, Any] | bool | None) -> WorkerOptions | None:
        """Options from what ``ComputeEngineEmulator(workers=...)`` accepts (None/False: no workers).

        :param value: options, a mapping of their fields, True (defaults), or None/False.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"hostname_form", "log_dir", "tick_seconds"}
            if unknown:
                raise ValueError(
                    f"unknown worker options {sorted(unknown)}: use hostname_form, log_dir, tick_seconds"
                )
            return cls(**value)
        raise ValueError(f"workers={value!r}: pass WorkerOptions, a dict of its fields, True or None")


def worker_command(vm: str, queues: list[str], concurrency: int | None) -> list[str]:
    """The ``airflow celery worker`` command line a worker VM's startup script runs.

    :param vm: instance name (the Celery node is ``celery@<vm>``).
    :param queues: queues from the VM's metadata.
    :param concurrency: slots from the VM's metadata (None: Airflow's ``[celery] worker_concurrency``).
    """
    command = [sys.executable, "-m", "airflow", "celery", "worker", "--queues", ",".join(queues)]
    command += ["--celery-hostname", f"celery@{vm}"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    # Mingle and gossip make every start and every worker chat with all the others: useless here.
    # No log server: Airflow's binds every interface, and the API server reads the task logs from
    # this machine's log folder, which every emulated VM shares.
    return [*command, "--without-mingle", "--without-gossip", "--skip-serve-logs"]


@dataclass
class _Worker:
    boot: dict[str, Any]
    process: subprocess.Popen[bytes]
    queues: list[str]
    concurrency: int | None
    hostname: str
    log_port: int
    log_path: Path
    started_at: float = field(default_factory=time.time)

    def view(self) -> dict[str, Any]:
        return {
            "instance": self.boot["name"],
            "project": self.boot["project"],
            "zone": self.boot["zone"],
            "pid": self.process.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "hostname": self.hostname,
            "celery_hostname": f"celery@{self.boot['name']}",
            "log_server_port": self.log_port,
            "log": str(self.log_path),
            "started_at": _iso(self.started_at),
        }


def _boot_key(boot: Mapping[str, Any]) -> tuple[str, str, str, str, int]:
    # The id tells a re-created VM of the same name apart; the generation, a stopped-and-started one.
    return (boot["project"], boot["zone"], boot["name"], boot["id"], boot["gen"])


class WorkerFleet:
    """Runs one real Airflow Celery worker per RUNNING emulated VM whose metadata names queues.

    :param state: the emulator's state.
    :param options: hostname form, log folder, tick.
    """

    def __init__(self, state: ComputeEngineState, options: WorkerOptions | None = None) -> None:
        self.options = options or WorkerOptions()
        self._state = state
        self._lock = threading.Lock()
        self._workers: dict[tuple[str, str, str, str, int], _Worker] = {}
        self._settled: set[tuple[str, str, str, str, int]] = set()  # boots that get no (more) worker
        self._kills: list[dict[str, Any]] = []
        self._kill_counts: Counter[str] = Counter()  # by reason, over the fleet's life (the list is capped)
        self._exits: list[dict[str, Any]] = []
        self._skipped: dict[tuple[str, str, str, str, int], dict[str, Any]] = {}
        self._started = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._own_log_dir = self.options.log_dir is None
        self.log_dir = Path(self.options.log_dir) if self.options.log_dir else None

    def start(self) -> WorkerFleet:
        """Create the log folder, start the reconciler thread and return self."""
        if self._thread is not None:
            return self
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="gce-emulator-workers-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Workers get the kernel's parent-death signal when THIS thread ends: it must live as long as
        # the fleet, so every worker is started (and killed) from it.
        self._thread = threading.Thread(target=self._run, name="gce-emulator-workers", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Kill every worker's session, stop the thread, remove the temporary log folder."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._kill_all("closed")
        if self._own_log_dir and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # one bad pass must not end the thread: that would kill every worker
                log.exception("emulated worker fleet: reconcile failed")
            self._stop.wait(self.options.tick_seconds)
        self._kill_all("closed")

    def reconcile(self) -> None:
        """One pass: kill the workers of VMs that left RUNNING, start workers on new RUNNING VMs."""
        boots = self._state.instance_boots()
        running = {_boot_key(b): b for b in boots if b["status"] == "RUNNING"}
        by_id = {b["id"]: b for b in boots}
        with self._lock:
            if self._stop.is_set():
                return
            for key, worker in list(self._workers.items()):
                if key not in running:
                    self._kill(key, self._reason(worker, by_id.get(worker.boot["id"])))
                elif worker.process.poll() is not None:
                    self._exited(key)
            for key, boot in running.items():
                if key not in self._workers and key not in self._settled:
                    self._start(key, boot)
            self._settled &= set(running)
            self._skipped = {k: v for k, v in self._skipped.items() if k in running}

    def _reason(self, worker: _Worker, boot: dict[str, Any] | None) -> str:
        if boot is None:
            preempted = self._state.was_preempted(worker.boot["id"], since=worker.started_at)
            return "preempted" if preempted else "deleted"
        if boot["deleting"]:
            return "deleted"
        if boot["statusMessage"] == PREEMPTED_MESSAGE:
            return "preempted"
        if boot["status"] in _BOOTING_OR_RUNNING:
            return "restarted"  # a new boot generation (stop and start, or a restarting update)
        return "stopped"

    def _start(self, key: tuple[str, str, str, str, int], boot: dict[str, Any]) -> None:
        queues, concurrency = read_metadata(boot["metadata"])
        if not queues:
            self._settle(key, boot, f"no {QUEUES_KEY} metadata")
            return
        try:
            hostname = boot_hostname(self.options.hostname_form, boot)
        except ValueError as exc:
            self._settle(key, boot, str(exc))
            return
        port = self._free_port()
        assert self.log_dir is not None  # set by start()
        log_path = self.log_dir / f"{boot['project']}.{boot['zone']}.{boot['name']}.log"
        command = worker_command(boot["name"], queues, concurrency)
        try:
            process = self._spawn(command, log_path, self._environment(hostname, port), boot)
        except OSError as exc:
            self._settle(key, boot, f"cannot start its worker: {exc}")
            return
        self._workers[key] = _Worker(boot, process, queues, concurrency, hostname, port, log_path)
        self._started += 1
        log.info(
            "VM %s is RUNNING: started its Celery worker (pid %s, log %s)",
            boot["name"],
            process.pid,
            log_path,
        )

    @staticmethod
    def _spawn(
        command: list[str], log_path: Path, env: dict[str, str], boot: dict[str, Any]
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            out.write(f"--- {_iso(time.time())} boot {boot['gen']} of {boot['name']}: {command}\n".encode())
            out.flush()
            # A new session: the VM's processes, which kill_session can find and kill together.
            return subprocess.Popen(
                [sys.executable, "-m", guest.__name__, "--parent", str(os.getpid()), "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _settle(self, key: tuple[str, str, str, str, int], boot: dict[str, Any], why: str) -> None:
        self._settled.add(key)
        self._skipped[key] = {
            "instance": boot["name"],
            "project": boot["project"],
            "zone": boot["zone"],
            "why": why,
        }
        log.info("VM %s is RUNNING without a Celery worker: %s", boot["name"], why)

    @staticmethod
    def _environment(hostname: str, log_port: int) -> dict[str, str]:
        env = dict(os.environ)
        # The worker must import the same tools package as the emulator (the hostname callable, the
        # init), also when the emulator found it through sys.path rather than an installed copy.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_TOOLS_ROOT, env.get("PYTHONPATH", "")) if p)
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = CALLABLE
        env[ENV_VAR] = hostname
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(log_port)
        return env

    def _free_port(self) -> int:
        taken = {w.log_port for w in self._workers.values()}
        while True:
            # Airflow's log server binds every interface, so probe the port the same way.
            with socket.socket() as probe:
                probe.bind(("", 0))
                port = probe.getsockname()[1]
            if port not in taken:
                return port

    def _kill(self, key: tuple[str, str, str, str, int], reason: str) -> None:
        worker = self._workers.pop(key)
        guest.kill_session(worker.process.pid)
        worker.process.wait()  # reap the init; the rest of the session are not our children
        self._record(self._kills, {**self._ref(worker), "reason": reason, "pid": worker.process.pid})
        self._kill_counts[reason] += 1
        log.info(
            "VM %s %s: killed its Celery worker (pid %s)", worker.boot["name"], reason, worker.process.pid
        )

    def _exited(self, key: tuple[str, str, str, str, int]) -> None:
        # A worker that dies on its own (broker unreachable, bad configuration) is not restarted: the
        # emulator would otherwise loop on the same failure. Its log says why.
        worker = self._workers.pop(key)
        self._settled.add(key)
        entry = {**self._ref(worker), "returncode": worker.process.returncode, "log": str(worker.log_path)}
        self._record(self._exits, entry)
        log.warning(
            "Celery worker of VM %s exited with code %s: see %s",
            worker.boot["name"],
            worker.process.returncode,
            worker.log_path,
        )

    @staticmethod
    def _ref(worker: _Worker) -> dict[str, Any]:
        return {
            "instance": worker.boot["name"],
            "project": worker.boot["project"],
            "zone": worker.boot["zone"],
            "at": _iso(time.time()),
        }

    @staticmethod
    def _record(records: list[dict[str, Any]], entry: dict[str, Any]) -> None:
        records.append(entry)
        del records[:-_MAX_RECORDS]

    def _kill_all(self, reason: str) -> None:
        with self._lock:
            for key in list(self._workers):
                self._kill(key, reason)

    def view(self) -> dict[str, Any]:
        """The fleet as ``GET /_emulator/workers`` shows it."""
        with self._lock:
            return {
                "workers": sorted((w.view() for w in self._workers.values()), key=lambda w: w["started_at"]),
                "kills": list(self._kills),
                "killed": dict(self._kill_counts),
                "exits": list(self._exits),
                "skipped": list(self._skipped.values()),
                "started": self._started,
                "hostname_form": self.options.hostname_form,
                "log_dir": str(self.log_dir or ""),
            }

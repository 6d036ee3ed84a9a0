"""Sample a task's process tree with psutil: CPU cores used, RSS, disk bytes, host network bytes.

CPU is the growth of user+system CPU time of the process and its live children (plus children it
already reaped) between two samples, divided by the wall time between them, so a task using two full
cores reads 2.0. Disk bytes are the kernel's per-process storage I/O counters. Linux has no
per-process network counters: network is the HOST's byte count growth, recorded per host; the
demand builder splits it between the tasks sampled on that host at the same time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil


@dataclass
class Reading:
    """Cumulative counters of a process tree at one instant."""

    wall: float
    ts: datetime
    cpu_seconds: float
    rss_bytes: float
    read_bytes: float
    write_bytes: float
    net_bytes: float


def _io(proc: psutil.Process) -> tuple[float, float]:
    try:
        io = proc.io_counters()
    except (psutil.Error, AttributeError, NotImplementedError):
        return 0.0, 0.0
    return float(io.read_bytes), float(io.write_bytes)


def _net() -> float:
    try:
        counters = psutil.net_io_counters()
    except (OSError, psutil.Error):
        return 0.0
    return float(counters.bytes_sent + counters.bytes_recv) if counters else 0.0


@dataclass
class ProcessTreeSampler:
    """Periodically read a process tree and keep per-interval usage samples.

    :param pid: the root process (the task's own process on the worker).
    :param interval: seconds between samples.
    :param on_flush: called from the sampling thread with the samples not yet flushed, every
        ``flush_seconds`` (long tasks: usage visible while running, not lost if the task is killed).
    :param flush_seconds: seconds between flushes.
    """

    pid: int = field(default_factory=os.getpid)
    interval: float = 5.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    on_flush: Any = None
    flush_seconds: float = 300.0

    def __post_init__(self) -> None:
        self._root = psutil.Process(self.pid)
        self._children: dict[int, psutil.Process] = {}
        self._last: Reading | None = None
        self._cpu_high = 0.0
        #: CPU seconds the sampler itself spent reading (its own overhead, measured per thread).
        self.cpu_spent = 0.0
        self.flushed = 0  # samples[:flushed] were handed to on_flush
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hostname = _hostname()

    def read(self) -> Reading:
        """Read the cumulative counters of the tree now."""
        wall = time.monotonic()
        with self._root.oneshot():
            times = self._root.cpu_times()
            cpu = times.user + times.system + times.children_user + times.children_system
            rss = float(self._root.memory_info().rss)
        read, write = _io(self._root)
        try:
            current = self._root.children(recursive=True)
        except psutil.Error:
            current = []
        seen = set()
        for child in current:
            # Reuse Process objects: psutil keys a process by pid + create time.
            proc = self._children.setdefault(child.pid, child)
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    child_cpu = t.user + t.system + t.children_user + t.children_system
                    rss += float(proc.memory_info().rss)
                r, w = _io(proc)
            except psutil.Error:
                continue
            seen.add(child.pid)
            cpu += child_cpu
            read += r
            write += w
        for pid in list(self._children):
            if pid not in seen:
                del self._children[pid]
        # A child that exited and was waited for moves into its parent's children_user/system, so
        # the total is continuous, except between exit and wait (a zombie reads as gone): sample()
        # keeps a high-water mark so that dip and the jump back are not counted twice.
        return Reading(wall, datetime.now(UTC), cpu, rss, read, write, _net())

    def sample(self) -> dict[str, Any] | None:
        """Take one reading; return the usage since the previous one (``None`` for the first)."""
        spent = time.thread_time()
        reading = self.read()
        self.cpu_spent += time.thread_time() - spent
        previous, self._last = self._last, reading
        if previous is None:
            self._cpu_high = reading.cpu_seconds
            return None
        elapsed = max(reading.wall - previous.wall, 1e-6)
        cpu_used = max(reading.cpu_seconds - self._cpu_high, 0.0)
        self._cpu_high = max(self._cpu_high, reading.cpu_seconds)
        sample = {
            "ts": reading.ts,
            "elapsed": elapsed,
            "hostname": self.hostname,
            "cpu_cores": cpu_used / elapsed,
            "rss_mb": reading.rss_bytes / 2**20,
            "read_bytes": max(reading.read_bytes - previous.read_bytes, 0.0),
            "write_bytes": max(reading.write_bytes - previous.write_bytes, 0.0),
            "net_bytes": max(reading.net_bytes - previous.net_bytes, 0.0),
        }
        self.samples.append(sample)
        return sample

    # ----------------------------------------------------------------- background thread

    def start(self) -> None:
        """Take the first reading and sample every ``interval`` seconds on a daemon thread."""
        self.sample()
        self._thread = threading.Thread(target=self._run, name="predictive-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_flush = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a vanished process or /proc hiccup must never reach the task
                continue
            if self.on_flush is not None and time.monotonic() - last_flush >= self.flush_seconds:
                last_flush = time.monotonic()
                self.flush()

    def flush(self) -> None:
        """Hand the samples taken since the last flush to ``on_flush`` (errors are its business)."""
        pending = self.samples[self.flushed :]
        if pending and self.on_flush is not None:
            self.flushed += len(pending)
            self.on_flush(pending)

    def stop(self) -> list[dict[str, Any]]:
        """Stop the thread, take a final sample and return all samples."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        with contextlib.suppress(Exception):
            self.sample()
        return self.samples


def summarise(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Aggregate samples of one try into the task_runs usage columns.

    :param samples: the samples of one try, in time order (``elapsed`` weights the CPU mean).
    """
    if not samples:
        return {}
    cpu = [s["cpu_cores"] for s in samples]
    weights = [float(s.get("elapsed") or 1.0) for s in samples]
    return {
        "cpu_mean": sum(c * w for c, w in zip(cpu, weights, strict=True)) / sum(weights),
        "cpu_peak": max(cpu),
        "rss_peak_mb": max(s["rss_mb"] for s in samples),
        "read_bytes": sum(s["read_bytes"] for s in samples),
        "write_bytes": sum(s["write_bytes"] for s in samples),
        "net_bytes": sum(s["net_bytes"] for s in samples),
    }


def _hostname() -> str:
    import socket

    return socket.getfqdn()

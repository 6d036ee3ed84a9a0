"""Find or start the real services the integration tests and the live benchmarks need (PostgreSQL, Redis) on 127.0.0.1.

This machine type runs both already; a fresh machine may not. We look for a running server first,
then start an installed one, then install Debian's package when we are root. Whatever is started
here is a system service, not a child of the caller, and is left running like the preinstalled ones.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _apt_install(*packages: str) -> None:
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"cannot install {packages}: no apt-get on this machine")
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        capture_output=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def ensure_postgres() -> str:
    """Return a SQLAlchemy URL for a superuser on 127.0.0.1:5432, starting PostgreSQL if needed."""
    if not _port_open(5432):
        if not Path("/etc/postgresql").exists():
            _apt_install("postgresql")
        version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
            capture_output=True,
        )
        _wait_port(5432)
    return "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def ensure_redis() -> str:
    """Return a Redis URL on 127.0.0.1:6379, starting redis-server if needed."""
    if not _port_open(6379):
        if shutil.which("redis-server") is None:
            _apt_install("redis-server")
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", ""],
            check=True,
            capture_output=True,
        )
        _wait_port(6379)
    return "redis://127.0.0.1:6379/0"


@contextmanager
def postgres_database(prefix: str = "predictive_test") -> Iterator[str]:
    """Create a throw-away database and yield its URL; drop it afterwards."""
    from airflow_predictive_tools.bench.scaleout import throwaway_database

    with throwaway_database(ensure_postgres(), prefix) as url:
        yield url


@contextmanager
def redis_database(index: int) -> Iterator[str]:
    """A Redis database index of the test's own (a broker), empty before and flushed after; yield its URL.

    :param index: the index (each module that uses one keeps its own, so modules never share queues).
    """
    import redis

    url = ensure_redis().rsplit("/", 1)[0] + f"/{index}"

    def flush() -> None:
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()  # only this index
        finally:
            client.close()

    flush()
    try:
        yield url
    finally:
        flush()

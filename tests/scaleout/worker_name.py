"""``[core] hostname_callable`` for workers sharing one machine: each reports its own name."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """The worker's name from ``PREDICTIVE_WORKER_NAME``, else the machine's (scheduler, API server)."""
    return os.environ.get("PREDICTIVE_WORKER_NAME") or socket.getfqdn()

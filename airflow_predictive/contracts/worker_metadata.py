"""What a worker VM learns from its instance metadata: which Airflow queues it serves, how many slots.

A real deployment's startup script (in the instance template, or written by the allocator for
standalone VMs) reads these keys to start ``airflow celery worker -q <queues> --concurrency <slots>``;
the local emulator reads the same keys to start its emulated workers, so nothing else tells a VM
which queue it serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

QUEUES_KEY = "airflow-celery-queues"
"""Comma-separated Airflow queues the VM's Celery worker consumes."""

CONCURRENCY_KEY = "airflow-worker-concurrency"
"""Task slots of the VM's worker (``--concurrency``); absent: Airflow's ``[celery] worker_concurrency``."""


def metadata_items(queues: Sequence[str], concurrency: int | None) -> list[dict[str, str]]:
    """Compute Engine ``metadata.items`` for a worker VM.

    :param queues: the Airflow queues the worker consumes.
    :param concurrency: its task slots (None: leave Airflow's default).
    """
    items = [{"key": QUEUES_KEY, "value": ",".join(queues)}]
    if concurrency is not None:
        items.append({"key": CONCURRENCY_KEY, "value": str(int(concurrency))})
    return items


def read_metadata(items: Sequence[Mapping[str, Any]] | None) -> tuple[list[str], int | None]:
    """The queues and concurrency in a VM's ``metadata.items`` (``([], None)`` when it serves none).

    :param items: the instance's metadata items (``{"key": ..., "value": ...}``).
    """
    values = {str(i.get("key")): str(i.get("value") or "") for i in items or []}
    queues = [q.strip() for q in values.get(QUEUES_KEY, "").split(",") if q.strip()]
    raw = values.get(CONCURRENCY_KEY, "").strip()
    concurrency = int(raw) if raw.isdigit() and int(raw) > 0 else None
    return queues, concurrency

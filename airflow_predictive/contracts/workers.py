"""What the release protocol needs from the workers on a pool's VMs: cordon, count held tasks, uncordon.

:class:`airflow_predictive.workers.celery.CeleryWorkers` implements it with Celery's remote control
(``cancel_consumer``, ``inspect active/reserved``, ``add_consumer``), addressed to ``celery@<vm>``.
"""

from __future__ import annotations

from typing import Protocol


class WorkerControl(Protocol):
    """The Airflow workers of one queue, addressed by the VM they run on."""

    def cordon(self, instance: str) -> bool:
        """Stop the VM's worker taking tasks of the queue; True once the worker confirmed it."""
        ...

    def held_tasks(self, instance: str) -> int | None:
        """Tasks the VM's worker is running or has reserved; None when it did not answer."""
        ...

    def uncordon(self, instance: str) -> bool:
        """Let the VM's worker take tasks of the queue again; True once the worker confirmed it."""
        ...

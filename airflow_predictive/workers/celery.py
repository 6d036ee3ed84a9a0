"""Cordon, drain check and uncordon of the Celery workers on a pool's VMs (Celery remote control).

Workers are addressed by node name. The emulator and a deployment that starts workers with
``--celery-hostname celery@<vm>`` have node ``celery@<vm>``; Celery's default is ``celery@<hostname>``,
which on Compute Engine is the VM's name or FQDN. So the nodes of a VM are found by asking every
worker (``ping``) and matching the host part of each node name to the VM as the busy check does.
No node found, or no reply, is never taken as "idle": the release is cancelled.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_predictive.planning.busy import host_forms

log = logging.getLogger(__name__)


class CeleryWorkers:
    """The Celery workers of one Airflow queue, addressed by the VM they run on.

    :param app: the Celery app Airflow's CeleryExecutor uses.
    :param queue: the pool's Airflow queue.
    :param timeout: seconds to wait for workers' replies.
    """

    def __init__(self, app: Any, queue: str, *, timeout: float = 5.0) -> None:
        self.app = app
        self.queue = queue
        self.timeout = timeout
        self._nodes: dict[str, list[str]] = {}

    def nodes(self, instance: str) -> list[str]:
        """Celery node names of the workers on ``instance`` that answer a ping now."""
        guess = f"celery@{instance}"
        if self.app.control.ping(destination=[guess], timeout=self.timeout):
            return [guess]  # the usual name answers at once; a broadcast waits out the whole timeout
        replies = self.app.control.ping(timeout=self.timeout) or []
        names = [name for reply in replies for name in reply]
        return sorted(n for n in names if instance.lower() in host_forms(n))

    def cordon(self, instance: str) -> bool:
        """Stop the VM's workers consuming the queue; True only when each one confirmed it."""
        self._nodes[instance] = self.nodes(instance)
        return self._control("cancel_consumer", instance)

    def uncordon(self, instance: str) -> bool:
        """Let the VM's workers consume the queue again; True only when each one confirmed it."""
        return self._control("add_consumer", instance)

    def held_tasks(self, instance: str) -> int | None:
        """Tasks the VM's workers are running or have reserved; None when one of them did not answer."""
        nodes = self._known(instance)
        if not nodes:
            return None
        inspect = self.app.control.inspect(destination=nodes, timeout=self.timeout)
        active, reserved = inspect.active() or {}, inspect.reserved() or {}
        if any(n not in active or n not in reserved for n in nodes):
            return None
        return sum(len(active[n]) + len(reserved[n]) for n in nodes)

    def _known(self, instance: str) -> list[str]:
        if instance not in self._nodes:
            self._nodes[instance] = self.nodes(instance)
        return self._nodes[instance]

    def _control(self, command: str, instance: str) -> bool:
        nodes = self._known(instance)
        if not nodes:
            log.warning("no Celery worker of %s answered: cannot %s %s", instance, command, self.queue)
            return False
        method = getattr(self.app.control, command)
        replies = method(self.queue, destination=nodes, reply=True, timeout=self.timeout) or []
        answered = {name for reply in replies for name, body in reply.items() if "ok" in body}
        return answered >= set(nodes)


def celery_workers(queue: str, *, timeout: float = 5.0) -> CeleryWorkers:
    """The workers of ``queue`` through the Celery app Airflow's CeleryExecutor configures.

    :param queue: the pool's Airflow queue.
    :param timeout: seconds to wait for replies.
    """
    from airflow.providers.celery.executors.celery_executor_utils import _get_celery_app

    return CeleryWorkers(_get_celery_app(), queue, timeout=timeout)

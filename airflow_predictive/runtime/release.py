"""The release protocol: cordon, drain, re-check, then delete by name; any doubt cancels the release.

Like Karpenter's disruption controller. Between the plan (which picked VMs idle by the REST API) and
the delete, a task may land on the VM; so before the delete the VM's worker stops taking tasks
(cordon, confirmed by the worker), the tasks it still runs or has prefetched finish (drain, bounded
wait), and the running tasks are read again from the REST API (re-check). Only a VM still idle then is
deleted. Otherwise the release is cancelled (:class:`ActionCancelled`, recorded in the ledger with
why) and the worker takes tasks again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_predictive.contracts.capacity import BOOTING_STATUSES
from airflow_predictive.contracts.plan import Action, ActionCancelled, ActionKind
from airflow_predictive.contracts.workers import WorkerControl
from airflow_predictive.planning.busy import BusyView

log = logging.getLogger(__name__)

Delete = Callable[[Action], dict[str, Any]]
Recheck = Callable[[], BusyView | None]
#: A VM's status now, read from the cloud (None: it no longer exists).
StatusNow = Callable[[str], str | None]


@dataclass
class ReleaseGuard:
    """The release protocol of one pool.

    :param recheck: reads the running tasks now and maps them to the pool's VMs (None: unknown).
    :param workers: the pool's workers (None: the executor has no worker control, e.g. no Celery).
    :param drain_timeout: seconds to wait for a cordoned worker's tasks to finish.
    :param keepalive: renews the pool's lease while waiting; False means it was lost.
    :param poll_seconds: pause between drain checks.
    :param sleep: the pause (tests pass a fake one).
    :param clock: a monotonic clock.
    :param status_now: reads a VM's status at the release (None: trust the plan's). A VM booting at
        the plan may be RUNNING with a worker taking tasks by the time its release comes (after other
        releases' drains): only a VM still booting then skips the cordon.
    """

    recheck: Recheck
    workers: WorkerControl | None = None
    drain_timeout: float = 60.0
    keepalive: Callable[[], bool] | None = None
    poll_seconds: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    status_now: StatusNow | None = None

    def release(self, action: Action, delete: Delete) -> dict[str, Any]:
        """Cordon, drain and re-check ``action.target``, then ``delete`` it; raise ActionCancelled if busy."""
        vm = action.target
        cordoned = self._cordon(vm, self._status(vm, str(action.details.get("status") or "RUNNING")))
        try:
            if cordoned:
                self._drain(vm)
            self._recheck(vm)
            details = delete(action)
        except BaseException as exc:
            if cordoned:
                self._uncordon(vm, exc)
            raise
        return {**(details or {}), "cordoned": cordoned}

    def _status(self, vm: str, planned: str) -> str:
        """The status the cordon goes by: the plan's, or for a VM booting then, the status now."""
        if planned not in BOOTING_STATUSES or self.status_now is None:
            return planned
        now = self.status_now(vm)
        if now is None:
            raise ActionCancelled(f"release of {vm} cancelled: the VM no longer exists")
        return now

    def _cordon(self, vm: str, status: str) -> bool:
        if self.workers is None or status in BOOTING_STATUSES:
            return False  # no worker control, or a VM still booting: no worker there yet to hold a task
        if not self.workers.cordon(vm):
            raise ActionCancelled(
                f"release of {vm} cancelled: its worker did not confirm it stopped taking tasks"
            )
        return True

    def _drain(self, vm: str) -> None:
        assert self.workers is not None
        deadline = self.clock() + self.drain_timeout
        while True:
            held = self.workers.held_tasks(vm)
            if held is None:
                raise ActionCancelled(
                    f"release of {vm} cancelled: its worker did not say which tasks it holds"
                )
            if held == 0:
                return
            if self.clock() >= deadline:
                raise ActionCancelled(
                    f"release of {vm} cancelled: its worker still held {held} task(s) after "
                    f"{self.drain_timeout:.0f}s (scale_in.drain_timeout_seconds)"
                )
            self._keep_lease(vm)
            self.sleep(self.poll_seconds)

    def _recheck(self, vm: str) -> None:
        self._keep_lease(vm)
        view = self.recheck()
        if view is None:
            raise ActionCancelled(f"release of {vm} cancelled: the running tasks could not be read again")
        if view.blocks_releases:
            raise ActionCancelled(f"release of {vm} cancelled: {view.reason()}")
        if vm in view.instances:
            raise ActionCancelled(f"release of {vm} cancelled: a task started on it since the plan")

    def _keep_lease(self, vm: str) -> None:
        if self.keepalive is not None and not self.keepalive():
            raise ActionCancelled(f"release of {vm} cancelled: this run lost the pool's lease")

    def _uncordon(self, vm: str, cause: BaseException) -> None:
        assert self.workers is not None
        try:
            confirmed = self.workers.uncordon(vm)
        except Exception as exc:  # the cancellation stands; say the worker may stay cordoned
            confirmed = False
            log.error("%s: taking tasks again failed: %s", vm, exc)
        if not confirmed:
            log.error(
                "%s stays cordoned after %s: its worker did not confirm it takes tasks again", vm, cause
            )


def guarded(apply: Delete, guard: ReleaseGuard | None) -> Delete:
    """An applier that sends releases through ``guard`` and every other action straight to ``apply``.

    :param apply: applies one action on the cloud.
    :param guard: the pool's release protocol (None: releases go straight to ``apply``).
    """
    if guard is None:
        return apply

    def applier(action: Action) -> dict[str, Any]:
        if action.kind == ActionKind.RELEASE:
            return guard.release(action, apply)
        return apply(action)

    return applier

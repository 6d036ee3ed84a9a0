"""Which VMs of a pool hold an Airflow task, from the hostnames Airflow records: a check that fails closed.

Airflow records the ``hostname`` its ``[core] hostname_callable`` returned on the worker: on Compute
Engine usually the FQDN (``vm.zone.c.project.internal``), sometimes the short name, an IP, or a Celery
node name (``celery@vm``). Each VM answers to all of those. A task of the pool's queue whose host
answers to no VM of the pool means the mapping is wrong for this deployment (a custom
``hostname_callable``, workers outside the pool): then no VM of the pool is known idle, so the cycle
releases none, instead of guessing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from airflow_predictive.contracts.capacity import InstanceState

# Task states in which a worker holds the task (``queued``: sent to a worker, maybe prefetched by it).
HELD_STATES = ("running", "queued")

ExtraAliases = Callable[[InstanceState], Iterable[str]]


@dataclass(frozen=True)
class RunningTask:
    """A task instance a worker holds, as the REST API lists it.

    :param dag_id: its DAG.
    :param task_id: its task.
    :param run_id: its DAG run.
    :param map_index: its map index (-1 when not mapped).
    :param hostname: what the worker reported ("" while only queued).
    :param queue: the Airflow queue it was sent to.
    :param state: ``running`` or ``queued``.
    """

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    hostname: str = ""
    queue: str = ""
    state: str = "running"

    def label(self) -> str:
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{index} ({self.run_id}) on {self.hostname or '?'}"


@dataclass(frozen=True)
class BusyView:
    """What the running tasks say about one pool's VMs.

    :param instances: names of the pool's VMs holding a task (never released).
    :param unmapped: the pool's tasks on hosts that answer to no VM of the pool (block every release).
    """

    instances: frozenset[str] = frozenset()
    unmapped: tuple[RunningTask, ...] = ()

    @property
    def blocks_releases(self) -> bool:
        return bool(self.unmapped)

    def reason(self) -> str:
        """Why no VM of the pool may be released this cycle ("" when releases may go ahead)."""
        if not self.unmapped:
            return ""
        shown = ", ".join(t.label() for t in self.unmapped[:3])
        more = f" and {len(self.unmapped) - 3} more" if len(self.unmapped) > 3 else ""
        return (
            f"releases blocked: {len(self.unmapped)} task(s) of the pool's queue run on hosts that map to no VM "
            f"of the pool ({shown}{more}); set [predictive] instance_hostnames if workers report other names"
        )


def given_hosts(
    hosts: Iterable[str] | Callable[[], Iterable[str]] | None,
) -> Callable[[], list[RunningTask] | None]:
    """A task reader for hostnames given by hand (``plan --busy-host``, the operator's ``busy_hosts``).

    Each host is a running task of unknown queue: a VM it maps to is busy; one that maps to no VM of a
    pool is taken to run elsewhere. None: the running tasks are unknown, so nothing is released.

    :param hosts: hostnames, or a callable returning them at each read.
    """
    if hosts is None:
        return lambda: None

    def read() -> list[RunningTask]:
        given = hosts() if callable(hosts) else hosts
        return [RunningTask("?", "?", "given", hostname=str(h)) for h in given or () if h]

    return read


def host_forms(hostname: str) -> set[str]:
    """The names a reported hostname may stand for: as given, without ``celery@``, and its first label.

    :param hostname: the ``hostname`` of a task instance.
    """
    host = str(hostname).strip().lower()
    if "@" in host:
        host = host.split("@", 1)[1]
    if not host:
        return set()
    forms = {host}
    if not _is_ip(host):
        forms.add(host.split(".", 1)[0])
    return forms


def instance_aliases(
    instance: InstanceState, project: str, zone: str, extra: ExtraAliases | None = None
) -> set[str]:
    """Every name a worker on ``instance`` may report: name, zonal and global FQDN, internal IPs, extra.

    :param instance: the VM.
    :param project: its project.
    :param zone: its zone.
    :param extra: the deployment's own names for a VM (``[predictive] instance_hostnames``).
    """
    name = instance.name.lower()
    aliases = {name, f"{name}.{zone}.c.{project}.internal", f"{name}.c.{project}.internal"}
    aliases.update(ip.strip().lower() for ip in instance.internal_ips if ip)
    if extra is not None:
        for alias in extra(instance):
            aliases |= host_forms(alias)
    return aliases


def busy_view(
    tasks: Sequence[RunningTask],
    instances: Sequence[InstanceState],
    *,
    project: str,
    zone: str,
    queue: str,
    extra: ExtraAliases | None = None,
) -> BusyView:
    """Map held tasks to the pool's VMs; a task of ``queue`` that maps to none blocks releases.

    :param tasks: running and queued task instances of every DAG (the REST API's view).
    :param instances: the pool's VMs (any status: a stopping VM may still report tasks).
    :param project: the pool's project.
    :param zone: the pool's zone.
    :param queue: the pool's Airflow queue.
    :param extra: the deployment's own names for a VM.
    """
    owner: dict[str, str] = {}
    for instance in instances:
        for alias in instance_aliases(instance, project, zone, extra):
            owner.setdefault(alias, instance.name)
    busy: set[str] = set()
    unmapped: list[RunningTask] = []
    for task in tasks:
        if task.state not in HELD_STATES:
            continue
        hits = {owner[f] for f in host_forms(task.hostname) if f in owner}
        busy |= hits
        # a queued task without a host is not on a worker yet (Celery's reserved list covers prefetch)
        if not hits and task.queue == queue and (task.hostname or task.state == "running"):
            unmapped.append(task)
    return BusyView(frozenset(busy), tuple(unmapped))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

"""The host name an emulated VM's Airflow worker reports, as Compute Engine's guest would see it.

Every emulated worker runs on this one machine, so Airflow's default ``[core] hostname_callable``
(``getfqdn``) would give them all the same name and the task instances could not be told apart.
The worker fleet sets ``AIRFLOW__CORE__HOSTNAME_CALLABLE`` to ``hostname`` below and
``PREDICTIVE_VM_HOSTNAME`` to the VM's name in the chosen form.
"""

from __future__ import annotations

import os
import socket
from typing import Any

ENV_VAR = "PREDICTIVE_VM_HOSTNAME"
CALLABLE = "airflow_predictive_tools.emulator.vm_hostname.hostname"
"""Dotted path for ``AIRFLOW__CORE__HOSTNAME_CALLABLE`` (Airflow imports it with ``conf.getimport``)."""

FORMS = ("fqdn", "short", "ip")
"""``fqdn``: ``<vm>.<zone>.c.<project>.internal`` (Compute Engine's zonal internal DNS name);
``short``: ``<vm>``; ``ip``: the VM's first internal IP (``networkInterfaces[0].networkIP``)."""


def hostname() -> str:
    """The VM's host name from ``PREDICTIVE_VM_HOSTNAME`` (Airflow's ``getfqdn`` when it is unset)."""
    # Unset outside an emulated VM: behave like Airflow's default instead of failing every task.
    return os.environ.get(ENV_VAR) or socket.getfqdn()


def vm_hostname(form: str, project: str, zone: str, name: str, network_ip: str = "") -> str:
    """The host name of one VM in one of ``FORMS``.

    :param form: ``fqdn``, ``short`` or ``ip``.
    :param project: project id.
    :param zone: zone name.
    :param name: instance name.
    :param network_ip: the instance's first internal IP (needed by ``ip``).
    """
    if form == "fqdn":
        return f"{name}.{zone}.c.{project}.internal"
    if form == "short":
        return name
    if form == "ip":
        if not network_ip:
            raise ValueError(f"VM {name!r} has no internal IP for the 'ip' host name form")
        return network_ip
    raise ValueError(f"host name form {form!r}: use one of {', '.join(FORMS)}")


def boot_hostname(form: str, boot: dict[str, Any]) -> str:
    """``vm_hostname`` of one entry of ``ComputeEngineState.instance_boots()``.

    :param form: ``fqdn``, ``short`` or ``ip``.
    :param boot: ``{"project", "zone", "name", "networkIP", ...}``.
    """
    return vm_hostname(form, boot["project"], boot["zone"], boot["name"], boot.get("networkIP", ""))

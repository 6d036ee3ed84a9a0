"""The init process of an emulated VM: it owns the session its Airflow worker runs in.

The worker fleet starts ``python -m airflow_predictive_tools.emulator.guest --parent PID -- COMMAND...``
in a new session; this process starts COMMAND (``airflow celery worker ...``) inside it and waits.

Why an init process instead of starting the worker directly: ``airflow celery worker`` forks helpers
(its log server, the bundle cleaner) that get no parent-death signal, and each Airflow task runs in a
process group of its own. A parent-death signal on the worker alone would leave those running when the
emulator dies, and ``killpg`` of the worker's group would leave the tasks. So the VM is the session:
when its parent (the emulator) dies, the kernel sends this init SIGTERM, which it turns into SIGKILL of
every process in the session, as a VM losing power would.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(signum: int) -> None:
    """Ask Linux to send ``signum`` to this process when the thread that started it exits.

    :param signum: the signal, e.g. ``signal.SIGKILL``.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def _session_of(stat: str) -> tuple[int, str]:
    # /proc/PID/stat is "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[3]), fields[0]


def session_members(session: int) -> list[int]:
    """PIDs of the live (not zombie) processes of one session.

    :param session: session id (the PID of the process that called ``setsid``).
    """
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            sid, state = _session_of((entry / "stat").read_text())
        except (OSError, ValueError):
            continue  # exited while we looked
        if sid == session and state != "Z":
            members.append(int(entry.name))
    return members


def kill_session(session: int, passes: int = 5) -> None:
    """SIGKILL every process of a session (but the caller), including task runners in groups of their own.

    :param session: session id.
    :param passes: sweeps of /proc (a process forking while we sweep can leave a new child behind).
    """
    if os.getsid(0) != session:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session, signal.SIGKILL)  # the init and the worker: most of the VM at once
    for _ in range(passes):
        members = [pid for pid in session_members(session) if pid != os.getpid()]
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _power_off(_signum: int = 0, _frame: object = None) -> None:
    kill_session(os.getsid(0))
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run COMMAND in this session until it exits or the parent dies.

    :param argv: ``--parent PID -- COMMAND...``.
    """
    parser = argparse.ArgumentParser(prog="guest")
    parser.add_argument("--parent", type=int, required=True, help="PID whose death powers the VM off")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a COMMAND is needed after --")
    signal.signal(signal.SIGTERM, _power_off)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != args.parent:
        _power_off()  # the parent died before the signal was armed
    # This init is single-threaded, so a preexec_fn is safe here: if only the init is killed, the
    # worker still dies with it.
    worker = subprocess.Popen(command, preexec_fn=lambda: set_parent_death_signal(signal.SIGKILL))
    code = worker.wait()
    print(f"[emulated VM] {command[0]} exited with code {code}", file=sys.stderr, flush=True)
    kill_session(os.getsid(0))  # helpers a crashed worker left behind
    return code


if __name__ == "__main__":
    sys.exit(main())

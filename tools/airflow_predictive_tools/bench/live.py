"""``bench live``: task queue wait and worker VM-hours on a real Airflow, predictive against reactive rules.

One Airflow (api-server, scheduler, dag-processor) with CeleryExecutor on PostgreSQL and Redis, the
Compute Engine emulator as its own process with ``--workers`` (every RUNNING VM runs a real ``airflow
celery worker`` for its pool's queue) and a boot delay, one Celery worker of its own for the control
loop's tasks (queue ``default``), and the control-loop DAG (``dags/predictive_scaling.py``, unchanged)
at ``[predictive] interval_minutes``.

Every policy provisions its own pool and queue (``live_policies.py``) and runs its own copy of the same
workload (``live_workload.py``), side by side: the same runs at the same moments, from zero workers,
on the same machine load. Side by side and not one after another because a 2-core machine shared with
other work changes its speed over an hour: run in turn, the policies would each meet a different
machine; run together they meet the same one (and one deployment starts once).

While it runs, a sampler reads every few seconds the queued and running tasks per queue (REST API),
the VMs per pool and the workers' slots (emulator). Afterwards the metrics per policy come from the
REST API (queue wait of every try: ``start_date - queued_when``), the emulator (VM lifetimes, from
each VM's ``creationTimestamp`` to the last sample that saw it) and the ledger (actions, releases).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_predictive_tools.bench import live_history
from airflow_predictive_tools.bench import live_policies as lp
from airflow_predictive_tools.bench import live_workload as lw

REPO = Path(__file__).resolve().parents[3]
CONTROL_DAG = "predictive_scaling"
WAIT_OVER = 30.0  # seconds: the issue's "waited over 30 s"


@dataclass(frozen=True)
class LiveSettings:
    """One benchmark run.

    :param policies: which policies run (side by side).
    :param minutes: length of the workload (triggers and scheduled runs start inside it).
    :param seed: seed of the user triggers and task lengths.
    :param boot_seconds: the emulated VMs' boot delay (PROVISIONING -> RUNNING).
    :param pools: what every policy's pool shares (slots, ceiling, lead time, the DAG's cadence).
    :param warmup_minutes: the control loop's time before the workload: the workload starts on the
        first demand-bucket boundary at least ``warmup + lead`` minutes away (``workload_start``).
    :param drain_minutes: after the workload's last start, how long its runs may take to finish.
    :param sample_seconds: sampler period.
    :param short: the test suite's workload (one scheduled DAG).
    :param triggers_per_hour: user triggers per hour (all users).
    :param history_days: days of the same DAGs' past runs seeded in the store (``live_history.py``).
    """

    policies: tuple[str, ...] = lp.POLICIES
    minutes: int = 20
    seed: int = 7
    boot_seconds: float = 60.0
    pools: lp.PoolSettings = field(default_factory=lp.PoolSettings)
    warmup_minutes: float = 3.0
    drain_minutes: float = 12.0
    sample_seconds: float = 5.0
    short: bool = False
    triggers_per_hour: float = 6.0
    history_days: float = 7.0


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


# ------------------------------------------------------------------------------------------ deployment


@contextlib.contextmanager
def deployment(settings: LiveSettings, home: Path, postgres_url: str, broker_url: str) -> Iterator[dict]:
    """PostgreSQL databases, Redis, Airflow with CeleryExecutor, the emulator with worker VMs and a
    control-loop worker; every process stopped by its PID on exit (also on Ctrl-C or failure)."""
    from airflow_predictive.store import ProfileStore
    from airflow_predictive_tools.deployment import BIN, celery_airflow, free_port

    home.mkdir(parents=True, exist_ok=True)
    dags, templates = home / "dags", home / "templates"
    for folder in (dags, templates):
        folder.mkdir(exist_ok=True)
    for template in lw.TEMPLATES:
        (templates / f"{template.name}.yaml").write_text(lw.template_yaml(template))
    with contextlib.ExitStack() as stack:
        emulator_port = free_port()
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        store_url, airflow = celery_airflow(
            stack,
            home / "airflow",
            dags,
            postgres_url=postgres_url,
            broker_url=broker_url,
            db_prefix="predictive_live",
            emulator_url=emulator_url,
            parallelism=96,
            env={
                "AIRFLOW__PREDICTIVE__POOLS_FILE": str(home / "pools.yaml"),
                "AIRFLOW__PREDICTIVE__TEMPLATES_FOLDER": str(templates),
                "AIRFLOW__PREDICTIVE__INTERVAL_MINUTES": f"{settings.pools.cadence_minutes:g}",
                # a worker killed with its VM stops heartbeating: its try fails soon (a lost task)
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            },
        )
        store = ProfileStore(store_url)
        stack.callback(store.dispose)
        airflow.start_process(
            "gce-emulator",
            [str(BIN / "airflow-predictive"), "gce-emulator", "--port", str(emulator_port)]
            + [
                "--boot-seconds",
                f"{settings.boot_seconds:g}",
                "--workers",
                "--worker-log-dir",
                str(home / "vms"),
            ],
        )
        airflow.start_component(
            "celery worker",
            "--queues",
            "default",
            "--concurrency",
            "2",
            "--celery-hostname",
            "control@%h",
            name="control-worker",
            env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
        )
        _wait_for_emulator(emulator_url, airflow)
        yield {
            "airflow": airflow,
            "store": store,
            "emulator_url": emulator_url,
            "broker_url": broker_url,
            "home": home,
            "dags": dags,
            "templates": templates,
        }


def _wait_for_emulator(url: str, airflow: Any, timeout: float = 60) -> None:
    from airflow_predictive_tools.emulator.server import EmulatorControl

    control = EmulatorControl(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if control.health():
                return
        time.sleep(0.5)
    raise RuntimeError(f"the emulator did not start\n{airflow.log_tail('gce-emulator')}")


# ------------------------------------------------------------------------------------------ loops


class Loop:
    """A background loop calling ``step()`` every ``every`` seconds until stopped; errors are kept."""

    def __init__(self, name: str, every: float, step: Callable[[], None]) -> None:
        self.every, self.step = every, step
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception as exc:  # keep looping: one failed read must not end the benchmark
                self.errors.append(f"{datetime.now(UTC).isoformat()} {exc.__class__.__name__}: {exc}")
            self._stop.wait(max(0.0, self.every - (time.monotonic() - started)))

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


class Sampler:
    """Queued and running tasks per queue, VMs and worker slots per pool, every few seconds."""

    def __init__(self, api: Any, emulator_url: str, policies: list[str]) -> None:
        from airflow_predictive_tools.emulator.server import EmulatorControl

        self.api, self.control, self.policies = api, EmulatorControl(emulator_url), policies
        self.rows: list[dict[str, Any]] = []
        self.vms: dict[str, dict[str, Any]] = {}  # instance name -> pool, created, last seen, running
        self.workers: dict[str, str] = {}  # instance name -> when its worker started

    def step(self) -> None:
        from airflow_predictive.airflow_api.client import fetch_running_tasks

        now = datetime.now(UTC)
        tasks = fetch_running_tasks(self.api)
        instances = self.control.state()["instances"]
        fleet = self.control.workers()
        row: dict[str, Any] = {"t": now.isoformat(timespec="seconds")}
        for policy in self.policies:
            queue = lp.pool_name(policy)
            mine = [t for t in tasks if t.queue == queue]
            vms = [i for i in instances if (i.get("labels") or {}).get("predictive-pool") == queue]
            live = [i for i in vms if i["status"] in ("PROVISIONING", "STAGING", "RUNNING")]
            slots = sum(
                w.get("concurrency") or 0 for w in fleet["workers"] if queue in (w.get("queues") or [])
            )
            row[policy] = {
                "queued": sum(t.state == "queued" for t in mine),
                "running": sum(t.state == "running" for t in mine),
                "vms": len(live),
                "slots": slots,
            }
            for vm in live:
                seen = self.vms.setdefault(
                    vm["name"], {"pool": queue, "created": vm.get("creationTimestamp"), "last_seen": None}
                )
                seen["last_seen"] = now.isoformat()
        for worker in fleet["workers"]:
            self.workers.setdefault(worker["instance"], worker.get("started_at"))
        self.rows.append(row)


def keda_engine(project: str, zone: str, endpoint: str) -> Any:
    """The product's Compute Engine adapter for the ``queue`` loop, except that a launch does not wait
    for the VM.

    A Compute Engine insert operation is DONE only once the VM is RUNNING (the emulator's too: one
    boot, 60 s here), and the adapter waits for it. KEDA does not: it sets the worker Deployment's
    replica count and polls again 5 s later while the pods start. Waiting would freeze the ``queue``
    loop for a boot after every scale-out and make the baseline slower than KEDA is. The next poll
    sees the booting VM (PROVISIONING/STAGING) as capacity, as KEDA counts a pending pod.
    """
    from airflow_predictive.gce.compute import ComputeEngine

    class NoWaitForBoot(ComputeEngine):
        def wait(self, operation: Any, what: str, timeout: float | None = None) -> None:
            if what.startswith("insert instance"):
                return
            super().wait(operation, what, timeout)

    return NoWaitForBoot(project, zone, endpoint=endpoint)


class KedaLoop:
    """The ``queue`` policy: KEDA's rule polled every 5 s, through the product's allocation cycle.

    Each poll reads the queue's queued + running task instances from the REST API and runs
    ``run_cycle`` (same planner, ledger, release protocol: cordon, drain, re-check) with the polls of
    the stabilisation window as the observed ``slots`` demand (``live_policies.keda_window``).
    """

    def __init__(self, api: Any, store: Any, emulator_url: str, broker_url: str, pool: Any) -> None:
        from celery import Celery

        from airflow_predictive.workers.celery import CeleryWorkers

        self.api, self.store, self.pool = api, store, pool
        self.engine = keda_engine(pool.project, pool.zone, emulator_url)
        self.celery = Celery("live-bench-keda", broker=broker_url)
        self.workers = CeleryWorkers(self.celery, pool.queue_name, timeout=2.0)
        self.samples: list[float] = []
        self.cycles = 0

    def _tasks(self) -> Any:
        from airflow_predictive.airflow_api.client import fetch_running_tasks

        try:
            return fetch_running_tasks(self.api)
        except Exception:
            return None  # unknown: the cycle releases nothing

    def step(self) -> None:
        from airflow_predictive.runtime.allocation_cycle import run_cycle

        tasks = self._tasks()
        if tasks is None:
            return
        self.samples.append(float(sum(t.queue == self.pool.queue_name for t in tasks)))
        self.samples = self.samples[-200:]
        pending = [tasks]
        run_cycle(
            self.pool,
            self.store,
            self.engine,
            now=datetime.now(UTC),
            running_tasks=lambda: pending.pop() if pending else self._tasks(),
            workers=self.workers,
            observed={"slots": lp.keda_window(self.samples)},
        )
        self.cycles += 1

    def close(self) -> None:
        self.celery.close()


class UserTriggers:
    """Triggers every policy's copy of a DAG when the workload says a user does."""

    def __init__(self, airflow: Any, workload: lw.Workload, policies: list[str]) -> None:
        self.airflow, self.pending, self.policies = airflow, list(workload.triggers), policies
        self.sent: list[dict[str, Any]] = []

    def step(self) -> None:
        now = datetime.now(UTC)
        with self.airflow.client() as client:
            while self.pending and self.pending[0].at <= now:
                trig = self.pending.pop(0)
                for policy in self.policies:
                    response = client.post(
                        f"/api/v2/dags/{trig.dag_id}__{policy}/dagRuns",
                        json={"dag_run_id": trig.run_id, "logical_date": None, "conf": {"user": trig.user}},
                    )
                    response.raise_for_status()
                self.sent.append(
                    {"at": _iso(trig.at), "sent": _iso(now), "dag": trig.dag_id, "user": trig.user}
                )


# ------------------------------------------------------------------------------------------ the run


def run(
    settings: LiveSettings,
    *,
    home: Path,
    postgres_url: str,
    broker_url: str,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; return the JSON-able result (settings, metrics per policy, samples, actions).

    :param settings: what to run.
    :param home: an empty working folder (AIRFLOW_HOME, DAGs, templates, VM logs).
    :param postgres_url: a PostgreSQL superuser URL (throw-away databases are created and dropped).
    :param broker_url: a Redis URL of a database index of its own (flushed before and after).
    :param log: takes one progress line (default: stderr).
    """
    import sys

    from airflow_predictive.airflow_api.client import AirflowApiClient

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    policies = list(settings.policies)
    wall_start = time.monotonic()
    with deployment(settings, Path(home).resolve(), postgres_url, broker_url) as env:
        airflow, store = env["airflow"], env["store"]
        say(f"Airflow up in {time.monotonic() - wall_start:.0f} s at {airflow.base_url}")
        now = datetime.now(UTC)
        start = workload_start(now, settings.warmup_minutes, settings.pools)
        workload = lw.build_workload(
            start,
            settings.minutes,
            settings.seed,
            short=settings.short,
            triggers_per_hour=settings.triggers_per_hour,
        )
        static_n = lw.static_instances(workload, settings.pools.slots)
        (env["home"] / "pools.yaml").write_text(lp.pools_yaml(policies, settings.pools, static_n))
        seeding = time.monotonic()
        seeded = live_history.seed_history(
            store,
            workload,
            {p: lp.pool_name(p) for p in policies if lp.in_dag(p)},
            now=now,
            days=settings.history_days,
            interval=timedelta(minutes=settings.pools.cadence_minutes),
            triggers_per_hour=settings.triggers_per_hour,
        )
        seeded["seconds"] = round(time.monotonic() - seeding, 1)
        say(f"seeded {settings.history_days:g} days of past runs: {seeded}")
        queues = {p: lp.pool_name(p) for p in policies}
        (env["dags"] / "live_workload.py").write_text(
            lw.dag_source(workload, policies, str(env["templates"]), queues)
        )
        for dag in workload.dags:
            airflow.wait_for_dag(f"{dag.dag_id}__{policies[-1]}", timeout=180)
        # The control loop starts once the workload's DAGs are parsed: its first cycle sees their runs.
        shutil.copy(REPO / "dags" / "predictive_scaling.py", env["dags"] / "predictive_scaling.py")
        if any(lp.in_dag(p) for p in policies):
            airflow.wait_for_dag(CONTROL_DAG, timeout=180)
        say(
            f"workload starts {start.isoformat()}: {len(workload.scheduled_runs())} scheduled runs and "
            f"{len(workload.triggers)} user triggers per policy; static holds {static_n} VMs"
        )
        api = AirflowApiClient(airflow.base_url, username="admin", password=airflow.password)
        keda = (
            KedaLoop(api, store, env["emulator_url"], broker_url, lp.queue_pool(settings.pools))
            if "queue" in policies
            else None
        )
        sampler = Sampler(api, env["emulator_url"], policies)
        triggers = UserTriggers(airflow, workload, policies)
        loops = [
            Loop("sampler", settings.sample_seconds, sampler.step),
            Loop("user-triggers", 1.0, triggers.step),
        ]
        if keda:
            loops.append(Loop("keda", lp.KEDA_POLLING_SECONDS, keda.step))
        try:
            with contextlib.ExitStack() as running:
                for loop in loops:
                    running.enter_context(loop)
                end = start + timedelta(minutes=settings.minutes)
                _sleep_until(end)
                finished = _wait_for_workload(airflow, end + timedelta(minutes=settings.drain_minutes))
                say(
                    f"workload {'finished' if finished else 'NOT finished'} at {datetime.now(UTC).isoformat()}"
                )
                work_end = datetime.now(UTC)
            result = _result(
                settings, workload, env, api, sampler, keda, triggers, static_n, work_end, finished
            )
            result["history"] = seeded
            result["errors"] = {loop._thread.name: loop.errors[-20:] for loop in loops if loop.errors}
        finally:
            if keda:
                keda.close()
            api.close()
        result["wall_seconds"] = round(time.monotonic() - wall_start)
        return result


def workload_start(now: datetime, warmup_minutes: float, pools: lp.PoolSettings) -> datetime:
    """When the workload starts: the first boundary of the control loop's demand buckets at least
    ``warmup + lead`` after ``now``.

    A forecast covers whole buckets from the one after the bucket in progress, so a cycle sees known
    work that starts in its own bucket only through the cycles before it. A deployment whose loop has
    run for weeks always has such a cycle: the one whose window (``now + lead`` to ``+ interval``)
    first reaches the run's bucket, at least ``lead`` before the bucket starts. Starting the workload
    on a bucket boundary, at least ``lead`` after the loop's first cycle (which runs within the
    warm-up), gives the benchmark that cycle too, instead of a first run that falls, by the clock,
    in the first cycle's own bucket.

    :param now: the current time.
    :param warmup_minutes: the control loop's time before the workload (its DAG parsed, a first cycle).
    :param pools: the pools' lead time and the loop's cadence (the buckets' width).
    """
    step = pools.cadence_minutes * 60
    earliest = (now + timedelta(minutes=warmup_minutes + pools.lead_minutes)).timestamp()
    # whole minutes (cron): a cadence that is not a whole number of minutes rounds up to the minute
    return datetime.fromtimestamp(math.ceil(math.ceil(earliest / step) * step / 60) * 60, UTC)


def _sleep_until(moment: datetime) -> None:
    while (left := (moment - datetime.now(UTC)).total_seconds()) > 0:
        time.sleep(min(left, 5))


def _wait_for_workload(airflow: Any, deadline: datetime) -> bool:
    """Wait until no workload run is queued or running (the control loop's own runs do not count)."""
    while datetime.now(UTC) < deadline:
        with airflow.client() as client:
            response = client.get(
                "/api/v2/dags/~/dagRuns", params={"state": ["queued", "running"], "limit": 200}
            )
            response.raise_for_status()
            active = [r for r in response.json()["dag_runs"] if r["dag_id"] != CONTROL_DAG]
        if not active:
            return True
        time.sleep(5)
    return False


# ------------------------------------------------------------------------------------------ metrics


def _tries(api: Any, policy: str) -> list[dict[str, Any]]:
    """Every try of every task instance of the policy's DAG copies (REST API)."""
    rows = list(
        api.paginate("/dags/~/dagRuns/~/taskInstances", "task_instances", {"dag_id_pattern": f"__{policy}"})
    )
    rows = [r for r in rows if r["dag_id"].endswith(f"__{policy}")]
    tries = []
    for r in rows:
        if (r.get("try_number") or 1) <= 1:
            tries.append(r)
            continue
        path = f"/dags/{r['dag_id']}/dagRuns/{r['dag_run_id']}/taskInstances/{r['task_id']}/{r['map_index']}/tries"
        tries += list(api.paginate(path, "task_instances"))
    return tries


def queue_waits(tries: list[dict[str, Any]]) -> list[float]:
    """Seconds from queued to running of every try that started."""
    waits = []
    for t in tries:
        queued, started = _ts(t.get("queued_when")), _ts(t.get("start_date"))
        if queued and started:
            waits.append(max(0.0, (started - queued).total_seconds()))
    return waits


def wait_summary(waits: list[float]) -> dict[str, Any]:
    """p50, p95, max and the share over 30 s of the queue waits (seconds)."""
    if not waits:
        return {"tries": 0}
    ordered = sorted(waits)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "tries": len(waits),
        "p50_s": round(statistics.median(ordered), 1),
        "p95_s": round(p95, 1),
        "max_s": round(ordered[-1], 1),
        "share_over_30s": round(sum(w > WAIT_OVER for w in waits) / len(waits), 3),
    }


def replayed_waits(tries: list[dict[str, Any]], samples: list[dict[str, Any]], policy: str) -> list[float]:
    """Each started try's wait replayed through the worker slots the policy's pool had.

    The service-level choice's queue model (``simulation/task_queue.py``: each try at its queued
    time for its own run time, first in first out) on the slots the sampler saw registered, step by
    step: set beside the waits Airflow measured, it says how far the model a queue-wait level is
    chosen by is from the real queue.

    :param tries: the policy's tries (REST API rows).
    :param samples: the sampler's rows (``t`` and ``{policy: {"slots": ...}}``).
    :param policy: the policy.
    """
    from airflow_predictive.simulation.task_queue import replay_waits

    replay = _replayed_tries(tries, samples, policy)
    if replay is None:
        return []
    recorded, slots, step = replay
    return [float(w) for w in replay_waits(recorded, slots, step)]


def pickup_check(tries: list[dict[str, Any]], samples: list[dict[str, Any]], policy: str) -> dict[str, Any]:
    """The choice's pickup (``task_queue.pickup_s``) learned on the first half of the policy's tries
    and added to the replay of the second half, beside the second half's measured waits: whether a
    pickup measured on the pool's past tries corrects the replay of its next ones.

    :param tries: the policy's tries (REST API rows).
    :param samples: the sampler's rows.
    :param policy: the policy.
    """
    import numpy as np

    from airflow_predictive.simulation.task_queue import MIN_PICKUP_TRIES, pickup_s, replay_waits

    replay = _replayed_tries(tries, samples, policy)
    if replay is None or len(replay[0].queued_s) < 2 * MIN_PICKUP_TRIES:
        return {}
    recorded, slots, step = replay
    first = recorded.queued_s < np.median(recorded.queued_s)
    later = ~first
    pickup = pickup_s(recorded, slots, step, first)
    replayed = replay_waits(recorded, slots, step)[later]

    def p95(values: np.ndarray) -> float:
        return round(float(np.quantile(values, 0.95)), 1)

    return {
        "pickup_s": round(pickup, 1),
        "second_half_tries": int(later.sum()),
        "second_half_measured_p95_s": p95(recorded.waited_s[later]),
        "second_half_replayed_p95_s": p95(replayed),
        "second_half_replayed_plus_pickup_p95_s": p95(replayed + pickup),
    }


def _replayed_tries(tries: list[dict[str, Any]], samples: list[dict[str, Any]], policy: str) -> Any:
    """The policy's started tries (with their measured waits), the slots its pool had per step and
    the step in seconds; None when there is nothing to replay."""
    import numpy as np

    from airflow_predictive.simulation.task_queue import Tries

    seen = [(_ts(row["t"]), row[policy]["slots"]) for row in samples if policy in row]
    started = [t for t in tries if _ts(t.get("queued_when")) and _ts(t.get("start_date"))]
    if len(seen) < 2 or not started:
        return None
    origin = seen[0][0]
    step = statistics.median((b[0] - a[0]).total_seconds() for a, b in zip(seen, seen[1:], strict=False))
    steps = math.ceil((seen[-1][0] - origin).total_seconds() / step) + 1
    # each sample's slots hold from its step until the next sample's
    at = np.array([int((t - origin).total_seconds() // step) for t, _ in seen])
    slots = np.array([n for _, n in seen], dtype=float)[
        np.searchsorted(at, np.arange(steps), side="right") - 1
    ]
    queued = [(_ts(t["queued_when"]) - origin).total_seconds() for t in started]
    run = [
        ((_ts(t.get("end_date")) or _ts(t["start_date"])) - _ts(t["start_date"])).total_seconds()
        for t in started
    ]
    waited = [(_ts(t["start_date"]) - _ts(t["queued_when"])).total_seconds() for t in started]
    replay = Tries(np.array(queued), np.array(run), np.ones(len(started)), 1.0, np.array(waited))
    return replay, slots, step


def vm_hours(vms: dict[str, dict[str, Any]], pool: str, end: datetime) -> float:
    """VM-hours of a pool: each VM from its creation to the last sample that saw it, clipped at ``end``."""
    total = 0.0
    for vm in vms.values():
        if vm["pool"] != pool or not vm["created"]:
            continue
        created, last = _ts(vm["created"]), min(_ts(vm["last_seen"]), end)
        total += max(0.0, (last - created).total_seconds()) / 3600
    return total


def _key(t: dict[str, Any]) -> tuple:
    return (t["dag_id"], t["dag_run_id"], t["task_id"], t["map_index"])


def lost_tasks(tries: list[dict[str, Any]]) -> list[tuple]:
    """Task instances that did not succeed at their first try (a try lost with its worker, or a task
    that never succeeded)."""
    by_task: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for t in tries:
        by_task[_key(t)].append(t)
    return [
        key
        for key, ts in by_task.items()
        if len(ts) > 1 or max(ts, key=lambda t: t.get("try_number") or 1).get("state") != "success"
    ]


def lost_details(
    tries: list[dict[str, Any]],
    kills: list[dict[str, Any]],
    releases: list[dict[str, Any]],
    log_lines: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Each lost task instance: its tries (state, VM, times), its final state and why, from the run's
    own data.

    :param tries: every try of the policy's task instances (REST API).
    :param kills: the emulator's killed workers (``instance``, ``reason``, ``at``).
    :param releases: applied releases of the policy's pool (``target``, ``at``).
    :param log_lines: the scheduler's log, to quote what it said about the task instance.
    """
    from airflow_predictive.planning.busy import host_forms

    by_task: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for t in tries:
        by_task[_key(t)].append(t)
    out = []
    for key in lost_tasks(tries):
        rows = sorted(by_task[key], key=lambda t: t.get("try_number") or 1)
        described, why = [], []
        for t in rows:
            n, state = t.get("try_number") or 1, t.get("state")
            queued, started, ended = (
                _ts(t.get("queued_when")),
                _ts(t.get("start_date")),
                _ts(t.get("end_date")),
            )
            forms = host_forms(t.get("hostname") or "")
            vm = next((k["instance"] for k in kills if k["instance"] in forms), None) or (
                t.get("hostname") or None
            )
            described.append(
                {
                    "try": n,
                    "state": state,
                    "vm": vm,
                    "worker": f"celery@{vm}" if vm else None,
                    "queued": _iso(queued),
                    "started": _iso(started),
                    "ended": _iso(ended),
                }
            )
            if state == "success":
                continue
            begin, finish = queued or started, ended or datetime.now(UTC)
            if started and vm:
                gone = [k for k in kills if k["instance"] == vm and started <= _ts(k["at"]) <= finish]
                released = [r for r in releases if r["target"] == vm and started <= _ts(r["at"]) <= finish]
                if gone or released:
                    what = gone[0]["reason"] if gone else "released"
                    why.append(
                        f"try {n}: its worker VM {vm} was {what} at {(gone or released)[0]['at']} while it ran"
                    )
                else:
                    why.append(
                        f"try {n}: {state} on {vm} with its worker up (the task itself, or missed heartbeats)"
                    )
            elif not started:
                meanwhile = sorted(
                    {k["instance"] for k in kills if begin and begin <= _ts(k["at"]) <= finish}
                )
                why.append(
                    f"try {n}: queued {_iso(queued)}, never started, {state} at {_iso(ended)}"
                    + (f"; workers killed meanwhile: {', '.join(meanwhile)}" if meanwhile else "")
                )
        run_id, task_id = str(key[1]), str(key[2])
        said = [line.strip()[:400] for line in log_lines or () if run_id in line and task_id in line]
        out.append(
            {
                "dag_id": key[0],
                "run_id": run_id,
                "task_id": task_id,
                "map_index": key[3],
                "final_state": rows[-1].get("state"),
                "tries": described,
                "why": why or ["retried and then succeeded"],
                "scheduler_log": [line for line in said if _NOTABLE.search(line)][:8],
            }
        )
    return out


_NOTABLE = re.compile(r"stuck in queued|heartbeat|zombie|marking|failed|requeue|re-queue|adopt|revok", re.I)


def plan_trail(plans: Any) -> list[dict[str, Any]]:
    """Each allocation cycle's plan in a line: its rule, the slot demand it covered and held, the VMs
    before and after (why a policy held what it held, from the run's own JSON).

    :param plans: the store's plan rows of one pool (``created_at``, ``summary`` JSON).
    """
    out = []
    for _, row in plans.iterrows():
        summary = json.loads(row["summary"] or "{}")
        out.append(
            {
                "t": _iso(row["created_at"].to_pydatetime()),
                "sizing": summary.get("sizing"),
                "quantile": summary.get("quantile"),
                "demand_slots": (summary.get("demand") or {}).get("slots"),
                "hold_slots": (summary.get("hold") or {}).get("slots"),
                "vms_before": summary.get("instances_before"),
                "vms_after": summary.get("instances_after"),
            }
        )
    return out


def _busy_releases(releases: Any, tries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Applied releases of a VM while a try ran on it (must be none)."""
    from airflow_predictive.planning.busy import host_forms

    hits = []
    for _, release in releases.iterrows():
        at = release["updated_at"].to_pydatetime()
        for t in tries:
            start, end = _ts(t.get("start_date")), _ts(t.get("end_date")) or datetime.now(UTC)
            if start and release["target"] in host_forms(t.get("hostname") or "") and start <= at <= end:
                hits.append(
                    {"vm": release["target"], "at": _iso(at), "task": t["task_id"], "run": t["dag_run_id"]}
                )
    return hits


def first_stage_readiness(
    tries: list[dict[str, Any]], workload: lw.Workload, workers: dict[str, str]
) -> list[dict[str, Any]]:
    """For each scheduled run: when its first stage's first task was queued, and whether the VM whose
    worker ran it was RUNNING (its worker started) before that."""
    from airflow_predictive.planning.busy import host_forms

    firsts = {d.dag_id: lw.first_stage(d) for d in workload.dags if d.period_minutes}
    out = []
    by_run: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for t in tries:
        dag = t["dag_id"].split("__")[0]
        if dag in firsts and t["task_id"] == firsts[dag] and str(t["dag_run_id"]).startswith("scheduled__"):
            by_run[(t["dag_id"], t["dag_run_id"])].append(t)
    for (dag_id, run_id), ts in sorted(by_run.items()):
        queued = min(_ts(t["queued_when"]) for t in ts if t.get("queued_when"))
        ready = []
        for t in ts:
            vm = next((name for name in workers if name in host_forms(t.get("hostname") or "")), None)
            ready.append(_ts(workers[vm]) if vm and workers[vm] else None)
        known = [r for r in ready if r]
        worker_ready = min(known) if known else None
        out.append(
            {
                "dag_id": dag_id,
                "run_id": run_id,
                "queued": _iso(queued),
                "worker_started": _iso(worker_ready),
                "ready_before_queued": bool(worker_ready and worker_ready < queued),
            }
        )
    return out


def _result(
    settings: LiveSettings,
    workload: lw.Workload,
    env: dict,
    api: Any,
    sampler: Sampler,
    keda: KedaLoop | None,
    triggers: UserTriggers,
    static_n: int,
    work_end: datetime,
    finished: bool,
) -> dict[str, Any]:
    from airflow_predictive.contracts.pools import CapacityPool
    from airflow_predictive_tools.emulator.server import EmulatorControl

    store = env["store"]
    kills = EmulatorControl(env["emulator_url"]).workers().get("kills") or []
    log_path = env["airflow"].home / "scheduler.log"
    scheduler_log = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    price = CapacityPool(name="price", **lp.pool_settings("queue", settings.pools, 0)).price(spot=False)
    actions = store.actions()
    policies: dict[str, Any] = {}
    for policy in settings.policies:
        pool = lp.pool_name(policy)
        tries = _tries(api, policy)
        mine = (
            actions[(actions["pool"] == pool) & (actions["status"] == "applied")] if len(actions) else actions
        )
        releases = mine[mine["kind"] == "release"] if len(mine) else mine
        hours = vm_hours(sampler.vms, pool, work_end)
        policies[policy] = {
            "queue_wait": wait_summary(queue_waits(tries)),
            "queue_wait_replayed": wait_summary(replayed_waits(tries, sampler.rows, policy)),
            "queue_wait_pickup": pickup_check(tries, sampler.rows, policy),
            "vm_hours": round(hours, 3),
            "cost_usd": round(hours * price, 3),
            "tasks": len({_key(t) for t in tries}),
            "tasks_lost": len(lost_tasks(tries)),
            # which, on which VM and why (the emulator's worker kills, the ledger, the scheduler's log)
            "lost": lost_details(
                tries,
                [k for k in kills if k["instance"].startswith(pool)],
                [
                    {"target": r["target"], "at": _iso(r["updated_at"].to_pydatetime())}
                    for _, r in releases.iterrows()
                ],
                scheduler_log,
            )[:50],
            "busy_vms_released": len(_busy_releases(releases, tries)),
            "actions": dict(Counter(mine["kind"])) if len(mine) else {},
            "vms_launched": int(mine.loc[mine["kind"] == "launch_instances", "amount"].sum())
            if len(mine)
            else 0,
            "first_stage": first_stage_readiness(tries, workload, sampler.workers),
            "action_times": [
                {"t": _iso(r["updated_at"].to_pydatetime()), "kind": r["kind"], "amount": float(r["amount"])}
                for _, r in mine.iterrows()
            ],
            "plans": plan_trail(store.plans(pool=pool)) if lp.in_dag(policy) else [],
        }
    return {
        "command": None,
        "date": datetime.now(UTC).date().isoformat(),
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k != "pools"},
            "pools": asdict(settings.pools),
            "keda": {
                "polling_seconds": lp.KEDA_POLLING_SECONDS,
                "cooldown_seconds": lp.KEDA_COOLDOWN_SECONDS,
                "hpa_scale_down_seconds": lp.HPA_SCALE_DOWN_SECONDS,
            },
            "machine_type": lp.MACHINE_TYPE,
            "price_per_vm_hour": price,
            "static_instances": static_n,
        },
        "workload": {
            "start": _iso(workload.start),
            "end": _iso(work_end),
            "finished": finished,
            "scheduled_runs": [(_iso(at), d) for at, d in workload.scheduled_runs()],
            "user_triggers": triggers.sent,
            "nominal_peak_tasks": workload.peak_tasks(),
        },
        "keda_cycles": keda.cycles if keda else 0,
        "policies": policies,
        "samples": sampler.rows,
    }

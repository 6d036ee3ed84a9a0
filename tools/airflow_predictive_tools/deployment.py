"""Run a real, short-lived Airflow whose processes the caller owns (tests and ``make demo``).

``AirflowDeployment`` starts the components one by one (api-server, scheduler, dag-processor,
triggerer; optionally Celery workers) bound to 127.0.0.1 on free ports, each in its own process group,
and stops each by its PID: ``airflow standalone`` ignores SIGINT in the background and orphans its
children on SIGTERM (see AIRFLOW3-NOTES.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent

# sqlite3 waits 5 s for another connection's write lock, then fails with "database is locked": on a
# busy machine an Airflow component then crashes on its SQLite metadata DB. Airflow imports these by
# dotted path ([database] sql_alchemy_connect_args, and _async for the API server's async engine).
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 60}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # Components start further `airflow ...` processes from PATH: make it this venv's.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def airflow_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``airflow ARGS`` from this venv; on failure raise with its output so the test log shows why."""
    proc = subprocess.run(
        [str(BIN / "airflow"), *args], env=_env(env), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"airflow {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


class AirflowDeployment:
    """A real Airflow on 127.0.0.1 for one test module: start it, use its REST API, stop every PID.

    :param home: an empty folder for AIRFLOW_HOME (metadata DB, logs, passwords file).
    :param dags_folder: the DAGs folder the dag-processor parses.
    :param components: which ``airflow`` components to run.
    :param executor: the core executor (LocalExecutor by default; CeleryExecutor for scale-out tests).
    :param parallelism: kept low: LocalExecutor pre-forks this many workers (~140 MB each).
    :param env: extra environment (e.g. ``AIRFLOW__PREDICTIVE__STORE_PATH``).
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        *,
        components: Iterable[str] = ("api-server", "scheduler", "dag-processor", "triggerer"),
        executor: str = "LocalExecutor",
        parallelism: int = 4,
        env: Mapping[str, str] | None = None,
        sql_alchemy_conn: str | None = None,
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.components = list(components)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.processes: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        self.env = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            # Every component must sign and check task tokens with the same secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Patient with a busy 2-core machine (the suite runs two files at a time): a task's
            # supervisor waits for a slow API server instead of failing the task before it starts or
            # killing it after a few missed heartbeats.
            "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "30",
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        }
        if sql_alchemy_conn:
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = sql_alchemy_conn
        self.env.update(env or {})
        if self.env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite"):
            for key in ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
                self.env.setdefault(f"AIRFLOW__DATABASE__{key}", f"{__name__}.SQLITE_CONNECT_ARGS")

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> AirflowDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 180) -> None:
        airflow_cli("db", "migrate", env=self.env)
        for component in self.components:
            self.start_component(component)
        self.wait_healthy(timeout)

    def start_component(
        self, component: str, *args: str, name: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Start ``airflow COMPONENT ARGS`` (e.g. ``"celery worker"``) with this deployment's environment."""
        return self.start_process(
            name or component, [str(BIN / "airflow"), *component.split(), *args], env=env
        )

    def start_process(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Start any command (e.g. ``airflow-predictive gce-emulator --workers``) in this deployment's
        environment, logged to ``<home>/<name>.log`` and stopped with the deployment by its process group."""
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            list(argv),
            env=_env({**self.env, **(env or {})}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() can end the component and its children
        )
        proc._log_file = log  # type: ignore[attr-defined]
        self.processes[name] = proc
        return proc

    def stop(self) -> None:
        for name, proc in reversed(list(self.processes.items())):
            _stop_group(proc)
            proc._log_file.close()  # type: ignore[attr-defined]
            del self.processes[name]

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise AssertionError(f"airflow {name} exited {proc.returncode}:\n{self.log_tail(name)}")
            try:
                response = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(1)
        raise AssertionError(f"Airflow API server not healthy after {timeout}s: {last}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # ----------------------------------------------------------------- REST API

    def api_connection(self) -> str:
        """This deployment's REST API as a ``predictive_airflow_api`` connection (JSON, for
        ``AIRFLOW_CONN_PREDICTIVE_AIRFLOW_API_DEFAULT``): what the profiler and the allocator read."""
        return json.dumps(
            {
                "conn_type": "predictive_airflow_api",
                "host": self.base_url,
                "login": "admin",
                "password": self.password,
            }
        )

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": "admin", "password": self.password},
                timeout=30,
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                response = poll(client, f"/api/v2/dags/{dag_id}")
                if response is not None and response.status_code == 200:
                    return response.json()
                time.sleep(1)
            errors = client.get("/api/v2/importErrors").text
        raise AssertionError(f"DAG {dag_id} not parsed after {timeout}s; import errors: {errors[:3000]}")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Unpause ``dag_id`` and trigger a run; its run id.

        The run id is chosen here, so a trigger sent again after a timeout (a loaded API server on a
        SQLite metadata DB answered a POST after more than 30 s) cannot create a second run: Airflow
        answers 409 for an id it already has, which means the first attempt made the run.
        """
        run_id = f"manual__{secrets.token_hex(8)}"
        with self.client() as client:
            _retry_server_errors(
                lambda: client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False})
            ).raise_for_status()
            response = _retry_server_errors(
                lambda: client.post(
                    f"/api/v2/dags/{dag_id}/dagRuns",
                    json={"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})},
                )
            )
            if response.status_code != 409:
                response.raise_for_status()
            return run_id

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        state = "unknown"
        with self.client() as client:
            while time.monotonic() < deadline:
                response = poll(client, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
                if response is not None and response.status_code < 500:
                    response.raise_for_status()
                    state = response.json()["state"]
                    if state in ("success", "failed"):
                        return state
                time.sleep(2)
        raise AssertionError(
            f"run {dag_id}/{run_id} still {state} after {timeout}s\n{self.log_tail('scheduler')}"
        )


def poll(client: httpx.Client, path: str, **params: Any) -> httpx.Response | None:
    """One GET of a polling loop; None when it timed out, so the loop polls again until its own deadline.

    A stalled API server (see :func:`_retry_server_errors`) answers no request for up to the busy
    timeout: a poll that falls into it must not fail the caller while the run goes on.
    """
    try:
        return client.get(path, params=params or None)
    except httpx.TimeoutException:
        return None


def _retry_server_errors(send: Callable[[], httpx.Response], attempts: int = 5) -> httpx.Response:
    """``send()``, sent again after a 5xx or a timeout (at most ``attempts`` times in all).

    On a SQLite metadata DB the API server can stall for the whole busy timeout (60 s here) and then
    answer 500 ("database is locked"): Airflow 3.3's REST audit log commits on the server's event loop
    while another request's transaction holds the write lock until a commit that needs that loop. The
    failed request's transaction was rolled back, so sending it again is safe. A timed-out request may
    have been carried out: only idempotent requests go through here (a trigger names its run id).
    """
    for attempt in range(1, attempts):
        try:
            response = send()
            if response.status_code < 500:
                return response
        except httpx.TimeoutException:
            pass
        time.sleep(attempt)
    return send()  # the last attempt: its answer or its error


def _stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # Children that left the group (none expected) are not ours to hunt; the group is gone.


# ------------------------------------------------------------------ Celery deployments (benchmarks)


@contextlib.contextmanager
def throwaway_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of ``template`` if given), dropped on exit; yields its URL."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def flush_broker(broker_url: str) -> None:
    """Empty the Redis database of the broker (a run must not inherit another run's messages)."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        client.flushdb()
    finally:
        client.close()


def celery_airflow(
    stack: contextlib.ExitStack,
    home: Path,
    dags_folder: Path,
    *,
    postgres_url: str,
    broker_url: str,
    db_prefix: str,
    emulator_url: str,
    parallelism: int,
    env: Mapping[str, str] | None = None,
) -> tuple[str, AirflowDeployment]:
    """The benchmarks' Airflow: a throw-away PostgreSQL metadata DB and profile store, the Redis broker
    flushed before and after, and api-server, scheduler and dag-processor with CeleryExecutor (no
    workers: each benchmark starts its own). Everything is registered on ``stack``, so it is stopped
    and dropped when the stack closes. Returns the store's URL and the started deployment.

    :param db_prefix: names the two databases ``<db_prefix>_meta_*`` and ``<db_prefix>_store_*``.
    :param emulator_url: the Compute Engine emulator the product's tasks talk to.
    :param env: environment on top of the common one (pools file, intervals, ...).
    """
    meta_url = stack.enter_context(throwaway_database(postgres_url, f"{db_prefix}_meta"))
    store_url = stack.enter_context(throwaway_database(postgres_url, f"{db_prefix}_store"))
    flush_broker(broker_url)
    stack.callback(flush_broker, broker_url)
    store_conn = {"conn_type": "predictive_store", "extra": {"sqlalchemy_url": store_url}}
    airflow = stack.enter_context(
        AirflowDeployment(
            home,
            dags_folder,
            components=("api-server", "scheduler", "dag-processor"),
            executor="CeleryExecutor",
            parallelism=parallelism,
            env={
                "AIRFLOW__CELERY__BROKER_URL": broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url.replace("+psycopg2", ""),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
                "AIRFLOW__PREDICTIVE__STORE_CONN_ID": "predictive_store_default",
                "AIRFLOW_CONN_PREDICTIVE_STORE_DEFAULT": json.dumps(store_conn),
                "AIRFLOW__PREDICTIVE__EMULATOR_URL": emulator_url,
                **(env or {}),
            },
            sql_alchemy_conn=meta_url,
        )
    )
    # The profile sensor and the allocator read this deployment's REST API (task history, busy hosts).
    airflow.env["AIRFLOW_CONN_PREDICTIVE_AIRFLOW_API_DEFAULT"] = airflow.api_connection()
    return store_url, airflow

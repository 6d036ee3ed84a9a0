"""``airflow-predictive profile``: ingest task history from an Airflow REST API, then rebuild demand."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow_predictive import config
from airflow_predictive.airflow_api.client import AirflowApiClient, AirflowApiError
from airflow_predictive.hooks.airflow_api import AirflowApiHook


def register(commands: Any, bench: Any) -> None:
    """Add ``profile``.

    :param commands: top-level sub-parsers.
    :param bench: ``bench`` sub-parsers.
    """

    profile = commands.add_parser(
        "profile", help="ingest task history from an Airflow REST API, then rebuild demand and summaries"
    )
    add_store_argument(profile)
    source = profile.add_mutually_exclusive_group(required=True)
    source.add_argument("--conn-id", help="Airflow connection of the API (conn type predictive_airflow_api)")
    source.add_argument("--api-url", help="API server base URL, e.g. http://127.0.0.1:8080")
    profile.add_argument("--username", help="user for POST /auth/token (with --api-url)")
    profile.add_argument(
        "--password-env",
        default="AIRFLOW_PREDICTIVE_API_PASSWORD",
        help="environment variable holding the password (never pass secrets on the command line)",
    )
    profile.add_argument("--token-env", help="environment variable holding a pre-issued access token")
    add_queue_pool_argument(profile)
    profile.add_argument("--interval-minutes", type=int, help="demand bucket width (default: config)")
    profile.add_argument("--days", type=int, default=28, help="history the demand and summaries cover")
    profile.set_defaults(func=_profile)


def add_queue_pool_argument(parser: argparse.ArgumentParser) -> None:
    """``--queue-pool QUEUE=POOL`` (repeatable), shared with the tooling's ``seed-history``."""
    parser.add_argument(
        "--queue-pool",
        action="append",
        default=[],
        metavar="QUEUE=POOL",
        help="map a queue to a pool (default: the queues of [predictive] pools_file; else pool = queue)",
    )


def queue_pools_from(items: list[str]) -> dict[str, str] | None:
    """``{queue: pool}`` from ``--queue-pool`` values, else the pools file's queues."""
    queue_pools = {}
    for item in items:
        queue, sep, pool = item.partition("=")
        if not sep or not queue or not pool:
            raise ValueError(f"--queue-pool expects QUEUE=POOL, got {item!r}")
        queue_pools[queue] = pool
    if queue_pools:
        return queue_pools
    return config.configured_queue_pools()


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store``: a SQLite file or a SQLAlchemy URL."""
    parser.add_argument(
        "--store",
        help="profile store: a SQLite file path or a SQLAlchemy URL (default: [predictive] store settings)",
    )


def fail(message: str) -> int:
    """Print one error line and return the usage exit code (2)."""
    print(f"airflow-predictive: {message}", file=sys.stderr)
    return 2


def open_store(value: str | None):
    """The store ``--store`` names, else the configured one."""
    # Imported by the handler: `airflow-predictive --help` imports every command module.
    from airflow_predictive.hooks.profile_store import configured_store
    from airflow_predictive.store import ProfileStore

    if not value:
        return configured_store()
    if "://" in value:
        return ProfileStore(value)
    return ProfileStore.sqlite(Path(value))


def bucket_width(minutes: int | None) -> timedelta | None:
    """``--interval-minutes`` as a bucket width (None: not given)."""
    if minutes is None:
        return None
    if minutes <= 0:
        raise ValueError(f"--interval-minutes must be positive, got {minutes}")
    return timedelta(minutes=minutes)


def _profile(args: argparse.Namespace) -> int:
    # Imported by the handler: `airflow-predictive --help` imports every command module.
    from airflow_predictive.runtime.profile_refresh import refresh_profile
    from airflow_predictive.runtime.task_history import TaskHistoryCollector
    from airflow_predictive.store import StoreError

    try:
        queue_pools = queue_pools_from(args.queue_pool)
        interval = bucket_width(args.interval_minutes) or config.interval()
        if args.conn_id:
            client = AirflowApiHook(args.conn_id).get_client()
        else:
            token = os.environ.get(args.token_env) if args.token_env else None
            password = os.environ.get(args.password_env)
            client = AirflowApiClient(args.api_url, username=args.username, password=password, token=token)
        store = open_store(args.store)
        with client:
            result = TaskHistoryCollector(client, store).collect()
        refreshed = refresh_profile(store, interval=interval, queue_pools=queue_pools, summary_days=args.days)
    except (ValueError, StoreError, AirflowApiError) as exc:
        return fail(str(exc))
    print(json.dumps({"ingested": result.as_dict(), "demand": refreshed}, indent=2, default=str))
    return 0

"""ProfileStoreHook: opens the ProfileStore named by an Airflow connection."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from airflow_predictive import config
from airflow_predictive.store import ProfileStore, StoreError


def configured_store(conn_id: str | None = None, **kwargs: Any) -> ProfileStore:
    """The store named by ``[predictive] store_conn_id`` (or ``conn_id``), else the SQLite default.

    :param conn_id: connection id; ``None`` reads ``[predictive] store_conn_id``, ``""`` means SQLite.
    :param kwargs: passed to :class:`ProfileStore` (e.g. ``upgrade=False``).
    """
    conn_id = config.get("store_conn_id") if conn_id is None else conn_id
    if not conn_id:
        return ProfileStore.sqlite(config.get_path("store_path"), **kwargs)
    return ProfileStoreHook(conn_id).get_store(**kwargs)


class ProfileStoreHook(BaseHook):
    """Open the profile store of an Airflow connection.

    The connection is either ``predictive_store`` (extra ``{"sqlalchemy_url": ...}``, or the usual fields
    with extra ``{"dialect": "postgresql+psycopg2"}``), ``postgres`` (from the postgres provider) or
    ``sqlite`` (host = the file path).

    :param predictive_store_conn_id: the Airflow connection id.
    """

    conn_name_attr = "predictive_store_conn_id"
    default_conn_name = "predictive_store_default"
    conn_type = "predictive_store"
    hook_name = "Predictive profile store"

    def __init__(self, predictive_store_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.predictive_store_conn_id = predictive_store_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"schema": "Database"},
            "placeholders": {
                "extra": '{"dialect": "postgresql+psycopg2"} or {"sqlalchemy_url": "postgresql+psycopg2://..."}',
                "host": "127.0.0.1",
            },
        }

    def sqlalchemy_url(self) -> str:
        try:
            conn = self.get_connection(self.predictive_store_conn_id)
        except Exception as exc:
            raise StoreError(
                f"profile store connection {self.predictive_store_conn_id!r} is not defined: create it "
                f"(conn type predictive_store or postgres) or clear [predictive] store_conn_id to use "
                f"the SQLite default ({exc.__class__.__name__})"
            ) from None
        return url_from_connection(conn)

    def get_store(self, **kwargs: Any) -> ProfileStore:
        return ProfileStore(self.sqlalchemy_url(), **kwargs)

    def test_connection(self) -> tuple[bool, str]:
        try:
            store = self.get_store(upgrade=False)
            version = store.schema_version()
            store.dispose()
        except Exception as exc:
            return False, str(exc)
        return True, f"reachable, schema version {version}"


def url_from_connection(conn: Any) -> str:
    """Build a SQLAlchemy URL from an Airflow connection (no password is ever logged by the caller)."""
    import sqlalchemy as sa

    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    if conn_type in ("postgres", "postgresql"):
        dialect = "postgresql+psycopg2"
    elif conn_type == "predictive_store":
        dialect = extra.get("dialect", "postgresql+psycopg2")
    else:
        raise StoreError(
            f"connection {conn.conn_id!r} has conn type {conn.conn_type!r}; the profile store needs "
            "predictive_store, postgres or sqlite"
        )
    return sa.URL.create(
        dialect,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
    ).render_as_string(hide_password=False)

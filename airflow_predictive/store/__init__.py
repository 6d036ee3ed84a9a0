"""ProfileStore: the provider's own SQL store (SQLite by default, PostgreSQL in production)."""

from airflow_predictive.store.profile_store import ProfileStore, StoreError

__all__ = ["ProfileStore", "StoreError"]

"""The real services some tests need (PostgreSQL, Redis): found or started by the tooling's services module,
which the live benchmark uses too."""

from airflow_predictive_tools.services import (
    ensure_postgres,
    ensure_redis,
    postgres_database,
    redis_database,
)

__all__ = ["ensure_postgres", "ensure_redis", "postgres_database", "redis_database"]

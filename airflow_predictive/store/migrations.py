"""The profile store's schema version and its in-place upgrade (the migrations are in :mod:`schema`)."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, StoreError

# The logger the upgrade message has always come from.
log = logging.getLogger("airflow_predictive.store.profile_store")


class Migrations(Part):
    """Read the schema version and upgrade the store to :data:`schema.SCHEMA_VERSION`."""

    def schema_version(self) -> int:
        with self._db.read() as conn:
            if not sa.inspect(conn).has_table(schema.meta.name):
                return 0
            row = conn.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).scalar()
        return int(row) if row is not None else 0

    def upgrade(self, target: int = schema.SCHEMA_VERSION) -> int:
        """Bring the schema to ``target``, one migration per transaction; return the version reached."""
        current = self.schema_version()
        if current > schema.SCHEMA_VERSION:
            raise StoreError(
                f"profile store {self._db.display_url} has schema version {current}, newer than this "
                f"airflow-predictive understands ({schema.SCHEMA_VERSION}): upgrade the package"
            )
        while current < target:
            with self._db.write() as conn:
                # Re-read inside the write lock: another process may have upgraded meanwhile.
                schema.meta.create(conn, checkfirst=True)
                found = conn.execute(
                    sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
                ).scalar()
                current = int(found) if found is not None else 0
                if current >= target:
                    break
                schema.MIGRATIONS[current](conn)
                current += 1
                self._db.upsert(conn, schema.meta, [{"key": "schema_version", "value": str(current)}])
                log.info("profile store %s upgraded to schema version %d", self._db.display_url, current)
        return current

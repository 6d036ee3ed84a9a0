"""Coordination between processes: named watermarks, and leases kept as watermark rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from airflow_predictive.store import schema
from airflow_predictive.store.database import Part, utcnow


class Watermarks(Part):
    """Named string values (ingest cursors, coverage, forecast bases, ...)."""

    def set_watermark(self, name: str, value: str) -> None:
        with self._db.write() as conn:
            self._db.upsert(conn, schema.watermarks, [{"name": name, "value": value, "updated_at": utcnow()}])

    def get_watermark(self, name: str) -> str | None:
        t = schema.watermarks
        with self._db.read() as conn:
            return conn.execute(sa.select(t.c.value).where(t.c.name == name)).scalar()


class Leases(Part):
    """Expiring named locks: one holder at a time, a crashed holder blocks nobody past its expiry."""

    def try_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take the lease ``name`` for ``owner`` unless another owner holds an unexpired one.

        The lease is a watermark row ``<expiry ISO-8601 UTC>|<owner>``; ISO timestamps compare as
        strings, so taking an expired lease is one conditional UPDATE only one writer can win, and
        taking a new one is an INSERT the primary key lets only one writer make. A crashed holder
        blocks nobody past its expiry.
        """
        t = schema.watermarks
        with self._db.write() as conn:
            now = self._clock(conn)
            value = f"{(now + timedelta(seconds=ttl_seconds)).isoformat(timespec='seconds')}|{owner}"
            taken = conn.execute(
                t.update()
                .where(
                    sa.and_(
                        t.c.name == name,
                        sa.or_(t.c.value < now.isoformat(timespec="seconds"), t.c.value.like(f"%|{owner}")),
                    )
                )
                .values(value=value, updated_at=now)
            ).rowcount
            if taken == 1:
                return True
            if conn.execute(sa.select(t.c.value).where(t.c.name == name)).first() is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(t.insert().values(name=name, value=value, updated_at=now))
            except sa.exc.IntegrityError:
                return False
            return True

    def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend ``owner``'s unexpired lease by ``ttl_seconds`` from now; False when it no longer holds it.

        The fence of the allocator: an action is sent only after a renewal succeeds, so a holder whose
        lease expired (and may have been taken over) sends nothing more.
        """
        t = schema.watermarks
        with self._db.write() as conn:
            now = self._clock(conn)
            value = f"{(now + timedelta(seconds=ttl_seconds)).isoformat(timespec='seconds')}|{owner}"
            return (
                conn.execute(
                    t.update()
                    .where(
                        sa.and_(
                            t.c.name == name,
                            t.c.value.like(f"%|{owner}"),
                            t.c.value >= now.isoformat(timespec="seconds"),
                        )
                    )
                    .values(value=value, updated_at=now)
                ).rowcount
                == 1
            )

    def _clock(self, conn: sa.Connection) -> datetime:
        """The store's clock: leases are judged on one clock, whatever the workers' clocks say."""
        if conn.dialect.name == "postgresql":
            return conn.execute(sa.select(sa.func.clock_timestamp())).scalar().astimezone(UTC)
        return utcnow()  # SQLite is a file on this machine: its clock is this machine's

    def lease_holder(self, name: str) -> tuple[str, str] | None:
        """``(owner, expiry ISO)`` of the lease ``name``, or ``None`` when nobody holds it."""
        t = schema.watermarks
        with self._db.read() as conn:
            value = conn.execute(sa.select(t.c.value).where(t.c.name == name)).scalar()
        if not value:
            return None
        expiry, _, owner = value.partition("|")
        return owner, expiry

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease back (only ``owner``'s own lease: an expired one taken over stays with its taker)."""
        t = schema.watermarks
        with self._db.write() as conn:
            conn.execute(t.delete().where(sa.and_(t.c.name == name, t.c.value.like(f"%|{owner}"))))

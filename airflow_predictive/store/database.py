"""The engine every part of the profile store shares, and the helpers their SQL has in common.

:class:`Database` owns the SQLAlchemy engine (SQLite in WAL mode with ``BEGIN IMMEDIATE`` writers, or
any other URL, PostgreSQL being the target), the read and write connections, the upsert on a table's
natural key, the bulk PostgreSQL ``COPY`` path for frames, record validation and the frame reader.
The concern modules (``history``, ``demand``, ``forecasts``, ...) hold their own SQL on top of it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

_CHUNK = 5000


class StoreError(RuntimeError):
    """The store is missing, unreachable, misconfigured or at an unknown schema version."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def within(
    query: sa.Select, column: sa.ColumnElement, start: datetime | None, end: datetime | None
) -> sa.Select:
    """``query`` restricted to ``start <= column < end``; a missing bound leaves that side open."""
    if start is not None:
        query = query.where(column >= to_utc(start))
    if end is not None:
        query = query.where(column < to_utc(end))
    return query


def is_blank(value: Any) -> bool:
    """A key value that is absent: None, NaN/NaT (pandas' missing string is NaN), or an empty string."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    return not isinstance(value, str | datetime) and bool(pd.isna(value))


def to_utc(value: Any) -> datetime | None:
    """Normalise any timestamp to an aware UTC ``datetime`` (``None``/NaT stay ``None``)."""
    if value is None or (not isinstance(value, datetime) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def utc_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for column in columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    return frame


class Database:
    """The connection to the profile store's database, shared by all its parts.

    :param url: a SQLAlchemy URL, e.g. ``sqlite:////path/profile.db`` or
        ``postgresql+psycopg2://user@127.0.0.1/predictive``.
    """

    def __init__(self, url: str | sa.URL) -> None:
        try:
            self.url = sa.make_url(url)
        except Exception as exc:
            raise StoreError(f"invalid profile store URL: {exc}") from None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                parent = Path(database).expanduser().parent
                try:
                    parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the profile store folder {parent}: {exc}") from None
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 60})
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            options: dict[str, Any] = {"pool_pre_ping": True}
            if self.url.get_driver_name() == "psycopg2":
                # Upserts are executemany: batch them, or every forecast row is a round trip
                # (measured on 11.5k demand rows: 16 s row by row, 4.8 s batched).
                options["executemany_mode"] = "values_plus_batch"
            self.engine = sa.create_engine(self.url, **options)

    @property
    def display_url(self) -> str:
        """The URL with its password hidden: the only form that may reach a log or the UI."""
        return self.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction (SQLite: ``BEGIN IMMEDIATE``); an unreachable store is a StoreError."""
        try:
            with self.engine.connect().execution_options(predictive_write=True) as conn, conn.begin():
                yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(
                f"profile store {self.display_url} is unreachable or locked: {exc.orig}"
            ) from exc

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(f"profile store {self.display_url} is unreachable: {exc.orig}") from exc

    # ----------------------------------------------------------------- writing

    def upsert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        update: bool = True,
    ) -> int:
        """Insert rows; on a key clash update them (``update``) or keep the stored row."""
        if not rows:
            return 0
        keys = [c.name for c in table.primary_key.columns]
        columns = list(rows[0].keys())
        dialect = conn.dialect.name
        for start in range(0, len(rows), _CHUNK):
            chunk = list(rows[start : start + _CHUNK])
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert
                else:
                    from sqlalchemy.dialects.postgresql import insert
                stmt = insert(table)
                changing = [c for c in columns if c not in keys]
                if update and changing:
                    stmt = stmt.on_conflict_do_update(
                        index_elements=keys, set_={c: stmt.excluded[c] for c in changing}
                    )
                else:
                    stmt = stmt.on_conflict_do_nothing(index_elements=keys)
                conn.execute(stmt, chunk)
            else:  # portable fallback: delete-then-insert inside the caller's transaction
                for row in chunk:
                    where = sa.and_(*(table.c[k] == row[k] for k in keys))
                    exists = conn.execute(sa.select(sa.literal(1)).select_from(table).where(where)).first()
                    if exists and not update:
                        continue
                    if exists:
                        conn.execute(table.delete().where(where))
                    conn.execute(table.insert(), [row])
        return len(rows)

    def upsert_frame(self, table: sa.Table, frame: pd.DataFrame, conn: sa.Connection | None = None) -> int:
        """Upsert a frame of plain columns (numbers, strings, timestamps, bytes); the later of two equal
        keys wins. In ``conn``'s transaction when given, else in a new one.

        On PostgreSQL with psycopg2 the rows are COPYed into a temporary table and merged with one
        ``INSERT ... SELECT ... ON CONFLICT``: batched executemany upserts were most of a forecast
        chunk's time (``bench scaleout``). Elsewhere: row upserts.
        """
        if frame.empty:
            return 0
        if not (self.engine.dialect.name == "postgresql" and self.engine.driver == "psycopg2"):
            rows = self.rows(table, frame.to_dict("records"))
            with self._writing(conn) as writer:
                return self.upsert(writer, table, rows)
        unknown = set(frame.columns) - set(table.c.keys())
        if unknown:
            raise ValueError(f"unknown field(s) for {table.name}: {', '.join(sorted(unknown))}")
        keys = [c.name for c in table.primary_key.columns]
        absent = [
            k
            for k in keys
            if k not in frame.columns
            or frame[k].isna().any()
            or (pd.api.types.is_string_dtype(frame[k]) and (frame[k] == "").any())
        ]
        if absent:
            raise ValueError(f"{table.name} rows lack their key field(s) {', '.join(absent)}")
        frame = frame.drop_duplicates(keys, keep="last").copy()
        for column in frame.columns:
            if isinstance(table.c[column].type, sa.DateTime):
                frame[column] = pd.to_datetime(frame[column], utc=True)  # naive means UTC, as in to_utc
            elif isinstance(table.c[column].type, sa.LargeBinary):
                # bytea's hex input form; backslashes are plain characters in CSV COPY.
                frame[column] = [None if v is None else "\\x" + bytes(v).hex() for v in frame[column]]
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, header=False, na_rep=r"\N", date_format="%Y-%m-%d %H:%M:%S.%f%z")
        buffer.seek(0)
        quote = self.engine.dialect.identifier_preparer.quote
        columns = ", ".join(quote(c) for c in frame.columns)
        changing = [c for c in frame.columns if c not in keys]
        on_conflict = (
            f"DO UPDATE SET {', '.join(f'{quote(c)} = EXCLUDED.{quote(c)}' for c in changing)}"
            if changing
            else "DO NOTHING"
        )
        with self._writing(conn) as writer:
            cursor = writer.connection.dbapi_connection.cursor()
            try:
                # The temporary table lives until this transaction ends; a failure rolls back both.
                cursor.execute(
                    f"CREATE TEMPORARY TABLE _predictive_load ON COMMIT DROP AS "
                    f"SELECT {columns} FROM {quote(table.name)} WITH NO DATA"
                )
                cursor.copy_expert(
                    f"COPY _predictive_load ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer
                )
                cursor.execute(
                    f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} FROM _predictive_load "
                    f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) {on_conflict}"
                )
                cursor.execute("DROP TABLE _predictive_load")  # the transaction may load another table
            finally:
                cursor.close()
        return len(frame)

    @contextmanager
    def _writing(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        """``conn`` when the caller holds a write transaction, else a new one."""
        if conn is not None:
            yield conn
        else:
            with self.write() as writer:
                yield writer

    def rows(self, table: sa.Table, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validate records against ``table`` and convert them to rows (UTC times, JSON text, NULLs)."""
        rows = []
        names = set(table.c.keys())
        keys = [c.name for c in table.primary_key.columns if not c.default]
        for number, record in enumerate(records, start=1):
            unknown = set(record) - names
            if unknown:
                raise ValueError(f"unknown field(s) for {table.name}: {', '.join(sorted(unknown))}")
            missing = [k for k in keys if is_blank(record.get(k))]
            if missing:
                raise ValueError(f"{table.name} record {number} lacks its key field(s) {', '.join(missing)}")
            row = {}
            for name, value in record.items():
                column_type = table.c[name].type
                if isinstance(column_type, sa.DateTime):
                    value = to_utc(value)
                elif isinstance(value, dict | list):
                    value = json.dumps(value, sort_keys=True, default=str)
                elif value is not None and not isinstance(value, str) and pd.isna(value):
                    value = None
                row[name] = value
            rows.append(row)
        # executemany needs one shape; fill absent columns with None (keys are always present)
        all_columns = sorted({k for row in rows for k in row})
        return [{c: row.get(c) for c in all_columns} for row in rows]

    # ----------------------------------------------------------------- reading

    def frame(self, query: sa.Select, table: sa.Table) -> pd.DataFrame:
        """The rows of ``query`` as a DataFrame, ``table``'s timestamp columns as UTC ``datetime64``."""
        if self._copies() and all(isinstance(c.type, _COPIED_TYPES) for c in query.selected_columns):
            return self._copy_frame(query)
        with self.read() as conn:
            result = conn.execute(query)
            columns = list(result.keys())
            rows = result.fetchall()
        # Column-wise: building from Row objects makes pandas probe every row (1 s per 60k rows).
        frame = pd.DataFrame(
            {c: list(values) for c, values in zip(columns, zip(*rows, strict=True), strict=True)}
            if rows
            else {c: [] for c in columns},
            columns=columns,
        )
        datetime_columns = [c.name for c in table.c if isinstance(c.type, sa.DateTime)]
        return utc_columns(frame, datetime_columns)

    def _copies(self) -> bool:
        return self.engine.dialect.name == "postgresql" and self.engine.driver == "psycopg2"

    def _copy_frame(self, query: sa.Select) -> pd.DataFrame:
        """``frame`` on PostgreSQL for plain text, time and number columns: ``COPY ... TO STDOUT`` parsed by
        pandas. Reading a planner's or evaluator's week of demand (hundreds of thousands of rows) row by
        row was most of an allocate or evaluate chunk's time (``bench scaleout``)."""
        columns = list(query.selected_columns)
        buffer = io.StringIO()
        with self.read() as conn:
            compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                sql = cursor.mogrify(str(compiled), compiled.params).decode()
                cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, NULL '\\N')", buffer)
            finally:
                cursor.close()
        buffer.seek(0)
        names = [c.name for c in columns]
        texts = [c.name for c in columns if isinstance(c.type, sa.String)]
        frame = pd.read_csv(
            buffer,
            header=None,
            names=names,
            # the dtype the row reader infers for text (NULL: missing), whatever the pandas version
            dtype={name: pd.Series(["", None]).dtype for name in texts},
            keep_default_na=False,
            na_values={c.name: ["\\N", "NaN"] for c in columns},
        )
        for column in columns:
            if isinstance(column.type, sa.DateTime):
                frame[column.name] = pd.to_datetime(frame[column.name], utc=True, format="ISO8601")
            elif isinstance(column.type, sa.Float):
                frame[column.name] = frame[column.name].astype(float)
        return frame


# Column types the PostgreSQL COPY reader parses exactly (anything else goes row by row).
_COPIED_TYPES = (sa.String, sa.DateTime, sa.Float)


class Part:
    """One concern of the profile store: its SQL over the shared :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own BEGIN would be DEFERRED).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # Writers take the write lock up front (IMMEDIATE): two deferred transactions that both try to
    # upgrade a read lock deadlock, and SQLite then fails one with "database is locked" at once.
    if conn.get_execution_options().get("predictive_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")

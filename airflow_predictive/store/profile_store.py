"""ProfileStore: the provider's own database (SQLAlchemy Core).

A SQLite file under ``AIRFLOW_HOME`` by default, in WAL mode so a scheduler, a triggerer and several
task processes can write at once; any SQLAlchemy URL from an Airflow connection in production
(PostgreSQL is the target). Every write is one transaction and an upsert on the table's natural key,
so re-ingesting the same task run, sample or forecast stores it once. Bulk reads return pandas
DataFrames in the long format of the architecture doc, with timestamps as UTC-aware ``datetime64``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import schema

log = logging.getLogger(__name__)

_CHUNK = 5000


class StoreError(RuntimeError):
    """The store is missing, unreachable, misconfigured or at an unknown schema version."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _within(
    query: sa.Select, column: sa.ColumnElement, start: datetime | None, end: datetime | None
) -> sa.Select:
    """``query`` restricted to ``start <= column < end``; a missing bound leaves that side open."""
    if start is not None:
        query = query.where(column >= _to_utc(start))
    if end is not None:
        query = query.where(column < _to_utc(end))
    return query


def _is_blank(value: Any) -> bool:
    """A key value that is absent: None, NaN/NaT (pandas' missing string is NaN), or an empty string."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    return not isinstance(value, str | datetime) and bool(pd.isna(value))


def _to_utc(value: Any) -> datetime | None:
    """Normalise any timestamp to an aware UTC ``datetime`` (``None``/NaT stay ``None``)."""
    if value is None or (not isinstance(value, datetime) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _utc_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for column in columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    return frame


class ProfileStore:
    """Read and write profiles, demand series, forecasts, model state, the action ledger and evaluations.

    :param url: a SQLAlchemy URL, e.g. ``sqlite:////path/profile.db`` or
        ``postgresql+psycopg2://user@127.0.0.1/predictive``.
    :param upgrade: create the schema or upgrade it in place to :data:`schema.SCHEMA_VERSION`.
    """

    def __init__(self, url: str | sa.URL, *, upgrade: bool = True) -> None:
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
        if upgrade:
            self.upgrade()

    # ----------------------------------------------------------------- construction and schema

    @classmethod
    def sqlite(cls, path: str | Path, **kwargs: Any) -> ProfileStore:
        return cls(f"sqlite:///{Path(path).expanduser().absolute()}", **kwargs)

    @property
    def display_url(self) -> str:
        """The URL with its password hidden: the only form that may reach a log or the UI."""
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"ProfileStore({self.display_url})"

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect().execution_options(predictive_write=True) as conn, conn.begin():
                yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(
                f"profile store {self.display_url} is unreachable or locked: {exc.orig}"
            ) from exc

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(f"profile store {self.display_url} is unreachable: {exc.orig}") from exc

    def schema_version(self) -> int:
        with self._read() as conn:
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
                f"profile store {self.display_url} has schema version {current}, newer than this "
                f"airflow-predictive understands ({schema.SCHEMA_VERSION}): upgrade the package"
            )
        while current < target:
            with self._write() as conn:
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
                self._upsert(conn, schema.meta, [{"key": "schema_version", "value": str(current)}])
                log.info("profile store %s upgraded to schema version %d", self.display_url, current)
        return current

    # ----------------------------------------------------------------- generic upsert

    def _upsert(
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

    def _upsert_frame(self, table: sa.Table, frame: pd.DataFrame) -> int:
        """Upsert a frame of plain columns (numbers, strings, timestamps); the later of two equal keys wins.

        On PostgreSQL with psycopg2 the rows are COPYed into a temporary table and merged with one
        ``INSERT ... SELECT ... ON CONFLICT``: a 200-series forecast chunk is ~60k rows, and batched
        executemany upserts were most of a chunk's time (``bench scaleout``). Elsewhere: row upserts.
        """
        if frame.empty:
            return 0
        if not (self.engine.dialect.name == "postgresql" and self.engine.driver == "psycopg2"):
            rows = self._rows(table, frame.to_dict("records"))
            with self._write() as conn:
                return self._upsert(conn, table, rows)
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
                frame[column] = pd.to_datetime(frame[column], utc=True)  # naive means UTC, as in _to_utc
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
        with self._write() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
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
            finally:
                cursor.close()
        return len(frame)

    def _rows(self, table: sa.Table, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        names = set(table.c.keys())
        keys = [c.name for c in table.primary_key.columns if not c.default]
        for number, record in enumerate(records, start=1):
            unknown = set(record) - names
            if unknown:
                raise ValueError(f"unknown field(s) for {table.name}: {', '.join(sorted(unknown))}")
            missing = [k for k in keys if _is_blank(record.get(k))]
            if missing:
                raise ValueError(f"{table.name} record {number} lacks its key field(s) {', '.join(missing)}")
            row = {}
            for name, value in record.items():
                column_type = table.c[name].type
                if isinstance(column_type, sa.DateTime):
                    value = _to_utc(value)
                elif isinstance(value, dict | list):
                    value = json.dumps(value, sort_keys=True, default=str)
                elif value is not None and not isinstance(value, str) and pd.isna(value):
                    value = None
                row[name] = value
            rows.append(row)
        # executemany needs one shape; fill absent columns with None (keys are always present)
        all_columns = sorted({k for row in rows for k in row})
        return [{c: row.get(c) for c in all_columns} for row in rows]

    # ----------------------------------------------------------------- profiling

    def upsert_task_runs(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store task tries keyed by (dag_id, run_id, task_id, map_index, try_number); re-ingest updates."""
        rows = self._rows(schema.task_runs, records)
        now = utcnow()
        for row in rows:
            row.setdefault("map_index", -1)
            row.setdefault("try_number", 1)
            row["map_index"] = -1 if row["map_index"] is None else row["map_index"]
            row["try_number"] = 1 if row["try_number"] is None else row["try_number"]
            row["updated_at"] = now
        with self._write() as conn:
            return self._upsert(conn, schema.task_runs, rows)

    def upsert_dag_runs(self, records: Iterable[Mapping[str, Any]]) -> int:
        rows = self._rows(schema.dag_runs, records)
        now = utcnow()
        for row in rows:
            row["updated_at"] = now
        with self._write() as conn:
            return self._upsert(conn, schema.dag_runs, rows)

    def add_usage_samples(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store usage samples; a sample already stored (same task try and ts) is kept as it was."""
        rows = self._rows(schema.usage_samples, records)
        with self._write() as conn:
            return self._upsert(conn, schema.usage_samples, rows, update=False)

    def task_runs(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        dag_ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Task tries whose start_date is in [start, end) (or still unstarted when no start is given)."""
        t = schema.task_runs
        query = sa.select(t)
        if start is not None:
            query = query.where(sa.or_(t.c.start_date >= _to_utc(start), t.c.end_date >= _to_utc(start)))
        query = _within(query, t.c.start_date, None, end)
        if dag_ids:
            query = query.where(t.c.dag_id.in_(list(dag_ids)))
        return self._frame(query.order_by(t.c.start_date), t)

    def dag_runs(self, *, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        t = schema.dag_runs
        query = sa.select(t)
        query = _within(query, t.c.start_date, start, end)
        return self._frame(query.order_by(t.c.start_date), t)

    def usage_samples(self, *, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        t = schema.usage_samples
        query = sa.select(t)
        query = _within(query, t.c.ts, start, end)
        return self._frame(query.order_by(t.c.ts), t)

    # ----------------------------------------------------------------- demand series

    def write_demand(self, frame: pd.DataFrame) -> int:
        """Upsert demand rows ``series_id, ts, value`` (NaN value = gap, stored as NULL)."""
        missing = {"series_id", "ts", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"demand frame lacks column(s): {', '.join(sorted(missing))}")
        return self._upsert_frame(schema.demand, frame[["series_id", "ts", "value"]])

    def demand(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Demand rows in long format, ordered by series and time; ``ts`` in ``[start, end)``."""
        t = schema.demand
        query = sa.select(t.c.series_id, t.c.ts, t.c.value)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        query = _within(query, t.c.ts, start, end)
        frame = self._frame(query.order_by(t.c.series_id, t.c.ts), t)
        frame["value"] = frame["value"].astype(float)
        return frame

    def series_ids(self, pools: Sequence[str] | None = None) -> list[str]:
        t = schema.demand
        with self._read() as conn:
            ids = [
                row[0] for row in conn.execute(sa.select(t.c.series_id).distinct().order_by(t.c.series_id))
            ]
        if pools:
            prefixes = tuple(f"pool={p}/" for p in pools)
            ids = [i for i in ids if i.startswith(prefixes)]
        return ids

    # ----------------------------------------------------------------- forecasts and model state

    def write_forecasts(self, frame: pd.DataFrame) -> int:
        """Store a forecast frame (``series_id, ts, mean, q<level>..., model, fallback, issued_at``)."""
        missing = {"series_id", "ts", "mean", "model", "issued_at"} - set(frame.columns)
        if missing:
            raise ValueError(f"forecast frame lacks column(s): {', '.join(sorted(missing))}")
        qcols = [c for c in frame.columns if c.startswith("q") and c[1:].replace(".", "", 1).isdigit()]
        quantiles = [
            json.dumps({c[1:]: float(v) for c, v in zip(qcols, values, strict=True)})
            for values in frame[qcols].itertuples(index=False, name=None)
        ]
        records = pd.DataFrame(
            {
                "series_id": frame["series_id"],
                "issued_at": frame["issued_at"],
                "ts": frame["ts"],
                "mean": frame["mean"].astype(float),
                "quantiles": quantiles,
                "model": frame["model"],
                "fallback": frame["fallback"].fillna("") if "fallback" in frame else "",
            }
        )
        return self._upsert_frame(schema.forecasts, records)

    def _forecast_frame(self, query: sa.Select) -> pd.DataFrame:
        frame = self._frame(query, schema.forecasts)
        if frame.empty:
            return frame.drop(columns=["quantiles"])
        # One parse of one JSON array: per-row json.loads was most of a large read (4.5 s per 830k rows).
        parsed = json.loads("[" + ",".join(frame.pop("quantiles")) + "]")
        quantiles = pd.DataFrame(parsed, index=frame.index)
        quantiles.columns = [f"q{c}" for c in quantiles.columns]
        ordered = sorted(quantiles.columns, key=lambda c: float(c[1:]))
        return pd.concat([frame, quantiles[ordered]], axis=1)

    def latest_forecasts(
        self, series_ids: Sequence[str] | None = None, *, pools: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The newest forecast of each series (all its future buckets)."""
        t = schema.forecasts
        newest = sa.select(t.c.series_id, sa.func.max(t.c.issued_at).label("issued_at")).group_by(
            t.c.series_id
        )
        if series_ids is not None:
            newest = newest.where(t.c.series_id.in_(list(series_ids)))
        if pools:
            newest = newest.where(sa.or_(*(t.c.series_id.like(f"pool={p}/%") for p in pools)))
        newest = newest.subquery()
        query = (
            sa.select(t)
            .join(newest, sa.and_(t.c.series_id == newest.c.series_id, t.c.issued_at == newest.c.issued_at))
            .order_by(t.c.series_id, t.c.ts)
        )
        return self._forecast_frame(query)

    def forecasts(
        self,
        series_ids: Sequence[str] | None = None,
        *,
        issued_from: datetime | None = None,
        issued_to: datetime | None = None,
        ts_from: datetime | None = None,
        ts_to: datetime | None = None,
        ts_in: Sequence[datetime] | None = None,
    ) -> pd.DataFrame:
        """Every stored forecast row matching the filters (for evaluation and the UI).

        ``ts_in`` keeps only these target buckets (an empty list matches nothing).
        """
        t = schema.forecasts
        query = sa.select(t)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        if ts_in is not None:
            query = query.where(t.c.ts.in_([_to_utc(v) for v in ts_in]))
        query = _within(query, t.c.issued_at, issued_from, issued_to)
        query = _within(query, t.c.ts, ts_from, ts_to)
        return self._forecast_frame(query.order_by(t.c.series_id, t.c.issued_at, t.c.ts))

    def prune_forecasts(self, before: datetime) -> int:
        """Delete forecasts issued before ``before``; return how many rows went."""
        t = schema.forecasts
        with self._write() as conn:
            return conn.execute(t.delete().where(t.c.issued_at < _to_utc(before))).rowcount

    def save_model_states(self, states: Iterable[Mapping[str, Any]]) -> int:
        """Upsert model states: dicts with series_id, model, state (a JSON-able dict), fitted_at."""
        now = utcnow()
        records = []
        for item in states:
            state = item["state"]
            records.append(
                {
                    "series_id": item["series_id"],
                    "model": item["model"],
                    "state": state if isinstance(state, str) else json.dumps(state, sort_keys=True),
                    "fitted_at": item.get("fitted_at", now),
                    "needs_reselect": bool(item.get("needs_reselect", False)),
                    "updated_at": now,
                }
            )
        rows = self._rows(schema.model_states, records)
        with self._write() as conn:
            return self._upsert(conn, schema.model_states, rows)

    def model_states(self, series_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """``{series_id: {"model", "state" (dict), "fitted_at", "needs_reselect"}}``."""
        t = schema.model_states
        query = sa.select(t)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return {
            row["series_id"]: {
                "model": row["model"],
                "state": json.loads(row["state"]),
                "fitted_at": _to_utc(row["fitted_at"]),
                "needs_reselect": bool(row["needs_reselect"]),
            }
            for row in rows
        }

    def mark_reselect(self, series_ids: Sequence[str], flag: bool = True) -> int:
        """Flag series for model re-selection in the next cycle (the feedback loop's lever)."""
        t = schema.model_states
        if not series_ids:
            return 0
        with self._write() as conn:
            return conn.execute(
                t.update()
                .where(t.c.series_id.in_(list(series_ids)))
                .values(needs_reselect=flag, updated_at=utcnow())
            ).rowcount

    # ----------------------------------------------------------------- plans and the action ledger

    def record_plan(self, plan: Any) -> None:
        """Record a Plan and all its actions (status as they are, normally ``planned``) in one transaction.

        An action whose request id is already in the ledger keeps its stored status: re-recording a
        re-run plan never turns an applied action back into a planned one.
        """
        now = utcnow()
        plan_row = self._rows(
            schema.plans,
            [
                {
                    "plan_id": plan.plan_id,
                    "pool": plan.pool,
                    "created_at": plan.created_at,
                    "mode": str(plan.mode),
                    "capped": list(plan.capped),
                    "summary": dict(plan.summary),
                }
            ],
        )
        action_rows = self._rows(
            schema.actions,
            [
                {
                    "request_id": a.request_id,
                    "plan_id": plan.plan_id,
                    "pool": a.pool,
                    "kind": str(a.kind),
                    "resource": a.resource,
                    "amount": float(a.amount),
                    "provisioning": str(a.provisioning),
                    "target": a.target,
                    "reason": a.reason,
                    "status": str(a.status),
                    "error": a.error,
                    "details": dict(a.details),
                    "created_at": now,
                    "updated_at": now,
                }
                for a in plan.actions
            ],
        )
        with self._write() as conn:
            self._upsert(conn, schema.plans, plan_row)
            self._upsert(conn, schema.actions, action_rows, update=False)

    def update_action(
        self, request_id: str, status: str, *, error: str = "", details: Mapping[str, Any] | None = None
    ) -> None:
        t = schema.actions
        values: dict[str, Any] = {"status": str(status), "error": error, "updated_at": utcnow()}
        if details is not None:
            values["details"] = json.dumps(dict(details), sort_keys=True, default=str)
        with self._write() as conn:
            if conn.execute(t.update().where(t.c.request_id == request_id).values(**values)).rowcount != 1:
                raise StoreError(f"no action with request id {request_id} in the ledger")

    def actions(
        self,
        *,
        pool: str | None = None,
        since: datetime | None = None,
        request_ids: Sequence[str] | None = None,
        plan_id: str | None = None,
    ) -> pd.DataFrame:
        t = schema.actions
        query = sa.select(t)
        if pool is not None:
            query = query.where(t.c.pool == pool)
        if since is not None:
            query = query.where(t.c.created_at >= _to_utc(since))
        if request_ids is not None:
            query = query.where(t.c.request_id.in_(list(request_ids)))
        if plan_id is not None:
            query = query.where(t.c.plan_id == plan_id)
        return self._frame(query.order_by(t.c.created_at, t.c.request_id), t)

    def plans(self, *, pool: str | None = None, since: datetime | None = None) -> pd.DataFrame:
        t = schema.plans
        query = sa.select(t)
        if pool is not None:
            query = query.where(t.c.pool == pool)
        if since is not None:
            query = query.where(t.c.created_at >= _to_utc(since))
        return self._frame(query.order_by(t.c.created_at), t)

    def record_capacity(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Upsert provisioned capacity points: dicts with pool, resource, ts, value."""
        rows = self._rows(schema.capacity, records)
        with self._write() as conn:
            return self._upsert(conn, schema.capacity, rows)

    def capacity(self, *, pool: str | None = None, since: datetime | None = None) -> pd.DataFrame:
        t = schema.capacity
        query = sa.select(t)
        if pool is not None:
            query = query.where(t.c.pool == pool)
        if since is not None:
            query = query.where(t.c.ts >= _to_utc(since))
        return self._frame(query.order_by(t.c.pool, t.c.resource, t.c.ts), t)

    # ----------------------------------------------------------------- evaluations, summaries, watermarks

    def write_evaluations(self, frame: pd.DataFrame) -> int:
        """Upsert scores: ``series_id, window_end, horizon_minutes, metric, value``."""
        rows = self._rows(
            schema.evaluations,
            frame[["series_id", "window_end", "horizon_minutes", "metric", "value"]].to_dict("records"),
        )
        with self._write() as conn:
            return self._upsert(conn, schema.evaluations, rows)

    def evaluations(
        self, series_ids: Sequence[str] | None = None, *, since: datetime | None = None
    ) -> pd.DataFrame:
        t = schema.evaluations
        query = sa.select(t)
        if series_ids is not None:
            query = query.where(t.c.series_id.in_(list(series_ids)))
        if since is not None:
            query = query.where(t.c.window_end >= _to_utc(since))
        return self._frame(query.order_by(t.c.series_id, t.c.window_end), t)

    def put_summaries(self, kind: str, payloads: Mapping[str, Any]) -> int:
        """Replace the behaviour summaries of one kind (``{key: JSON-able payload}``)."""
        now = utcnow()
        rows = [
            {
                "kind": kind,
                "key": key,
                "computed_at": now,
                "payload": json.dumps(payload, sort_keys=True, default=str),
            }
            for key, payload in payloads.items()
        ]
        t = schema.summaries
        with self._write() as conn:
            conn.execute(t.delete().where(t.c.kind == kind))
            return self._upsert(conn, t, self._rows(t, rows))

    def summaries(self, kind: str) -> dict[str, Any]:
        t = schema.summaries
        with self._read() as conn:
            rows = conn.execute(sa.select(t.c.key, t.c.payload).where(t.c.kind == kind)).all()
        return {key: json.loads(payload) for key, payload in rows}

    def set_watermark(self, name: str, value: str) -> None:
        with self._write() as conn:
            self._upsert(conn, schema.watermarks, [{"name": name, "value": value, "updated_at": utcnow()}])

    def get_watermark(self, name: str) -> str | None:
        t = schema.watermarks
        with self._read() as conn:
            return conn.execute(sa.select(t.c.value).where(t.c.name == name)).scalar()

    # ----------------------------------------------------------------- leases

    def try_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take the lease ``name`` for ``owner`` unless another owner holds an unexpired one.

        The lease is a watermark row ``<expiry ISO-8601 UTC>|<owner>``; ISO timestamps compare as
        strings, so taking an expired lease is one conditional UPDATE only one writer can win, and
        taking a new one is an INSERT the primary key lets only one writer make. A crashed holder
        blocks nobody past its expiry.
        """
        t = schema.watermarks
        now = utcnow()
        value = f"{(now + timedelta(seconds=ttl_seconds)).isoformat(timespec='seconds')}|{owner}"
        with self._write() as conn:
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

    def lease_holder(self, name: str) -> tuple[str, str] | None:
        """``(owner, expiry ISO)`` of the lease ``name``, or ``None`` when nobody holds it."""
        value = self.get_watermark(name)
        if not value:
            return None
        expiry, _, owner = value.partition("|")
        return owner, expiry

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease back (only ``owner``'s own lease: an expired one taken over stays with its taker)."""
        t = schema.watermarks
        with self._write() as conn:
            conn.execute(t.delete().where(sa.and_(t.c.name == name, t.c.value.like(f"%|{owner}"))))

    # ----------------------------------------------------------------- helpers

    def _frame(self, query: sa.Select, table: sa.Table) -> pd.DataFrame:
        with self._read() as conn:
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
        return _utc_columns(frame, datetime_columns)


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

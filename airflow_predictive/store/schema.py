"""ProfileStore schema (SQLAlchemy Core) and its in-place upgrade path.

``SCHEMA_VERSION`` counts migrations. Each entry of :data:`MIGRATIONS` upgrades a store from version
``n`` to ``n + 1`` inside one transaction, so a store is always at a whole version. A new table or
column is a new migration appended here; never edit an old one.
"""

from __future__ import annotations

import json

import pandas as pd
import sqlalchemy as sa

from airflow_predictive.store import forecast_arrays

metadata = sa.MetaData()

meta = sa.Table(
    "predictive_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# One row per task try. Retries are separate tries (try_number is part of the key).
task_runs = sa.Table(
    "task_runs",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("task_id", sa.String(250), primary_key=True),
    sa.Column("map_index", sa.Integer, primary_key=True, default=-1),
    sa.Column("try_number", sa.Integer, primary_key=True, default=1),
    sa.Column("state", sa.String(32)),
    sa.Column("queue", sa.String(256)),
    sa.Column("pool", sa.String(256)),
    sa.Column("pool_slots", sa.Integer),
    sa.Column("operator", sa.String(256)),
    sa.Column("hostname", sa.String(1000)),
    sa.Column("queued_at", sa.DateTime(timezone=True)),
    sa.Column("start_date", sa.DateTime(timezone=True)),
    sa.Column("end_date", sa.DateTime(timezone=True)),
    sa.Column("duration", sa.Float),
    # Resource hints and template binding (cpus, ram, template, stage) as JSON text.
    sa.Column("hints", sa.Text),
    # Aggregated usage written by the worker listener when the try ends.
    sa.Column("cpu_mean", sa.Float),
    sa.Column("cpu_peak", sa.Float),
    sa.Column("rss_peak_mb", sa.Float),
    sa.Column("read_bytes", sa.Float),
    sa.Column("write_bytes", sa.Float),
    sa.Column("net_bytes", sa.Float),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
sa.Index("ix_task_runs_start", task_runs.c.start_date)

dag_runs = sa.Table(
    "dag_runs",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("run_type", sa.String(50)),
    sa.Column("triggered_by", sa.String(250)),  # the triggering user, when a person triggered it
    sa.Column("state", sa.String(32)),
    sa.Column("logical_date", sa.DateTime(timezone=True)),
    sa.Column("data_interval_start", sa.DateTime(timezone=True)),
    sa.Column("data_interval_end", sa.DateTime(timezone=True)),
    sa.Column("start_date", sa.DateTime(timezone=True)),
    sa.Column("end_date", sa.DateTime(timezone=True)),
    sa.Column("assets", sa.Text),  # JSON: consumed/produced asset events where the API exposes them
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
sa.Index("ix_dag_runs_start", dag_runs.c.start_date)

usage_samples = sa.Table(
    "usage_samples",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("task_id", sa.String(250), primary_key=True),
    sa.Column("map_index", sa.Integer, primary_key=True),
    sa.Column("try_number", sa.Integer, primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("hostname", sa.String(1000)),
    sa.Column("cpu_cores", sa.Float),
    sa.Column("rss_mb", sa.Float),
    sa.Column("read_bytes", sa.Float),
    sa.Column("write_bytes", sa.Float),
    sa.Column("net_bytes", sa.Float),
)

demand = sa.Table(
    "demand",
    metadata,
    sa.Column("series_id", sa.String(300), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("value", sa.Float),  # NULL = gap (profiler down), which is not zero demand
)

# Until version 4 every forecast step was a row (``quantiles`` as JSON text): 288 rows a series and
# cycle. Kept apart from ``metadata`` so only version 1 creates it and version 4 converts and drops it.
_legacy = sa.MetaData()
forecast_rows_v1 = sa.Table(
    "forecasts",
    _legacy,
    sa.Column("series_id", sa.String(300), primary_key=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("mean", sa.Float, nullable=False),
    sa.Column("quantiles", sa.Text, nullable=False),  # JSON {"0.5": v, "0.95": v, ...}
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("fallback", sa.String(100), nullable=False, default=""),
)
sa.Index("ix_forecasts_issued", forecast_rows_v1.c.issued_at)

# One row per series and issue (version 4): its steps as packed arrays (forecast_arrays). The newest
# issue of a series holds its whole horizon; older ones only the lead times that scoring reads.
forecast_issues = sa.Table(
    "forecast_issues",
    metadata,
    sa.Column("series_id", sa.String(300), primary_key=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("fallback", sa.String(100), nullable=False, default=""),
    sa.Column("step_seconds", sa.Integer, nullable=False),
    sa.Column("first_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("levels", sa.String(200), nullable=False),  # quantile levels, e.g. "0.5,0.8,0.9,0.95,0.99"
    sa.Column("steps", sa.LargeBinary),  # uint16 offsets from first_ts; NULL: every step to last_ts
    sa.Column("values", sa.LargeBinary, nullable=False),  # float32 per step: mean, then each level
    sa.Column("trimmed", sa.Boolean, nullable=False, default=False),  # reduced to the scored leads
)
# Each write looks up its series' untrimmed issues (one or two each) among up to 72 hours of issues.
sa.Index(
    "ix_forecast_issues_untrimmed",
    forecast_issues.c.series_id,
    postgresql_where=~forecast_issues.c.trimmed,
    sqlite_where=~forecast_issues.c.trimmed,
)

model_states = sa.Table(
    "model_states",
    metadata,
    sa.Column("series_id", sa.String(300), primary_key=True),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # small JSON: orders, parameters, scaling, versions
    sa.Column("fitted_at", sa.DateTime(timezone=True)),
    sa.Column("needs_reselect", sa.Boolean, nullable=False, default=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("plan_id", sa.String(100), primary_key=True),
    sa.Column("pool", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("capped", sa.Text),  # JSON list of what a cap cut
    sa.Column("summary", sa.Text),  # JSON
)
sa.Index("ix_plans_pool_created", plans.c.pool, plans.c.created_at)

# The action ledger: written before (planned) and after (applied/failed) each call.
actions = sa.Table(
    "actions",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("plan_id", sa.String(100), nullable=False),
    sa.Column("pool", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("resource", sa.String(32), nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("provisioning", sa.String(16), nullable=False),
    sa.Column("target", sa.String(300)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("details", sa.Text),  # JSON
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Calls made to Compute Engine for this request id: 0 until the first, 1 for it, +1 per retry
    # (added in version 3).
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
)
sa.Index("ix_actions_pool_created", actions.c.pool, actions.c.created_at)

# Provisioned capacity per pool and resource over time (what the allocator saw after acting).
capacity = sa.Table(
    "capacity",
    metadata,
    sa.Column("pool", sa.String(256), primary_key=True),
    sa.Column("resource", sa.String(32), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
)

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("series_id", sa.String(300), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("horizon_minutes", sa.Integer, primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float),
)

# What the profiler learned (application usage, data access, timing, user behaviour), as JSON.
summaries = sa.Table(
    "summaries",
    metadata,
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)

watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _v1(conn: sa.Connection) -> None:
    """Version 1: profiling, demand, forecasts, model state, ledger, evaluations, watermarks."""
    later = _ADDED_IN_V2 | {forecast_issues.name}
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables if t.name not in later])
    _legacy.create_all(conn)


_ADDED_IN_V2 = {"capacity", "summaries"}


def _v2(conn: sa.Connection) -> None:
    """Version 2: provisioned-capacity history (for the UI and the feedback loop) and behaviour summaries."""
    metadata.create_all(conn, tables=[metadata.tables[name] for name in sorted(_ADDED_IN_V2)])


def _v3(conn: sa.Connection) -> None:
    """Version 3: ``actions.attempt``, the number of the call to Compute Engine an action's status is about.

    A store created by this package has the column already (version 1 creates today's tables), so it
    is added only where missing. Rows ``applied`` or ``failed`` before the column existed had one call.
    """
    t = actions
    if "attempt" not in {c["name"] for c in sa.inspect(conn).get_columns(t.name)}:
        conn.execute(sa.text(f"ALTER TABLE {t.name} ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0"))
    conn.execute(t.update().where(t.c.status.in_(["applied", "failed"]), t.c.attempt == 0).values(attempt=1))


def _v4(conn: sa.Connection) -> None:
    """Version 4: forecasts as one row per series and issue (``forecast_issues``) instead of one per step.

    Every stored issue is converted whole, series by series, and the per-step table is dropped; the next
    forecast of each series trims its older issues to the scored lead times.
    """
    forecast_issues.create(conn)
    old = forecast_rows_v1
    if not sa.inspect(conn).has_table(old.name):
        return
    for sid in conn.execute(sa.select(old.c.series_id).distinct()).scalars().all():
        rows = conn.execute(sa.select(old).where(old.c.series_id == sid)).mappings().all()
        conn.execute(forecast_issues.insert(), _issues_of_v1_rows(rows))
    old.drop(conn)


def _issues_of_v1_rows(rows: list) -> list[dict]:
    """Per-step rows of version 1 (quantiles as JSON text) as ``forecast_issues`` records."""
    frame = pd.DataFrame([dict(r) for r in rows])
    parsed = [json.loads(q) for q in frame.pop("quantiles")]
    frame["levels"] = [",".join(sorted(q, key=float)) for q in parsed]
    frame = pd.concat([frame, pd.DataFrame(parsed, index=frame.index).add_prefix("q")], axis=1)
    records = []
    for levels, part in frame.groupby("levels", sort=False):
        columns = [f"q{level}" for level in levels.split(",")] if levels else []
        records += forecast_arrays.pack(
            part[["series_id", "issued_at", "ts", "mean", "model", "fallback", *columns]]
        )
    return records


# MIGRATIONS[n] upgrades from version n to n + 1.
MIGRATIONS = [_v1, _v2, _v3, _v4]
SCHEMA_VERSION = len(MIGRATIONS)

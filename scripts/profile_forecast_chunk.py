"""Profile one 200-series forecast chunk on PostgreSQL, on an empty forecasts table and on one that holds
what 5,000 more series leave in it (docs/benchmarks.md, "Why a slot forecast fewer series a second").

    PYTHONPATH=.:tools python scripts/profile_forecast_chunk.py [FILLER_SERIES]

Run from a checkout of the code to profile: before schema version 4 (e.g. commit f5c804a) it fills the
per-step ``forecasts`` table with five cycles' issues, from version 4 on ``forecast_issues`` with a day
of issues. Needs PostgreSQL on 127.0.0.1:5432 (tests/services.py starts one).
"""

import cProfile
import pstats
import sys
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from airflow_predictive_tools.bench.scaleout import throwaway_database
from airflow_predictive_tools.bench.scaleout_seed import seed_steady_state

from airflow_predictive.forecasting.engine import Forecaster, forecast_cycle
from airflow_predictive.store import ProfileStore, schema

FILLER_SERIES = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def profiled(store, ids, label):
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    forecast_cycle(store, ids, now=END, forecaster=Forecaster(select_workers=0), max_selections=0)
    profile.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profile)
    write = next((v[3] for k, v in stats.stats.items() if k[2] == "write_forecasts" and "store" in k[0]), 0.0)
    print(f"{label}: chunk {total:.2f} s, write_forecasts {write:.2f} s ({write / total:.0%})", flush=True)


with throwaway_database("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", "store_profile") as url:
    store = ProfileStore(url)
    ids = seed_steady_state(store, 200, end=END, days=3, prefix="chunk")
    forecast_cycle(
        store, ids, now=END - timedelta(minutes=5), forecaster=Forecaster(select_workers=0), max_selections=0
    )
    profiled(store, ids, "small table")
    # FILLER_SERIES more series: five issues of 288 rows each (what the old benchmark's 5,000-series
    # point left in the per-step table), or a day of issues (version 4).
    old = schema.SCHEMA_VERSION < 4
    with store.engine.begin() as conn:
        if old:
            conn.exec_driver_sql(
                "INSERT INTO forecasts SELECT 'pool=filler-' || lpad((s / 4)::text, 4, '0') || '/resource=' || mod(s, 4), "
                f"timestamp with time zone '{END.isoformat()}' - i * interval '5 minutes', "
                f"timestamp with time zone '{END.isoformat()}' + (k - i) * interval '5 minutes', 5.0, "
                '\'{"0.5": 5.0, "0.8": 5.8, "0.9": 6.3, "0.95": 6.6, "0.99": 7.3}\', \'auto_arima\', \'\' '
                f"FROM generate_series(0, {FILLER_SERIES - 1}) s, generate_series(0, 4) i, generate_series(1, 288) k"
            )
        else:
            conn.exec_driver_sql(
                "INSERT INTO forecast_issues SELECT 'pool=filler-' || lpad((s / 4)::text, 4, '0') || '/resource=' || mod(s, 4), "
                f"timestamp with time zone '{END.isoformat()}' - i * interval '5 minutes', 'auto_arima', '', 300, "
                f"timestamp with time zone '{END.isoformat()}', timestamp with time zone '{END.isoformat()}', "
                "'0.5,0.8,0.9,0.95,0.99', NULL, decode(repeat('00', 408), 'hex'), true "
                f"FROM generate_series(0, {FILLER_SERIES - 1}) s, generate_series(0, 288) i"
            )
        conn.exec_driver_sql("ANALYZE")
    table = "forecasts" if old else "forecast_issues"
    with store.engine.connect() as conn:
        size = conn.execute(sa.text(f"SELECT pg_size_pretty(pg_total_relation_size('{table}'))")).scalar()
    print(f"filled {table} for {FILLER_SERIES} more series: {size}", flush=True)
    profiled(store, ids, "large table")
    store.dispose()

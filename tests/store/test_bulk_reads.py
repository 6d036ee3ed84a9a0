"""Reads that serve many pools or series at once give what the row-by-row reads give."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from airflow_predictive import accuracy
from airflow_predictive.store import schema

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _demand(sid: str, values: list[float | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {"series_id": sid, "ts": [T0 + timedelta(minutes=5 * i) for i in range(len(values))], "value": values}
    )


def test_first_observed_skips_gaps_and_keeps_to_the_window(any_store) -> None:
    any_store.write_demand(
        pd.concat(
            [
                _demand("pool=a/resource=cpu", [None, None, 2.0, 3.0]),
                _demand("pool=a/resource=memory", [1.0, 2.0, 3.0, 4.0]),
                _demand("pool=b/resource=cpu", [None, None, None, None]),
            ]
        )
    )
    ids = ["pool=a/resource=cpu", "pool=a/resource=memory", "pool=b/resource=cpu", "pool=c/resource=cpu"]

    first = any_store.first_observed(ids, start=T0 + timedelta(minutes=5), end=T0 + timedelta(minutes=20))

    assert first == {
        "pool=a/resource=cpu": T0 + timedelta(minutes=10),
        "pool=a/resource=memory": T0 + timedelta(minutes=5),
    }
    assert all(moment.tzinfo is not None for moment in first.values())


def test_a_frame_read_in_bulk_equals_the_row_by_row_read(any_store) -> None:
    """On PostgreSQL plain columns are read with COPY; text with commas, quotes and gaps survive it."""
    odd = 'pool=x,"y"/resource=cpu'
    any_store.write_demand(
        pd.concat([_demand(odd, [1.5, None, 2.25]), _demand("pool=a/resource=cpu", [7.0])])
    )
    t = schema.demand
    query = sa.select(t.c.series_id, t.c.ts, t.c.value).order_by(t.c.series_id, t.c.ts)
    db = any_store._db

    bulk = db.frame(query, t)
    db._copies = lambda: False  # the row-by-row reader every dialect has
    rows = db.frame(query, t)

    rows["value"] = rows["value"].astype(float)
    pd.testing.assert_frame_equal(bulk.assign(value=bulk["value"].astype(float)), rows)
    assert list(bulk["series_id"]) == ["pool=a/resource=cpu", odd, odd, odd]
    assert np.isnan(bulk["value"].iloc[2]) and bulk["ts"].dt.tz is not None


def test_naive_errors_give_the_mase_scale_of_the_history_they_reduce(any_store) -> None:
    """The store's reduction of a week (gaps dropped first, then lagged) is accuracy.mase_scale's."""
    rng = np.random.default_rng(7)
    seasonal = list(rng.normal(10, 2, 40))
    seasonal[5] = seasonal[17] = None  # gaps are dropped before lagging
    flat = [4.0] * 12  # seasonal and lag-1 errors zero: undefined
    short = [1.0, 2.0, 4.0]  # shorter than the season: lag 1
    any_store.write_demand(
        pd.concat(
            [
                _demand("pool=a/resource=cpu", seasonal),
                _demand("pool=a/resource=memory", flat),
                _demand("pool=a/resource=network", short),
            ]
        )
    )
    ids = ["pool=a/resource=cpu", "pool=a/resource=memory", "pool=a/resource=network"]
    season, end = 6, T0 + timedelta(hours=3)

    errors = any_store.naive_errors(ids, lags=[season, 1], start=T0, end=end)

    history = any_store.demand(ids, start=T0, end=end)
    for sid in ids:
        expected = accuracy.mase_scale(history.loc[history["series_id"] == sid, "value"], season)
        got = accuracy.mase_scale_of(errors[sid], season)
        assert got == pytest.approx(expected, rel=1e-12, nan_ok=True), sid
    assert errors["pool=a/resource=network"][season] == (pytest.approx(float("nan"), nan_ok=True), 0)
    assert math.isnan(accuracy.mase_scale_of(errors["pool=a/resource=memory"], season))

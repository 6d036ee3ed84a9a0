"""Forecasts stored as one row per series and issue: the newest whole, older ones at the scored leads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from airflow_predictive.store import ProfileStore, schema
from airflow_predictive.store.forecast_arrays import lead_steps_kept
from tests.services import postgres_database

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CPU, MEM = "pool=etl/resource=cpu", "pool=etl/resource=memory"
STEP = timedelta(minutes=5)


def _issue(sid: str, issued: datetime, steps: int = 288, *, level: float = 10.0) -> pd.DataFrame:
    rng = np.random.default_rng(int(issued.timestamp()) % 1000)
    mean = level + rng.random(steps)
    return pd.DataFrame(
        {
            "series_id": sid,
            "ts": pd.date_range(issued + STEP, periods=steps, freq=STEP),
            "mean": mean,
            "q0.5": mean,
            "q0.95": mean + 2.0,
            "model": "arima(1,0,1)",
            "fallback": "",
            "issued_at": issued,
        }
    )


def test_scored_lead_times_cover_every_lead_time_bucket_of_a_day() -> None:
    assert lead_steps_kept(288) == [1, 2, 3, 4, 5, 6, 9, 12, 18, 24, 36, 48, 72, 96, 144, 192, 288]
    assert lead_steps_kept(4) == [1, 2, 3, 4]


def test_newest_issue_keeps_its_horizon_and_older_ones_only_the_scored_leads(any_store) -> None:
    issues = [_issue(CPU, T0 + k * STEP) for k in range(3)]
    for frame in issues:
        any_store.write_forecasts(frame)

    latest = any_store.latest_forecasts([CPU])
    assert len(latest) == 288 and (latest["issued_at"] == pd.Timestamp(T0 + 2 * STEP)).all()
    np.testing.assert_allclose(latest["q0.95"], issues[-1]["q0.95"], rtol=1e-6)

    stored = any_store.forecasts([CPU])
    older = stored[stored["issued_at"] == pd.Timestamp(T0)]
    leads = ((older["ts"] - pd.Timestamp(T0)) / STEP).astype(int).tolist()
    assert leads == lead_steps_kept(288)
    expected = issues[0].set_index("ts").loc[older["ts"], "mean"].to_numpy()
    np.testing.assert_allclose(older["mean"], expected, rtol=1e-6)
    assert list(stored.columns) == [
        "series_id",
        "issued_at",
        "ts",
        "mean",
        "model",
        "fallback",
        "q0.5",
        "q0.95",
    ]


def test_readers_filter_by_target_bucket_issue_time_and_series(any_store) -> None:
    any_store.write_forecasts(pd.concat([_issue(CPU, T0, 12), _issue(MEM, T0, 12, level=50.0)]))
    any_store.write_forecasts(_issue(CPU, T0 + STEP, 12))
    target = T0 + 6 * STEP
    at_target = any_store.forecasts([CPU], ts_in=[target])
    assert at_target["issued_at"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + STEP)]
    assert (at_target["ts"] == pd.Timestamp(target)).all()
    window = any_store.forecasts(ts_from=T0 + 2 * STEP, ts_to=T0 + 4 * STEP, issued_to=T0 + STEP)
    assert sorted(set(window["series_id"])) == [CPU, MEM] and len(window) == 4
    assert any_store.forecasts([CPU], ts_in=[]).empty
    assert set(any_store.latest_forecasts(pools=["etl"])["series_id"]) == {CPU, MEM}


def test_a_superseded_day_ahead_forecast_costs_a_seventeenth_of_its_steps(any_store) -> None:
    for k in range(2):
        any_store.write_forecasts(_issue(CPU, T0 + k * STEP))
    with any_store.engine.connect() as conn:
        t = schema.forecast_issues
        sizes = dict(
            conn.execute(sa.select(t.c.trimmed, sa.func.length(t.c["values"])).order_by(t.c.issued_at)).all()
        )
    # mean and two quantiles as float32: 12 bytes a step; 288 steps whole, 17 once superseded.
    assert sizes == {True: 17 * 12, False: 288 * 12}


def test_target_buckets_that_are_not_whole_seconds_apart_are_refused(store) -> None:
    frame = _issue(CPU, T0, 3)
    frame.loc[1, "ts"] += pd.Timedelta(milliseconds=500)
    with pytest.raises(ValueError, match="not whole seconds apart"):
        store.write_forecasts(frame)
    assert store.forecasts().empty


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_3_store_keeps_every_stored_forecast_step_when_upgraded(backend, tmp_path) -> None:
    old_rows = pd.concat(
        [_issue(CPU, T0, 24), _issue(CPU, T0 + STEP, 24), _issue(MEM, T0, 6).drop(columns=["q0.5"])]
    )

    def check(url: str) -> None:
        old = ProfileStore(url, upgrade=False)
        old.upgrade(target=3)
        with old.engine.begin() as conn:
            conn.execute(schema.forecast_rows_v1.insert(), [_v1_row(r) for r in old_rows.to_dict("records")])
        old.dispose()

        upgraded = ProfileStore(url)
        assert upgraded.schema_version() == schema.SCHEMA_VERSION
        assert not sa.inspect(upgraded.engine).has_table("forecasts")
        stored = upgraded.forecasts()
        assert len(stored) == len(old_rows)
        expected = old_rows.sort_values(["series_id", "issued_at", "ts"], ignore_index=True)
        for column in ("series_id", "issued_at", "ts", "model"):
            assert stored[column].tolist() == pd.Series(expected[column]).tolist()
        for column in ("mean", "q0.5", "q0.95"):
            np.testing.assert_allclose(stored[column], expected[column], rtol=1e-6)
        assert len(upgraded.latest_forecasts([CPU])) == 24
        # The next forecast of a series trims what the upgrade converted.
        upgraded.write_forecasts(_issue(CPU, T0 + 2 * STEP, 24))
        assert len(upgraded.forecasts([CPU], issued_to=T0 + 2 * STEP)) == 2 * len(lead_steps_kept(24))
        upgraded.dispose()

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'v3.db'}")
    else:
        with postgres_database() as url:
            check(url)


def _v1_row(record: dict) -> dict:
    """A forecast step as versions 1-3 stored it: quantiles as JSON text."""
    quantiles = {k[1:]: v for k, v in record.items() if k.startswith("q") and pd.notna(v)}
    return {
        "series_id": record["series_id"],
        "issued_at": record["issued_at"],
        "ts": record["ts"].to_pydatetime(),
        "mean": record["mean"],
        "quantiles": json.dumps(quantiles),
        "model": record["model"],
        "fallback": record["fallback"],
    }


def test_known_works_column_is_stored_with_its_forecast_and_absent_where_none_was_given(any_store) -> None:
    """The combined forecast's ``known`` column (known work's part) reaches the planner through the store."""
    combined = _issue(CPU, T0, steps=12).assign(known=[0.0] * 5 + [16.0] * 2 + [0.0] * 5)
    any_store.write_forecasts(combined)
    any_store.write_forecasts(_issue(MEM, T0, steps=12))
    latest = any_store.latest_forecasts([CPU, MEM])
    assert list(latest.columns)[-1] == "known"
    cpu = latest[latest["series_id"] == CPU]
    assert cpu["known"].tolist() == combined["known"].tolist()
    assert latest[latest["series_id"] == MEM]["known"].isna().all()  # a statistical forecast knows no work
    with pytest.raises(ValueError, match="known"):
        any_store.write_forecasts(_issue(CPU, T0 + STEP, steps=3).assign(known=[0.0, float("nan"), 1.0]))


def test_scoring_reads_only_the_issues_whose_kept_leads_reach_the_buckets(any_store, monkeypatch) -> None:
    from airflow_predictive.store import forecasts as forecasts_part

    # 90 five-minute issues with a 6-hour horizon, every seventh 40 s late (a slow cycle), and the
    # memory series at a 10-minute step: the rows read with each series' step must be exactly those
    # read without it.
    for k in range(90):
        late = timedelta(seconds=40) if k % 7 == 3 else timedelta(0)
        any_store.write_forecasts(_issue(CPU, T0 + k * STEP + late, 72))
    for k in range(0, 90, 2):
        any_store.write_forecasts(
            _issue(MEM, T0 + k * STEP, 36).assign(ts=lambda f: f["ts"] + (f["ts"] - f["ts"].iloc[0]))
        )
    end = T0 + 90 * STEP
    grid = [end - STEP - timedelta(minutes=30) * i for i in range(12)]  # buckets of both series
    unpacked: list[int] = []
    real_unpack = forecasts_part.forecast_arrays.unpack_columns

    def counting(columns):
        unpacked.append(len(columns["series_id"]))
        return real_unpack(columns)

    def issues_read(sid: str, **kwargs) -> tuple[pd.DataFrame, int]:
        unpacked.clear()
        frame = any_store.forecasts([sid], **kwargs)
        return frame, sum(unpacked)

    monkeypatch.setattr(forecasts_part.forecast_arrays, "unpack_columns", counting)
    for window in (
        {"ts_from": end - STEP, "ts_to": end},
        {"ts_from": end - 12 * STEP, "ts_to": end},
        {"ts_in": grid},
    ):
        for sid, step in ((CPU, STEP), (MEM, 2 * STEP)):
            every_issue, read_all = issues_read(sid, **window)
            reaching, read_reaching = issues_read(sid, step=step, **window)
            pd.testing.assert_frame_equal(reaching, every_issue)
            assert not every_issue.empty
            assert read_reaching < read_all
    # One bucket: the cpu issues at its kept leads (at most 2 each, as late issues shift a lead) and
    # the newest; of another width only the newest issue (its superseded ones target other buckets).
    assert issues_read(CPU, ts_from=end - STEP, ts_to=end)[1] == 72
    assert issues_read(CPU, ts_from=end - STEP, ts_to=end, step=STEP)[1] <= 2 * len(lead_steps_kept(72)) + 1
    other_width, read = issues_read(MEM, ts_from=end - 6 * STEP, ts_to=end, step=STEP)
    assert read == 1 and set(other_width["issued_at"]) == {pd.Timestamp(T0 + 88 * STEP)}

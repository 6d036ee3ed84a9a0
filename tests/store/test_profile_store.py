"""The ProfileStore on SQLite and PostgreSQL: schema upgrades, idempotent writes, concurrent writers."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from airflow_predictive.contracts.plan import Action, ActionKind, ActionStatus, Mode, Plan
from airflow_predictive.store import ProfileStore, StoreError, schema
from tests.services import postgres_database

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _task_run(**overrides):
    run = {
        "dag_id": "etl",
        "run_id": "scheduled__2026-11-02",
        "task_id": "extract",
        "map_index": -1,
        "try_number": 1,
        "state": "success",
        "queue": "etl",
        "start_date": T0,
        "end_date": T0 + timedelta(minutes=7),
        "duration": 420.0,
        "hints": {"cpus": 2, "ram_mb": 4096},
    }
    run.update(overrides)
    return run


def test_fresh_store_is_at_the_current_schema_version(any_store):
    assert any_store.schema_version() == schema.SCHEMA_VERSION
    tables = set(sa.inspect(any_store.engine).get_table_names())
    assert {"task_runs", "demand", "forecast_issues", "actions", "evaluations", "capacity"} <= tables
    assert "forecasts" not in tables  # the per-step table of versions 1-3


def test_old_store_is_upgraded_in_place_without_losing_rows(tmp_path):
    path = tmp_path / "old.db"
    old = ProfileStore.sqlite(path, upgrade=False)
    old.upgrade(target=1)
    assert old.schema_version() == 1
    assert not sa.inspect(old.engine).has_table("capacity")
    old.write_demand(pd.DataFrame({"series_id": ["pool=etl/resource=cpu"], "ts": [T0], "value": [3.5]}))
    old.dispose()

    upgraded = ProfileStore.sqlite(path)
    assert upgraded.schema_version() == schema.SCHEMA_VERSION
    assert upgraded.demand()["value"].tolist() == [3.5]
    upgraded.record_capacity([{"pool": "etl", "resource": "cpu", "ts": T0, "value": 8}])
    assert upgraded.capacity(pool="etl")["value"].tolist() == [8.0]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_2_ledger_gains_the_attempt_column_in_place_without_losing_rows(backend, tmp_path):
    def check(url: str) -> None:
        old = ProfileStore(url, upgrade=False)
        old.upgrade(target=2)
        # Version 1 creates today's tables; a store made by the release before version 3 had no column.
        with old.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE actions DROP COLUMN attempt"))
        actions = [
            Action(pool="etl", kind=ActionKind.RELEASE, amount=1, reason="idle", request_id=rid)
            for rid in ("done", "broke", "dry")
        ]
        for action, status in zip(actions, ("planned", "planned", "dry_run"), strict=True):
            action.status = ActionStatus(status)
        old.record_plan(
            Plan(plan_id="p", pool="etl", created_at=T0, mode=Mode.FORECAST_AND_SCALE, actions=actions)
        )
        old.update_action("done", ActionStatus.APPLIED)
        old.update_action("broke", ActionStatus.FAILED, error="quota")
        old.dispose()

        upgraded = ProfileStore(url)
        assert upgraded.schema_version() == schema.SCHEMA_VERSION
        ledger = upgraded.actions().set_index("request_id")
        assert ledger["status"].to_dict() == {"done": "applied", "broke": "failed", "dry": "dry_run"}
        # Applied and failed rows had their one call; a dry run none.
        assert ledger["attempt"].to_dict() == {"done": 1, "broke": 1, "dry": 0}
        upgraded.dispose()

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'v2.db'}")
    else:
        with postgres_database() as url:
            check(url)


def test_store_newer_than_the_package_is_refused(tmp_path):
    store = ProfileStore.sqlite(tmp_path / "p.db")
    with store.engine.begin() as conn:
        conn.execute(schema.meta.update().values(value=str(schema.SCHEMA_VERSION + 1)))
    store.dispose()
    with pytest.raises(StoreError, match="newer than this airflow-predictive"):
        ProfileStore.sqlite(tmp_path / "p.db")


def test_reingesting_a_task_run_stores_it_once_and_retries_are_separate_tries(any_store):
    any_store.upsert_task_runs([_task_run(), _task_run()])
    any_store.upsert_task_runs([_task_run(state="success", duration=421.0)])
    any_store.upsert_task_runs([_task_run(try_number=2, start_date=T0 + timedelta(minutes=10))])
    runs = any_store.task_runs()
    assert len(runs) == 2
    first = runs[runs.try_number == 1].iloc[0]
    assert first.duration == 421.0  # the re-ingest updated the row, it did not add one
    assert first.start_date == pd.Timestamp(T0)
    assert runs.start_date.dt.tz is not None


def test_task_runs_of_some_queues_a_try_without_a_queue_on_default(any_store):
    any_store.upsert_task_runs(
        [_task_run(task_id="a"), _task_run(task_id="b", queue="io"), _task_run(task_id="c", queue=None)]
    )
    assert any_store.task_runs(queues=["io"]).task_id.tolist() == ["b"]
    assert sorted(any_store.task_runs(queues=["etl", "default"]).task_id) == ["a", "c"]
    assert len(any_store.task_runs()) == 3


def test_usage_samples_and_demand_are_idempotent(any_store):
    sample = {
        "dag_id": "etl",
        "run_id": "r1",
        "task_id": "t",
        "map_index": -1,
        "try_number": 1,
        "ts": T0,
        "hostname": "w1",
        "cpu_cores": 1.5,
        "rss_mb": 300.0,
    }
    assert any_store.add_usage_samples([sample]) == 1
    any_store.add_usage_samples([sample, {**sample, "ts": T0 + timedelta(seconds=5)}])
    assert len(any_store.usage_samples()) == 2

    frame = pd.DataFrame(
        {
            "series_id": ["pool=etl/resource=cpu"] * 3,
            "ts": pd.date_range(T0, periods=3, freq="5min"),
            "value": [1.0, float("nan"), 3.0],
        }
    )
    any_store.write_demand(frame)
    any_store.write_demand(frame.assign(value=[1.0, float("nan"), 4.0]))
    stored = any_store.demand(["pool=etl/resource=cpu"])
    assert len(stored) == 3
    assert pd.isna(stored["value"].iloc[1])  # a gap stays a gap, not zero demand
    assert stored["value"].iloc[2] == 4.0


def test_forecasts_round_trip_with_quantiles_and_latest_wins(any_store):
    def forecast(issued, level):
        return pd.DataFrame(
            {
                "series_id": "pool=etl/resource=cpu",
                "ts": pd.date_range(issued + timedelta(minutes=5), periods=4, freq="5min"),
                "mean": [level] * 4,
                "q0.5": [level] * 4,
                "q0.95": [level + 2] * 4,
                "model": "arima",
                "fallback": "",
                "issued_at": issued,
            }
        )

    any_store.write_forecasts(forecast(T0, 1.0))
    any_store.write_forecasts(forecast(T0 + timedelta(minutes=5), 5.0))
    any_store.write_forecasts(forecast(T0 + timedelta(minutes=5), 5.0))
    latest = any_store.latest_forecasts(pools=["etl"])
    assert len(latest) == 4
    assert latest["q0.95"].tolist() == [7.0] * 4
    assert list(latest.columns[-2:]) == ["q0.5", "q0.95"]
    assert len(any_store.forecasts()) == 8
    assert any_store.prune_forecasts(T0 + timedelta(minutes=1)) == 1  # the first issue


@pytest.mark.parametrize(
    ("column", "value"), [("mean", float("inf")), ("q0.95", float("-inf")), ("q0.5", float("nan"))]
)
def test_a_forecast_that_is_not_finite_is_refused_naming_the_column(tmp_path, column, value):
    store = ProfileStore.sqlite(tmp_path / "profile.db")
    frame = pd.DataFrame(
        {
            "series_id": "pool=etl/resource=cpu",
            "ts": pd.date_range(T0 + timedelta(minutes=5), periods=3, freq="5min"),
            "mean": [1.0] * 3,
            "q0.5": [1.0] * 3,
            "q0.95": [2.0] * 3,
            "model": "arima",
            "fallback": "",
            "issued_at": T0,
        }
    )
    frame.loc[1, column] = value
    with pytest.raises(ValueError, match=rf"column '{column}' is not a finite number in row 2 "):
        store.write_forecasts(frame)
    assert store.forecasts().empty
    store.dispose()


def test_bulk_writes_keep_the_last_duplicate_read_naive_times_as_utc_and_refuse_missing_keys(any_store):
    # On PostgreSQL these frames go through COPY + one merge, elsewhere through row upserts: same result.
    naive = pd.Timestamp(T0).tz_localize(None)
    frame = pd.DataFrame(
        {
            "series_id": ["pool=etl/resource=cpu"] * 3,
            "ts": [naive, naive, naive + timedelta(minutes=5)],
            "value": [1.0, 2.0, float("nan")],
        }
    )
    assert any_store.write_demand(frame) in (2, 3)
    stored = any_store.demand(["pool=etl/resource=cpu"])
    assert stored["ts"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(minutes=5))]
    assert stored["value"].iloc[0] == 2.0 and pd.isna(stored["value"].iloc[1])

    forecast = pd.DataFrame(
        {
            "series_id": ["pool=etl/resource=cpu"],
            "ts": [T0 + timedelta(minutes=5)],
            "mean": [1.5],
            "q0.9": [3.25],
            "model": ['arima "(1,0,1)", weekly'],
            "fallback": [""],
            "issued_at": [T0],
        }
    )
    any_store.write_forecasts(forecast)
    stored = any_store.forecasts()
    assert stored["model"].tolist() == ['arima "(1,0,1)", weekly']
    assert stored["fallback"].tolist() == [""] and stored["q0.9"].tolist() == [3.25]

    with pytest.raises(ValueError, match="demand .*lacks? (its|their) key field"):
        any_store.write_demand(frame.assign(series_id=["pool=etl/resource=cpu", None, "x"]))
    assert len(any_store.demand()) == 2


def test_recording_a_plan_again_never_resets_an_applied_action(any_store):
    action = Action(
        pool="etl", kind=ActionKind.RESIZE_GROUP, amount=3, reason="q0.9 at now+lead", request_id="req-1"
    )
    plan = Plan(plan_id="p1", pool="etl", created_at=T0, mode=Mode.FORECAST_AND_SCALE, actions=[action])
    any_store.record_plan(plan)
    any_store.update_action("req-1", ActionStatus.APPLIED, details={"operation": "123"})
    any_store.record_plan(plan)
    ledger = any_store.actions(pool="etl")
    assert ledger["status"].tolist() == ["applied"]
    with pytest.raises(StoreError, match="no action with request id nope"):
        any_store.update_action("nope", ActionStatus.FAILED)


def test_a_bad_batch_writes_nothing(any_store):
    good = _task_run()
    with pytest.raises(ValueError, match="task_runs record 2 lacks its key field"):
        any_store.upsert_task_runs([good, _task_run(task_id=None)])
    with pytest.raises(ValueError, match="unknown field"):
        any_store.upsert_task_runs([{**good, "colour": "blue"}])
    assert any_store.task_runs().empty

    # A plan whose second action the database rejects leaves neither the plan nor the first action.
    ok = Action(pool="etl", kind=ActionKind.RELEASE, amount=1, reason="idle", request_id="a")
    broken = Action(pool="etl", kind=ActionKind.RELEASE, amount=1, reason=None, request_id="b")
    plan = Plan(plan_id="p", pool="etl", created_at=T0, mode=Mode.FORECAST_ONLY, actions=[ok, broken])
    with pytest.raises(sa.exc.IntegrityError):
        any_store.record_plan(plan)
    assert any_store.plans().empty and any_store.actions().empty


def _writer(url: str, worker: int, batches: int) -> None:
    store = ProfileStore(url)
    for batch in range(batches):
        store.upsert_task_runs(
            [
                _task_run(run_id=f"w{worker}", task_id=f"b{batch}", map_index=i, start_date=T0)
                for i in range(10)
            ]
        )
        store.write_demand(
            pd.DataFrame(
                {
                    "series_id": [f"pool=w{worker}/resource=cpu"],
                    "ts": [T0 + timedelta(minutes=5 * batch)],
                    "value": [1.0],
                }
            )
        )
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_writers_lose_no_rows(backend, tmp_path):
    def run(url: str) -> ProfileStore:
        ProfileStore(url).dispose()  # schema first, as the DAG's first task would
        ctx = multiprocessing.get_context("spawn")
        workers = [ctx.Process(target=_writer, args=(url, w, 25)) for w in range(4)]
        for proc in workers:
            proc.start()
        for proc in workers:
            proc.join(120)
            assert proc.exitcode == 0
        return ProfileStore(url)

    if backend == "sqlite":
        store = run(f"sqlite:///{tmp_path / 'shared.db'}")
        assert len(store.task_runs()) == 4 * 25 * 10
        assert len(store.demand()) == 4 * 25
        store.dispose()
    else:
        with postgres_database() as url:
            store = run(url)
            assert len(store.task_runs()) == 4 * 25 * 10
            assert len(store.demand()) == 4 * 25
            store.dispose()


def test_unreachable_store_fails_with_one_clear_message():
    with pytest.raises(
        StoreError, match=r"profile store postgresql\+psycopg2://predictive:\*\*\*@127.0.0.1:9/"
    ):
        ProfileStore("postgresql+psycopg2://predictive:secret@127.0.0.1:9/nowhere")


def test_password_never_appears_in_the_store_description():
    store = ProfileStore("postgresql+psycopg2://predictive:s3cret@127.0.0.1:9/x", upgrade=False)
    assert "s3cret" not in repr(store) and "s3cret" not in store.display_url


def test_a_lease_has_one_holder_until_it_expires_or_is_released(any_store):
    assert any_store.try_lease("lock:allocation/etl", "run-a", ttl_seconds=60)
    assert not any_store.try_lease("lock:allocation/etl", "run-b", ttl_seconds=60)
    assert any_store.lease_holder("lock:allocation/etl")[0] == "run-a"
    any_store.release_lease("lock:allocation/etl", "run-b")  # not b's to release
    assert not any_store.try_lease("lock:allocation/etl", "run-b", ttl_seconds=60)
    any_store.release_lease("lock:allocation/etl", "run-a")
    assert any_store.try_lease("lock:allocation/etl", "run-b", ttl_seconds=-1)  # taken, already expired
    assert any_store.try_lease("lock:allocation/etl", "run-c", ttl_seconds=60)  # an expired lease is free
    assert any_store.lease_holder("lock:allocation/etl")[0] == "run-c"


def test_evaluations_read_only_the_metrics_and_lead_time_bucket_asked_for(any_store) -> None:
    rows = [
        (series, T0 + timedelta(minutes=5 * k), horizon, metric, float(k))
        for series in ("pool=etl/resource=cpu", "pool=etl/resource=memory")
        for k in range(3)
        for horizon in (0, 60)
        for metric in ("mase", "n", "pinball_q0.9")
    ]
    any_store.write_evaluations(
        pd.DataFrame(rows, columns=["series_id", "window_end", "horizon_minutes", "metric", "value"])
    )
    got = any_store.evaluations(
        ["pool=etl/resource=cpu"], since=T0 + timedelta(minutes=5), metrics=["mase", "n"], horizon=0
    )
    assert len(got) == 4  # two window ends x two metrics
    assert set(got["metric"]) == {"mase", "n"} and set(got["horizon_minutes"]) == {0}
    assert set(got["series_id"]) == {"pool=etl/resource=cpu"}
    assert len(any_store.evaluations()) == len(rows)

"""Structural forecast and combination: plain inputs (upcoming-work JSON, store rows) -> forecast frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from airflow_predictive.contracts.forecast import forecast_columns
from airflow_predictive.forecasting.combine import combine, known_work_demand, residual_demand
from airflow_predictive.forecasting.structural import (
    profiles_from_task_runs,
    structural_forecast,
    task_model,
    user_transitions,
)

NOW = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)
H = timedelta(hours=3)


def task(task_id, upstream=(), cpu=1.0, duration=600.0, pool="default_pool", queue="work", **extra):
    return {
        "task_id": task_id,
        "upstream": list(upstream),
        "queue": queue,
        "pool": pool,
        "pool_slots": 1,
        "source": "template",
        "cpu": cpu,
        "memory_gib": 2.0,
        "storage_gib": 0.0,
        "network_mbps": 0.0,
        "duration_s": duration,
        "parallelism": 1,
        **extra,
    }


def dag(dag_id, tasks, upcoming=(), running=(), max_active_runs=16, max_active_tasks=16):
    return {
        "dag_id": dag_id,
        "max_active_runs": max_active_runs,
        "max_active_tasks": max_active_tasks,
        "upcoming": [{"run_after": t.isoformat()} for t in upcoming],
        "running": list(running),
        "tasks": tasks,
    }


def work(*dags, pools=None, parallelism=32):
    return {
        "limits": {"parallelism": parallelism, "pools": pools or {"default_pool": 128}},
        "dags": list(dags),
    }


def starts(fc, task_id):
    return sorted(datetime.fromtimestamp(i.start, UTC) for i in fc.intervals if i.task_id == task_id)


def cpu(frame, column="mean", pool="work"):
    rows = frame[frame["series_id"] == f"pool={pool}/resource=cpu"]
    return rows.set_index("ts")[column]


def test_stages_start_after_upstream_and_demand_lands_in_their_buckets():
    two = dag(
        "two", [task("prep", duration=600), task("train", ["prep"], cpu=16, duration=1800)], upcoming=[NOW]
    )
    fc = structural_forecast(work(two), now=NOW, horizon=H)
    assert starts(fc, "train") == [NOW + timedelta(minutes=10)]
    total = fc.total()
    assert list(total.columns) == forecast_columns()
    series = cpu(total)
    assert series[pd.Timestamp(NOW + timedelta(minutes=5))] == 1.0
    assert series[pd.Timestamp(NOW + timedelta(minutes=15))] == 16.0
    assert series[pd.Timestamp(NOW + timedelta(minutes=45))] == 0.0


def test_running_run_continues_from_its_running_stage():
    running = {
        "run_id": "manual__x",
        "run_type": "manual",
        "tasks": {"prep": {"state": "running", "start_date": (NOW - timedelta(minutes=4)).isoformat()}},
    }
    two = dag("two", [task("prep", duration=600), task("train", ["prep"], cpu=16)], running=[running])
    fc = structural_forecast(work(two), now=NOW, horizon=H)
    assert starts(fc, "train") == [NOW + timedelta(minutes=6)]
    assert fc.scheduled["mean"].sum() == 0  # a manual run is ad-hoc work
    assert fc.adhoc["mean"].max() == 16.0


def test_airflow_limits_delay_work():
    at_once = [NOW, NOW]
    one_slot = dag("a", [task("t", pool="tiny")], upcoming=at_once)
    fc = structural_forecast(work(one_slot, pools={"tiny": 1}), now=NOW, horizon=H)
    assert starts(fc, "t") == [NOW, NOW + timedelta(minutes=10)]  # pool slots
    one_run = dag("b", [task("t")], upcoming=at_once, max_active_runs=1)
    assert starts(structural_forecast(work(one_run), now=NOW, horizon=H), "t")[1] == NOW + timedelta(
        minutes=10
    )
    three = dag("c", [task("x"), task("y"), task("z")], upcoming=[NOW])
    assert starts(structural_forecast(work(three, parallelism=2), now=NOW, horizon=H), "z") == [
        NOW + timedelta(minutes=10)
    ]


def test_p90_durations_widen_upper_quantiles():
    history = pd.DataFrame(
        {
            "dag_id": "two",
            "task_id": "prep",
            "state": "success",
            "duration": [300.0, 300.0, 300.0, 300.0, 1500.0],
            "cpu_mean": 0.5,
            "rss_peak_mb": 1024.0,
        }
    )
    profiles = profiles_from_task_runs(history)
    two = dag(
        "two", [task("prep", duration=60), task("train", ["prep"], cpu=16, duration=600)], upcoming=[NOW]
    )
    fc = structural_forecast(work(two), now=NOW, horizon=H, profiles=profiles)
    assert fc.sources[("two", "prep")] == "profile"  # 5 measured runs outweigh the template's 60 s
    assert fc.sources[("two", "train")] == "template"
    total = fc.total()
    at = pd.Timestamp(NOW + timedelta(minutes=15))  # train ends at 15 min with p50, later with p90
    assert cpu(total, "q0.5")[at] == 0.0
    assert cpu(total, "q0.9")[at] >= 16.0  # train still running (and prep too) on p90 durations
    quantiles = total[[c for c in total.columns if c.startswith("q")]].to_numpy()
    assert (np.diff(quantiles, axis=1) >= 0).all()
    prep = task_model("two", task("prep", duration=60), profiles)
    # 5 runs against the hints' 1: mostly the profile (0.5 cores, 300 s), a little of the template
    assert 0.5 < prep.usage["cpu"] < 0.6 and 200 < prep.p50 < 300


def test_hints_and_measurements_combine_by_evidence_from_the_first_run():
    """Issue #20: 8 vCPU of template hints stayed until the third run, then dropped to the measured use."""
    hints = task("etl", cpu=8.0, duration=600.0)
    estimates = []
    for runs in range(0, 7):
        history = pd.DataFrame(
            {"dag_id": "d", "task_id": "etl", "state": "success", "duration": [120.0] * runs}
            | {"cpu_mean": [0.6] * runs, "rss_peak_mb": [180.0] * runs}
        )
        estimates.append(task_model("d", hints, profiles_from_task_runs(history)).usage["cpu"])
    assert estimates[0] == 8.0  # no run yet: the hints
    assert 0.6 < estimates[1] < 3.0  # one run already moves the estimate most of the way
    steps = -np.diff(estimates)
    assert (steps > 0).all() and (np.diff(steps) < 0).all()  # steadily closer, the biggest step first
    assert estimates[6] < 0.9


def test_a_mapped_task_fans_out_as_its_history_did():
    """The endpoint only says "mapped": the fan-out (6 partitions a run) comes from the task runs."""
    rows = []
    for day in range(4):
        start = NOW - timedelta(days=day + 1)
        for index in range(6):
            rows.append(
                {
                    "dag_id": "wh",
                    "run_id": f"scheduled__{start.isoformat()}",
                    "task_id": "rebuild",
                    "map_index": index,
                    "state": "success",
                    "start_date": start,
                    "end_date": start + timedelta(minutes=30),
                    "duration": 1800.0,
                    "cpu_mean": 1.5,
                }
            )
    profiles = profiles_from_task_runs(pd.DataFrame(rows))
    assert profiles[("wh", "rebuild")].instances == 6
    wh = dag("wh", [task("rebuild", cpu=1.0, duration=1800, mapped=True)], upcoming=[NOW])
    fc = structural_forecast(work(wh), now=NOW, horizon=H, profiles=profiles)
    # 6 x 1.5 measured, 24 tries against the hint's 1 cpu (one run's worth): within 2% of it
    assert cpu(fc.total())[pd.Timestamp(NOW + timedelta(minutes=10))] == pytest.approx(9.0, rel=0.02)
    fresh = structural_forecast(work(wh), now=NOW, horizon=H)  # no history: one instance, template cpu
    assert cpu(fresh.total())[pd.Timestamp(NOW + timedelta(minutes=10))] == pytest.approx(1.0)


def manual_runs(pattern, start):
    rows, t = [], start
    for dag_id, gap in pattern:
        t += gap
        rows.append(
            {"dag_id": dag_id, "run_id": f"manual__{t.isoformat()}", "triggered_by": "alice", "start_date": t}
        )
    return pd.DataFrame(rows)


def test_markov_user_model_predicts_the_next_trigger():
    day = [("explore", timedelta(hours=20)), ("report", timedelta(minutes=10))]
    runs = manual_runs(day * 3 + [("explore", timedelta(hours=20))], NOW - timedelta(days=4))
    runs = runs[runs["start_date"] <= NOW]
    last = runs["start_date"].max()
    model = user_transitions(runs)
    (step,) = model["alice"]["explore"]
    assert (step.dag_id, step.probability, step.delay_s) == ("report", 1.0, 600.0)
    report = dag("report", [task("render", cpu=4, duration=300)])
    now = last + timedelta(minutes=2)
    fc = structural_forecast(work(report), now=now, horizon=H, dag_runs=runs)
    assert starts(fc, "render") == [last + timedelta(minutes=10)]
    assert fc.adhoc["mean"].max() > 0 and fc.scheduled["mean"].sum() == 0


def test_a_next_trigger_whose_typical_delay_has_passed_is_not_predicted_at_now():
    day = [("explore", timedelta(hours=20)), ("report", timedelta(minutes=10))]
    runs = manual_runs(day * 3 + [("explore", timedelta(hours=20))], NOW - timedelta(days=4))
    runs = runs[runs["start_date"] <= NOW]
    last = runs["start_date"].max()
    report = dag("report", [task("render", cpu=4, duration=300)])
    # alice explores, then reports 10 minutes later: 30 minutes on, that report is overdue
    late = structural_forecast(work(report), now=last + timedelta(minutes=30), horizon=H, dag_runs=runs)
    assert starts(late, "render") == [] and late.adhoc["mean"].sum() == 0


def test_combination_adds_known_work_back_without_double_counting():
    two = dag("two", [task("big", cpu=16, duration=1800)], upcoming=[NOW])
    fc = structural_forecast(work(two), now=NOW, horizon=timedelta(hours=1))
    stat = fc.scheduled.copy()
    for column in [c for c in stat.columns if c == "mean" or c.startswith("q")]:
        stat[column] = 2.0
    stat["model"] = "auto_arima"
    combined = combine(stat, fc, method="residual")
    columns = forecast_columns()
    assert list(combined.columns) == [*columns[:-3], "known", *columns[-3:]]
    series = cpu(combined)
    assert series[pd.Timestamp(NOW)] == 18.0  # residual (ad-hoc) level + scheduled work
    # the known part on its own, for the planner under any rule: the scheduled 16 vCPU, then nothing
    assert cpu(combined, "known")[pd.Timestamp(NOW)] == 16.0
    assert cpu(combined, "known")[pd.Timestamp(NOW + timedelta(minutes=45))] == 0.0
    assert series[pd.Timestamp(NOW + timedelta(minutes=45))] == 2.0
    assert (combined["model"] == "combined").all()
    assert cpu(combine(stat, fc, method="max"))[pd.Timestamp(NOW)] == 16.0
    with pytest.raises(ValueError, match="unknown combination method 'avg'"):
        combine(stat, fc, method="avg")


def test_known_work_demand_is_the_scheduled_runs_share_of_history(store):
    t0 = datetime(2026, 3, 9, 0, 0, tzinfo=UTC)
    store.upsert_dag_runs(
        [
            {"dag_id": "etl", "run_id": "scheduled__1", "run_type": "scheduled", "start_date": t0},
            {"dag_id": "adhoc", "run_id": "manual__1", "run_type": "manual", "start_date": t0},
        ]
    )
    common = {"state": "success", "queue": "work", "hints": '{"cpus": 4, "ram": 1024}', "duration": 600.0}
    store.upsert_task_runs(
        [
            {
                "dag_id": "etl",
                "run_id": "scheduled__1",
                "task_id": "t",
                "start_date": t0,
                "end_date": t0 + timedelta(minutes=10),
                **common,
            },
            {
                "dag_id": "adhoc",
                "run_id": "manual__1",
                "task_id": "t",
                "start_date": t0,
                "end_date": t0 + timedelta(minutes=10),
                **common,
            },
        ]
    )
    from airflow_predictive.profiling.demand_series import build_demand

    task_runs, dag_runs = store.task_runs(), store.dag_runs()
    window = {"start": t0, "end": t0 + timedelta(minutes=30), "pools": ["work"]}
    total = build_demand(task_runs, **window)
    known = known_work_demand(task_runs, dag_runs, **window)
    residual = residual_demand(total, known)
    first = residual[(residual["series_id"] == "pool=work/resource=cpu")].iloc[0]
    assert total[total["series_id"] == "pool=work/resource=cpu"]["value"].iloc[0] == 8.0
    assert first["value"] == 4.0  # only the manual run is left for the statistical model
    # slots too: the structural forecast adds the scheduled runs' slots back, so they are subtracted
    known_slots = known[known["series_id"] == "pool=work/resource=slots"]["value"]
    slots = residual[residual["series_id"] == "pool=work/resource=slots"]["value"]
    assert total[total["series_id"] == "pool=work/resource=slots"]["value"].iloc[0] == 2.0
    assert known_slots.iloc[0] == 1.0 and slots.iloc[0] == 1.0  # the manual run's slot is left


def test_runs_of_different_dags_with_the_same_run_id_are_kept_apart():
    run_id = f"scheduled__{NOW.isoformat()}"
    state = {"a": {"state": "running", "start_date": NOW.isoformat()}}
    running = [{"run_id": run_id, "run_type": "scheduled", "tasks": state}]
    one = dag("one", [task("a"), task("b", ["a"], cpu=4)], running=running)
    two = dag("two", [task("a", cpu=2)], running=running)
    fc = structural_forecast(work(one, two), now=NOW, horizon=H)
    assert starts(fc, "b") == [NOW + timedelta(minutes=10)]
    assert cpu(fc.scheduled)[pd.Timestamp(NOW)] == 3.0  # one's a (1) + two's a (2)


def slots(frame, column="mean", pool="io-pool"):
    rows = frame[frame["series_id"] == f"pool={pool}/resource=slots"]
    return rows.set_index("ts")[column]


def fan_out(width=30, duration=60.0):
    """A DAG whose task is mapped ``width`` wide (template parallelism), pool_slots 1, on queue io-pool."""
    sleep = task("sleep", cpu=0.05, duration=duration, queue="io-pool", parallelism=width, mapped=True)
    # max_active_tasks above the fan-out (Airflow's default, 16, would run it in two waves)
    return dag("fan", [sleep], upcoming=[NOW + timedelta(minutes=2)], max_active_tasks=32)


def test_known_work_forecasts_the_slots_of_each_mapped_instance():
    fc = structural_forecast(
        work(fan_out()), now=NOW, horizon=timedelta(hours=1), interval=timedelta(minutes=1)
    )
    total = fc.total()
    series = slots(total)
    start = pd.Timestamp(NOW + timedelta(minutes=2))
    assert series[start] == pytest.approx(30.0)  # 30 instances x 1 slot for the run's first minute
    assert series.drop(start).sum() == pytest.approx(0.0)
    for column in ("q0.5", "q0.8", "q0.95"):
        assert slots(total, column)[start] == pytest.approx(30.0)
    assert cpu(total, pool="io-pool")[start] == pytest.approx(1.5)  # 30 x 0.05 vCPU: CPU alone needs little
    # in the pool of the task's queue only
    assert set(total[total["mean"] > 0]["series_id"].str.split("/").str[0]) == {"pool=io-pool"}
    # pool_slots 2: each instance holds two slots
    (sleep,) = fan_out()["tasks"]
    two = {**fan_out(), "tasks": [{**sleep, "pool_slots": 2}]}
    wide = structural_forecast(work(two), now=NOW, horizon=timedelta(hours=1), interval=timedelta(minutes=1))
    assert slots(wide.total())[start] == pytest.approx(60.0)


def test_a_minute_long_fan_out_needs_its_whole_width_in_a_5_minute_bucket():
    fc = structural_forecast(work(fan_out()), now=NOW, horizon=timedelta(hours=1))
    series = slots(fc.total())
    # 30 slots for 60 s of a 5-minute bucket: the bucket's peak (a mean of 6 would make 24 tasks wait)
    assert series[pd.Timestamp(NOW)] == pytest.approx(30.0)
    assert series.sum() == pytest.approx(30.0)
    assert cpu(fc.total(), pool="io-pool")[pd.Timestamp(NOW)] == pytest.approx(0.3)  # usage: the mean


def test_residual_combination_keeps_known_slots():
    fc = structural_forecast(
        work(fan_out()), now=NOW, horizon=timedelta(hours=1), interval=timedelta(minutes=1)
    )
    stat = fc.scheduled.copy()
    for column in [c for c in stat.columns if c == "mean" or c.startswith("q")]:
        stat[column] = 0.5  # the residual (ad-hoc) slots the statistical model forecasts
    stat["model"] = "auto_arima"
    combined = combine(stat, fc, method="residual")
    start = pd.Timestamp(NOW + timedelta(minutes=2))
    for column in ("mean", "q0.95"):
        series = slots(combined, column)
        assert series[start] == pytest.approx(30.5)
        assert series[start + timedelta(minutes=1)] == pytest.approx(0.5)

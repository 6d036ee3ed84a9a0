"""The DAG tab's timeline of upcoming runs (issue #20 item 9) and the control-loop run view (item 10)."""

from __future__ import annotations

import re
from datetime import timedelta

import pandas as pd

from airflow_predictive.feedback import pages, run_view, timeline
from airflow_predictive.store import ProfileStore
from tests.ui.seed import NOW, POOL, RULE, RUN_ID, RUN_MEAN, seed

TASKS = [
    {"task_id": "extract", "upstream": [], "stage": "extract", "capacity_pool": "etl", "cpu": 2.0,
     "memory_gib": 4.0, "pool_slots": 1, "parallelism": 2, "duration_s": 600.0},
    {"task_id": "extract_b", "upstream": [], "stage": "extract", "capacity_pool": "etl", "cpu": 1.0,
     "memory_gib": 1.0, "pool_slots": 1, "parallelism": 1, "duration_s": 300.0},
    {"task_id": "train", "upstream": ["extract", "extract_b"], "stage": None, "capacity_pool": "gpu",
     "cpu": 8.0, "memory_gib": 32.0, "pool_slots": 2, "parallelism": 1, "duration_s": None},
]  # fmt: skip


def _runs(n: int, every: timedelta = timedelta(minutes=10)) -> list[dict]:
    at = [pd.Timestamp(NOW) + every * i for i in range(n)]
    # a cron trigger: the data interval has no length (start = end = run_after), with microseconds
    return [
        {"run_after": t.isoformat(), "data_interval_start": t.isoformat(), "data_interval_end": t.isoformat()}
        for t in (a + pd.Timedelta(microseconds=123456) for a in at)
    ]


def test_stages_run_in_dependency_order_with_their_summed_capacity() -> None:
    extract, train = timeline.stages(TASKS)
    assert (extract["stage"], extract["offset"], extract["duration"]) == (
        "extract",
        timedelta(0),
        timedelta(minutes=10),
    )
    assert (extract["cpu"], extract["memory_gib"], extract["slots"]) == (5.0, 9.0, 3.0)  # 2 x 2 + 1 cpu
    assert (train["stage"], train["offset"]) == ("train", timedelta(minutes=10))
    assert train["assumed_duration"] and train["duration"] == timeline.ASSUMED_DURATION
    assert train["pools"] == ["gpu"]


def test_every_upcoming_run_gets_a_bar_per_stage() -> None:
    bars = timeline.bars({"upcoming": _runs(144), "tasks": TASKS})
    assert len(bars) == 288
    second = [b for b in bars if b["stage"] == "train"][1]
    assert pd.Timestamp(second["start"]) == pd.Timestamp(NOW) + pd.Timedelta(minutes=20, microseconds=123456)


def test_dag_tab_draws_a_timeline_lists_few_rows_to_the_minute_and_drops_an_empty_interval() -> None:
    dag = {"dag_id": "d", "timetable": "*/10 * * * *", "upcoming": _runs(144), "tasks": TASKS}
    html = pages._upcoming_html("d", {"horizon_minutes": 1440, "now": NOW.isoformat(), "dags": [dag]})
    assert 'class="timeline"' in html
    table = html[
        html.index('<table id="upcoming-runs"') : html.index("</table>", html.index("upcoming-runs"))
    ]
    assert table.count("<tr>") == 1 + 5  # header and the next five runs; the timeline shows all 144
    assert "and 139 more in the timeline" in html
    assert "interval start" not in table  # start = end: the interval says nothing
    assert not re.search(r"\d\d:\d\d:\d\d", table)
    assert "expects 5 vCPU, 9 GiB, 3 slots" in html  # the stage's capacity in the bar's hover


def test_a_real_data_interval_is_still_shown() -> None:
    runs = [{"run_after": NOW.isoformat(), "data_interval_start": (NOW - timedelta(days=1)).isoformat(),
             "data_interval_end": NOW.isoformat()}]  # fmt: skip
    assert timeline.interval_differs(runs)
    assert "<th>interval start</th>" in pages._next_runs_table(runs)


# ---------------------------------------------------------------- the run view


def test_run_window_comes_from_the_run_id_when_airflow_does_not_know_the_run() -> None:
    start, end = run_view.window_from_run_id("scheduled__2026-11-27T11:55:00+00:00")
    assert (start.isoformat(), end - start) == ("2026-11-27T11:55:00+00:00", run_view.DEFAULT_RUN_SPAN)
    assert run_view.window_from_run_id("my-own-run") is None


def test_run_view_shows_that_runs_forecasts_plan_and_actions_only(tmp_path) -> None:
    store = ProfileStore.sqlite(tmp_path / "p.db")
    seed(store)
    start, end = run_view.window_from_run_id(RUN_ID)
    run = run_view.collect_run(store, dag_id="predictive_scaling", run_id=RUN_ID, start=start, end=end)
    store.dispose()
    # the forecast issued at now (a later run) is not this run's; the one issued an hour before is
    issued = (NOW - timedelta(hours=1)).isoformat()
    assert [(f["issued_at"], f["buckets"], f["next_mean"]) for f in run["forecasts"]] == [
        (issued, 12, RUN_MEAN)
    ]
    assert [(p["pool"], p["rule"], p["binding"]) for p in run["plans"]] == [(POOL, RULE, "slots")]
    assert sorted(a["request_id"] for a in run["actions"]) == ["req-grow-1", "req-release-1"]
    html = pages.render_run_page(run, plotly_src="/p.js")
    assert 'id="run-forecasts"' in html and 'id="run-plans"' in html and 'id="ledger"' in html
    assert "Accuracy" not in html and "Learned behaviour" not in html  # not the pools' pages


def test_a_run_airflow_does_not_know_shows_only_plans_that_name_it(tmp_path) -> None:
    store = ProfileStore.sqlite(tmp_path / "p.db")
    seed(store)
    named = run_view.collect_run(store, dag_id="d", run_id=RUN_ID, start=None, end=None)
    other = run_view.collect_run(store, dag_id="d", run_id="manual__1", start=None, end=None)
    store.dispose()
    assert ([p["pool"] for p in named["plans"]], named["forecasts"]) == ([POOL], [])
    assert other["plans"] == [] and "names no time" in pages.render_run_page(other, plotly_src="/p.js")


def test_a_run_that_did_nothing_says_so(tmp_path) -> None:
    store = ProfileStore.sqlite(tmp_path / "p.db")
    seed(store)
    start = NOW - timedelta(days=3)
    run = run_view.collect_run(store, dag_id="d", run_id="r", start=start, end=start + timedelta(minutes=5))
    store.dispose()
    assert (run["forecasts"], run["plans"], run["actions"]) == ([], [], [])
    html = pages.render_run_page(run, plotly_src="/p.js")
    assert "This run issued no forecast" in html and "This run made no plan" in html


def test_a_stage_without_a_template_duration_takes_the_measured_median() -> None:
    application = {
        "d.train": {"dag_id": "d", "task_id": "train", "duration_p50_s": 1200.0},
        "other.train": {"dag_id": "other", "task_id": "train", "duration_p50_s": 5.0},
    }
    measured = timeline.measured_durations(application, "d")
    assert measured == {"train": 1200.0}
    train = timeline.stages(TASKS, measured)[1]
    assert (train["duration"], train["assumed_duration"]) == (timedelta(minutes=20), False)

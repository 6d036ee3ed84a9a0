"""The forecast page's presentation rules (issue #20 item 9, issue #21 slots), one test per complaint.

Pure functions on plain values, plus the page rendered from a real SQLite profile store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.feedback import learning, pages, presentation
from airflow_predictive.store import ProfileStore
from tests.ui.seed import NOW, POOL, SERIES, seed

REASON = (
    "forecast (cpu daily-cycle autocorrelation 0.81 >= 0.3, guard: observed / 0.9): forecast at now+5 min "
    "boot lead: cpu q0.95 at 12:05 = 13.2 vCPU vs 8.0 *; memory q0.95 at 12:05 = 20.1 GiB vs 32.0 on 2 x "
    "e2-standard-4; 2 standard + 0 spot (standard carries the q0.5 baseline (day), spot the rest): "
    "resize etl-mig 2 -> 4"
)


def _pool(name: str) -> dict:
    return {"pool": name, "resources": []}


# ---------------------------------------------------------------- configured pools first, others folded


def test_configured_pools_come_first_in_file_order_and_the_others_are_folded() -> None:
    ordered = presentation.order_pools(
        [_pool("default"), _pool("analytics"), _pool("etl-workers")], ["etl-workers", "analytics"]
    )
    assert [(p["pool"], p["folded"]) for p in ordered] == [
        ("etl-workers", False),
        ("analytics", False),
        ("default", True),
    ]


def test_without_a_pools_file_no_pool_is_folded() -> None:
    ordered = presentation.order_pools([_pool("default"), _pool("etl")], None)
    assert [p["folded"] for p in ordered] == [False, False]


def test_rendered_page_folds_the_unconfigured_pool_below_the_configured_one(tmp_path) -> None:
    store = ProfileStore.sqlite(tmp_path / "p.db")
    seed(store)
    ts = pd.date_range(NOW - timedelta(hours=2), NOW, freq="5min", inclusive="left")
    store.write_demand(pd.DataFrame({"series_id": "pool=default/resource=cpu", "ts": ts, "value": 0.1}))
    config = CapacityPool(
        name=POOL,
        project="my-project-1",
        zone="us-central1-a",
        machine_type="e2-standard-4",
        service_level={"queue_wait_p95_seconds": 60},
    )
    html = pages.render_page(pages.collect(store, now=NOW, configured=[config]), plotly_src="/p.js")
    store.dispose()
    folded = html.index('<details class="other-pools">')
    assert html.index(f'data-pool="{POOL}"') < folded < html.index('data-pool="default"')
    # the configured pool states its promise; the unconfigured one has none
    assert "queue wait p95 at most 60 s; queue wait judged live over the trailing hour" in html[:folded]
    assert "none set" in html[folded:]


# ---------------------------------------------------------------- a window centred on now, zoomable


def _block(data: dict, series: str) -> dict:
    return next(b for p in data["pools"] for b in p["resources"] if b["series_id"] == series)


def test_window_is_centred_on_now_and_reaches_as_far_back_as_the_forecast_ahead() -> None:
    start, end = presentation.time_window(NOW, NOW + timedelta(hours=2))
    assert (start, end) == (NOW - timedelta(hours=2), NOW + timedelta(hours=2))


def test_window_stays_between_one_and_six_hours_each_side() -> None:
    assert presentation.time_window(NOW, None) == (NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert presentation.time_window(NOW, NOW + timedelta(days=2))[1] == NOW + timedelta(hours=6)


def test_chart_starts_on_the_window_with_a_range_slider_and_a_now_line(tmp_path) -> None:
    store = ProfileStore.sqlite(tmp_path / "p.db")
    seed(store)
    block = _block(pages.collect(store, now=NOW), SERIES)
    store.dispose()
    layout = pages.figure(block).to_plotly_json()["layout"]
    # the seeded forecast reaches 2 h ahead (24 buckets of 5 min, from now): the window is now +- 2 h
    start, end = (pd.Timestamp(x) for x in layout["xaxis"]["range"])
    assert (end - start, start + (end - start) / 2) == (pd.Timedelta(hours=3, minutes=50), pd.Timestamp(NOW))
    assert layout["xaxis"]["rangeslider"]["visible"] is True
    assert [s["x0"] for s in layout["shapes"]] == [NOW.isoformat()]


# ---------------------------------------------------------------- units with a sensible floor


def test_near_zero_storage_is_drawn_as_zero_on_a_one_gib_axis_not_in_micro_units() -> None:
    values = [3e-6, 2e-6, 4e-6, 1e-6]
    assert presentation.rounded("storage", values) == [0.0, 0.0, 0.0, 0.0]
    assert presentation.axis_top("storage", values) == 1.0
    assert presentation.axis_top("cpu", [10.0, None], [12.0]) == pytest.approx(13.2)


def test_the_y_axis_never_uses_si_prefixes(tmp_path) -> None:
    store = ProfileStore.sqlite(tmp_path / "p.db")
    seed(store)
    block = _block(pages.collect(store, now=NOW), SERIES)
    store.dispose()
    yaxis = pages.figure(block).to_plotly_json()["layout"]["yaxis"]
    assert yaxis["tickformat"] == ",.2~f" and yaxis["range"][0] == 0


# ---------------------------------------------------------------- behaviour as tables and a heatmap


def test_hour_of_week_profile_becomes_seven_days_of_24_hours() -> None:
    grid = presentation.hour_of_week_grid([float(i) for i in range(168)])
    assert len(grid) == 7 and all(len(day) == 24 for day in grid)
    assert grid[1][0] == 24.0  # Tuesday 00h
    assert presentation.hour_of_week_grid([1.0, 2.0]) is None


def test_learned_behaviour_shows_a_heatmap_and_no_raw_arrays() -> None:
    profile = [float(i % 24 == 9) for i in range(168)]
    summaries = {
        "timing": {"pool:etl": {"pool": "etl", "hour_of_week": profile, "peak_hours_utc": [9]}},
        "queue_pressure": {"etl": {"ts": [f"2026-11-27T{h:02d}:00:00+00:00" for h in range(12)]}},
    }
    html = pages._summaries_html(summaries)
    assert 'class="heatmap"' in html and '"type": "heatmap"' in html
    table = html.split('<div class="summary"', 1)[1]
    assert "168 values" in table and "0.0, 0.0, 0.0" not in table
    assert 'data-kind="queue_pressure"' not in html  # shown per pool as its queue wait


# ---------------------------------------------------------------- one-line reasons, detail on demand


def test_a_reason_becomes_one_line_with_what_was_done_and_on_which_basis() -> None:
    line = presentation.reason_summary(REASON)
    assert line == "resize etl-mig 2 -> 4 (forecast)"
    assert len(presentation.reason_summary("x: " + "y" * 300)) == presentation.SUMMARY_CHARS


def test_ledger_shows_the_summary_and_keeps_the_whole_reason_behind_a_click() -> None:
    row = {
        "created_at": "2026-11-27T11:00:00.123456+00:00",
        "pool": "etl",
        "resource": "cpu",
        "kind": "resize_group",
        "amount": 2.0,
        "provisioning": "standard",
        "target": "etl-mig",
        "reason": REASON,
        "status": "applied",
        "error": "",
        "plan_id": "p",
        "request_id": "r",
    }
    html = pages._ledger_table([row], None)
    assert "<summary>resize etl-mig 2 -&gt; 4 (forecast)</summary>" in html
    assert "daily-cycle autocorrelation 0.81" in html.split("</summary>", 1)[1]
    assert "2026-11-27 11:00<" in html and ".123456" not in html


# ---------------------------------------------------------------- the pool's learning state


def _demand(days: float, resource: str = "cpu") -> pd.DataFrame:
    ts = pd.date_range(end=NOW - timedelta(minutes=5), periods=int(days * 288), freq="5min")
    return pd.DataFrame({"series_id": f"pool=etl/resource={resource}", "ts": ts, "value": 1.0})


def _plans(summary: str) -> pd.DataFrame:
    return pd.DataFrame({"plan_id": ["p"], "pool": ["etl"], "created_at": [NOW], "summary": [summary]})


FORECAST = pd.DataFrame(
    {
        "series_id": ["pool=etl/resource=cpu"],
        "model": ["ARIMA(1,0,1)"],
        "fallback": ["short_history:recent_level"],
    }
)
EMPTY = pd.DataFrame(columns=["series_id", "ts", "value"])


@pytest.mark.parametrize(
    ("days", "phase"),
    [(None, "cold start"), (0.5, "short history"), (3, "daily cycle"), (8, "learned")],
)
def test_learning_phase_follows_the_days_of_history(days, phase) -> None:
    demand = EMPTY if days is None else _demand(days)
    state = learning.learning_state(demand, FORECAST, _plans("{}"), interval=timedelta(minutes=5), now=NOW)
    assert state["phase"] == phase
    assert bool(state["waiting_for"]) is (phase != "learned")


def test_learning_state_names_history_model_rule_and_service_level() -> None:
    plans = _plans('{"sizing": "reactive fallback (cpu demand has no daily cycle)", "binding": "slots"}')
    demand = pd.concat([_demand(0.5), _demand(0.25, "memory")])
    state = learning.learning_state(demand, FORECAST, plans, interval=timedelta(minutes=5), now=NOW)
    assert state["history_days"] == {"cpu": 0.5, "memory": 0.25}
    assert state["model"] == "ARIMA(1,0,1)" and state["fallback"] == "short_history:recent_level"
    assert state["rule"].startswith("reactive fallback")
    # a pool without a queue-wait target says so; one with it states its promise
    assert state["service_level"] == "none set (capacity follows the rule in force)"
    promise = "queue wait p95 <= 60 s over the trailing hour"
    kwargs = {"interval": timedelta(minutes=5), "now": NOW, "service_level": promise}
    assert learning.learning_state(demand, FORECAST, plans, **kwargs)["service_level"] == promise
    assert state["binding"] == "slots"
    assert "24 h left" in state["waiting_for"] or "h left" in state["waiting_for"]


def test_gaps_do_not_count_as_history() -> None:
    demand = _demand(2)
    demand.loc[: len(demand) - 13, "value"] = None  # only the last hour observed
    assert learning.history_days(demand, timedelta(minutes=5)) == {"cpu": pytest.approx(1 / 24, abs=0.01)}


# ---------------------------------------------------------------- slots and queue wait (issue #21)


def test_queue_wait_gives_p50_and_p95_of_the_last_day() -> None:
    ts = [(NOW - timedelta(hours=h)).isoformat() for h in (30, 3, 2, 1)]
    wait = presentation.queue_wait(
        {"ts": ts, "wait_mean_s": [999.0, 10.0, 20.0, None], "wait_max_s": [999.0, 30.0, 40.0, None]}, NOW
    )
    assert (wait["p50_s"], wait["buckets"]) == (15.0, 2)  # the 30 h old bucket is out of the window
    assert wait["p95_s"] == pytest.approx(19.5)


def test_queue_wait_is_per_try_when_the_refresh_measured_it() -> None:
    payload = {
        "ts": [(NOW - timedelta(hours=1)).isoformat()],
        "wait_mean_s": [10.0],
        "wait_max_s": [40.0],
        "queue_wait": {"24h": {"tasks": 40, "wait_p50_s": 2.0, "wait_p95_s": 45.0, "waited_long_share": 0.1}},
    }
    wait = presentation.queue_wait(payload, NOW)
    assert (wait["p50_s"], wait["p95_s"], wait["tasks"]) == (2.0, 45.0, 40)
    html = pages._queue_wait_html({"pool": "io", "queue_wait": wait})
    assert "p95 <b>45 s</b> (over 40 tasks, 10% waited over 30 s)" in html


def test_pool_says_when_task_slots_bind_and_what_its_slot_capacity_is() -> None:
    html = pages._binding_html({"binding": "slots", "slots_per_instance": 16, "instances": 3})
    assert "Task slots bind (3 instances x 16 slots)" in html
    assert "cpu binds" in pages._binding_html({"binding": "cpu"})


def test_page_draws_the_slots_series_with_its_forecast_capacity_and_queue_wait(tmp_path) -> None:
    store = ProfileStore.sqlite(tmp_path / "p.db")
    seed(store)
    slots = SERIES.replace("cpu", "slots")
    ts = pd.date_range(NOW - timedelta(hours=3), NOW, freq="5min", inclusive="left")
    store.write_demand(pd.DataFrame({"series_id": slots, "ts": ts, "value": 7.0}))
    future = pd.date_range(NOW, periods=12, freq="5min")
    frame = pd.DataFrame({"series_id": slots, "ts": future, "mean": 9.0, "q0.95": 12.0})
    frame["model"], frame["fallback"], frame["issued_at"] = "ETS", "", NOW
    store.write_forecasts(frame)
    store.record_capacity([{"pool": POOL, "resource": "slots", "ts": t, "value": 32.0} for t in ts])
    store.put_summaries(
        "queue_pressure",
        {
            POOL: {
                "ts": [t.isoformat() for t in ts],
                "wait_mean_s": [12.0] * len(ts),
                "wait_max_s": [60.0] * len(ts),
            }
        },
    )
    data = pages.collect(store, now=NOW)
    store.dispose()
    pool = next(p for p in data["pools"] if p["pool"] == POOL)
    block = next(b for b in pool["resources"] if b["resource"] == "slots")
    assert (block["demand"]["value"][-1], block["forecast"]["upper"][0], block["capacity"]["value"][-1]) == (
        7.0,
        12.0,
        32.0,
    )
    assert pool["queue_wait"]["p50_s"] == 12.0
    html = pages.render_page(data, plotly_src="/p.js")
    assert "task slots (running + queued tasks" in html and "queue wait, last day: p50 <b>12 s</b>" in html


# ---------------------------------------------------------------- minute resolution


def test_times_are_shown_to_the_minute() -> None:
    assert presentation.minute("2026-12-02T14:30:59.123456+00:00") == "2026-12-02 14:30"
    assert presentation.minute(datetime(2026, 12, 2, 15, 30, tzinfo=UTC)) == "2026-12-02 15:30"
    assert presentation.minute(None) == "–"
    assert not re.search(r"\d\d:\d\d:\d\d", presentation.minute("2026-12-02T14:30:00"))

"""The forecast page in a real Airflow API server, driven by headless Chromium (Debian's package).

One api-server with the provider installed, a profile store holding demand, a forecast, capacity, a
plan with an applied and a failed action, and scores. The test logs in through Airflow's own login
form, opens the page, the DAG tab and the run page the extra link points to, checks the charts carry
the stored numbers and the ledger lists the stored actions, and saves screenshots under
``artifacts/ui/``. Without a login the page answers 401.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from airflow_predictive.store import ProfileStore
from tests.airflow_harness import AirflowDeployment, airflow_cli
from tests.ui.seed import POOL, POOLS_YAML, RULE, SERIES, UNCONFIGURED, seed

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("ui-airflow")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(REPO / "tests" / "dags" / "ui_forecast_page.py", dags / "ui_forecast_page.py")
    store_path = home / "predictive" / "profile.db"
    store = ProfileStore.sqlite(store_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    expected = seed(store, now.replace(minute=now.minute - now.minute % 5))
    store.dispose()
    pools_file = home / "pools.yaml"
    pools_file.write_text(POOLS_YAML)  # etl-workers only: the seeded "default" pool is not configured
    env = {
        "AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path),
        "AIRFLOW__PREDICTIVE__POOLS_FILE": str(pools_file),
    }
    with AirflowDeployment(home, dags, components=("api-server",), env=env) as dep:
        # Serialize the DAG without running a dag-processor: the DAG page needs it in the metadata DB.
        airflow_cli("dags", "reserialize", env=dep.env)
        yield dep, expected


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _login(page, dep: AirflowDeployment) -> None:
    page.goto(f"{dep.base_url}/auth/login")
    page.locator("input[name='username']").fill("admin")
    page.locator("input[name='password']").fill(dep.password)
    page.locator("button[type='submit']").click()
    page.wait_for_function("document.cookie.includes('_token') || location.pathname !== '/auth/login'")
    page.wait_for_load_state("networkidle")


def _chart_traces(page, series: str) -> dict:
    selector = f"div.chart[data-series='{series}']"
    page.wait_for_function(
        "sel => { const el = document.querySelector(sel); return el && el.data && el.data.length >= 4; }",
        arg=selector,
    )
    return page.evaluate(
        "sel => Object.fromEntries(document.querySelector(sel).data.map(t => [t.name, t.y]))", selector
    )


def test_page_needs_login(deployment) -> None:
    dep, _ = deployment
    for path in ("/predictive/", "/predictive/dags/ui_forecast_page", "/predictive/api/overview"):
        response = httpx.get(dep.base_url + path, timeout=30)
        assert response.status_code == 401, (path, response.status_code)
        assert "etl-workers" not in response.text
    with dep.client() as client:
        assert client.get("/predictive/api/overview").status_code == 200


def test_plugin_views_are_registered(deployment) -> None:
    dep, _ = deployment
    with dep.client() as client:
        plugins = client.get("/api/v2/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "predictive")
    destinations = {v["destination"]: v["href"] for v in ours["external_views"]}
    assert destinations == {"nav": "/predictive/", "dag": "/predictive/dags/{DAG_ID}"}
    assert ours["fastapi_apps"][0]["url_prefix"] == "/predictive"


def _layout(page, series: str) -> dict:
    _chart_traces(page, series)
    return page.evaluate(
        "sel => { const l = document.querySelector(sel).layout; return {x: l.xaxis.range, y: l.yaxis.range,"
        " slider: l.xaxis.rangeslider.visible} }",
        f"div.chart[data-series='{series}']",
    )


def _y_labels(page, series: str) -> list[str]:
    return page.evaluate(
        "sel => Array.from(document.querySelectorAll(sel + ' .ytick text')).map(t => t.textContent)",
        f"div.chart[data-series='{series}']",
    )


def test_forecast_page_in_browser(deployment, browser) -> None:
    dep, expected = deployment
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    external = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(dep.base_url) else None)
    try:
        # Not logged in: the page refuses.
        response = page.goto(f"{dep.base_url}/predictive/")
        assert response.status == 401
        _login(page, dep)

        # "now" as the seed had it: the window centres on it, whenever the test runs
        response = page.goto(f"{dep.base_url}/predictive/?now={quote(expected['now'].isoformat())}")
        assert response.status == 200
        _check_pool_page(page, expected)
        _shot(page, "forecast-page")
        _check_dag_tab(page, dep)
        _shot(page, "dag-tab")
        _check_run_view(page, dep, expected)
        _shot(page, "run-page")
        _check_run_view_of_an_airflow_run(page, dep, expected)

        # Inside Airflow's own UI: the tab on the DAG page embeds the same page.
        page.goto(f"{dep.base_url}/dags/ui_forecast_page/plugin/predictive-dag")
        frame = page.frame_locator("iframe")
        frame.locator("#ledger").wait_for(timeout=60_000)
        _shot(page, "airflow-dag-tab")
        page.goto(f"{dep.base_url}/plugin/predictive")
        page.frame_locator("iframe").locator("#ledger").wait_for(timeout=60_000)
        _shot(page, "airflow-nav-view")
    finally:
        context.close()
    assert not [u for u in external if u.startswith("http")], f"page reached outside: {external}"


def _check_pool_page(page, expected: dict) -> None:
    traces = _chart_traces(page, SERIES)
    assert traces["forecast mean"] == pytest.approx(expected["means"], abs=0.01)
    assert traces["upper q0.95"] == pytest.approx([m + 4 * 0.95 for m in expected["means"]], abs=0.01)
    assert traces["provisioned"][-1] == pytest.approx(16.0)
    assert len(traces["actions"]) == 2
    # configured pool first; the unconfigured "default" pool folded below it
    pools = page.locator("h2.pool").evaluate_all("els => els.map(e => e.dataset.pool)")
    assert pools == [POOL, "default"]
    other = page.locator("details.other-pools")
    assert (
        other.evaluate("d => d.open") is False
        and not page.locator("h2.pool[data-pool='default']").is_visible()
    )
    # the window is centred on now and zoomable; the forecast reaches 115 min ahead
    layout = _layout(page, SERIES)
    start, end = (datetime.fromisoformat(x.replace(" ", "T")) for x in layout["x"])
    assert end - start == timedelta(minutes=230) and layout["slider"] is True
    # a storage series of a few KiB: drawn on a 0..1 GiB axis, no micro-units
    other.locator("summary").click()
    assert page.locator("h2.pool[data-pool='default']").is_visible()
    assert _layout(page, UNCONFIGURED)["y"] == [0, 1]
    labels = _y_labels(page, UNCONFIGURED)
    assert labels and not any("µ" in t or "m" in t for t in labels), labels
    # each reason one line; the whole reason on a click
    ledger = page.locator("#ledger tbody tr")
    assert ledger.count() == 2
    text = page.locator("#ledger").inner_text()
    for line in expected["summaries"]:
        assert line in text
    detail = page.locator("#ledger details.reason .detail")
    assert detail.count() == 1 and not detail.is_visible()
    page.locator("#ledger details.reason summary").click()
    assert detail.is_visible() and expected["reasons"][0] in detail.inner_text()
    assert "quota exceeded in zone" in text and "spot" in text and "applied" in text
    accuracy = page.locator("table.accuracy").first.inner_text()
    assert "0.82" in accuracy and "0.93" in accuracy
    assert "forecast_and_scale" in page.locator(f"h2.pool[data-pool='{POOL}']").inner_text()
    # learning state, slots and queue wait of the configured pool
    learning = page.locator(f"section.pool[data-pool='{POOL}'] table.learning").inner_text()
    # a pool that states no service level buys the default: no more unmet demand than reactive
    assert "short history" in learning and RULE in learning
    assert "unmet demand no higher than the reactive rule's" in learning
    assert "Task slots bind (2 instances x 8 slots)" in page.locator(".binding-slots").inner_text()
    assert "p50 30 s" in page.locator(f"section.pool[data-pool='{POOL}'] .queue-wait").inner_text()
    assert _chart_traces(page, SERIES.replace("cpu", "slots"))["provisioned"][-1] == pytest.approx(16.0)
    # behaviour: the hour-of-week heatmap, and tables
    heat = page.locator(f"div.heatmap[data-series='pool:{POOL}']")
    heat.locator(".main-svg").first.wait_for()
    assert heat.evaluate("el => el.data[0].type") == "heatmap"
    assert "peak_hours" in page.locator("div.summary[data-kind='timing']").inner_text()


def _check_dag_tab(page, dep) -> None:
    response = page.goto(f"{dep.base_url}/predictive/dags/ui_forecast_page")
    assert response.status == 200
    _chart_traces(page, SERIES)
    runs = page.locator("#upcoming-runs tbody tr")
    n = runs.count()
    assert n >= 4  # "0 */6 * * *" over 24 h (and one overdue if the scheduler has not created it)
    times = [t.replace("(overdue)", "").strip() for t in runs.all_inner_texts()]
    assert all(len(t) == len("2026-12-02 18:00") for t in times), times  # to the minute
    assert "interval start" not in page.locator("#upcoming-runs").inner_text()  # a cron trigger: start = end
    timeline = page.locator("div.timeline")
    timeline.locator(".main-svg").first.wait_for()
    bars = timeline.evaluate("el => el.data.map(t => [t.name, t.base.length, t.customdata[0]])")
    assert [(name, count) for name, count, _ in bars] == [("extract", n), ("transform", n)]
    assert "expects 2 vCPU, 4 GiB" in bars[0][2] and "expects 4 vCPU, 8 GiB" in bars[1][2]
    tasks = {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(4).inner_text()
        for row in page.locator("#dag-tasks tbody tr").all()
    }
    assert tasks == {"extract": "2", "transform": "4"}  # the tasks' cpu resource hints
    assert POOL in page.locator("#dag-tasks").inner_text()  # queue etl-workers = the capacity pool


def _check_run_view(page, dep, expected: dict) -> None:
    run_id = quote(expected["run_id"], safe="")
    response = page.goto(f"{dep.base_url}/predictive/runs/predictive_scaling/{run_id}?task_id=allocate")
    assert response.status == 200
    forecasts = page.locator("#run-forecasts tbody tr")
    assert forecasts.count() == 1 and "ETS" in forecasts.inner_text()
    assert RULE in page.locator("#run-plans").inner_text()
    assert page.locator("#ledger tbody tr").count() == 2
    assert page.locator("h2.pool").count() == 0  # the run, not the pools' pages


def _check_run_view_of_an_airflow_run(page, dep, expected: dict) -> None:
    # A run Airflow knows: its window comes from the metadata database (queued, no scheduler here:
    # from its run_after until now), not from its id.
    due = (expected["now"] - timedelta(minutes=70)).isoformat()
    with dep.client() as client:
        response = client.post(
            "/api/v2/dags/ui_forecast_page/dagRuns", json={"logical_date": due, "run_after": due}
        )
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    response = page.goto(f"{dep.base_url}/predictive/runs/ui_forecast_page/{quote(run_id, safe='')}")
    assert response.status == 200
    assert f"between {due[:10]} {due[11:16]}" in page.locator(".meta").first.inner_text()
    issued = page.locator("#run-forecasts tbody tr").all_inner_texts()
    assert any("ETS" in row for row in issued), issued  # the forecast issued an hour before now
    assert RULE in page.locator("#run-plans").inner_text()

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
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from airflow_predictive.store import ProfileStore
from tests.airflow_harness import AirflowDeployment, airflow_cli
from tests.ui.seed import POOL, RUN_ID, SERIES, seed

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
    env = {"AIRFLOW__PREDICTIVE__STORE_PATH": str(store_path)}
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

        response = page.goto(f"{dep.base_url}/predictive/")
        assert response.status == 200
        traces = _chart_traces(page, SERIES)
        assert traces["forecast mean"] == pytest.approx(expected["means"])
        assert traces["upper q0.95"] == pytest.approx([m + 4 * 0.95 for m in expected["means"]])
        assert traces["provisioned"][-1] == pytest.approx(16.0)
        assert len(traces["actions"]) == 2
        ledger = page.locator("#ledger tbody tr")
        assert ledger.count() == 2
        text = page.locator("#ledger").inner_text()
        for reason in expected["reasons"]:
            assert reason in text
        assert "quota exceeded in zone" in text and "spot" in text and "applied" in text
        accuracy = page.locator("table.accuracy").inner_text()
        assert "0.82" in accuracy and "0.93" in accuracy
        assert "forecast_and_scale" in page.locator(f"h2.pool[data-pool='{POOL}']").inner_text()
        assert "peak_hours" in page.locator("div.summary[data-kind='timing']").inner_text()
        _shot(page, "forecast-page")

        # The DAG tab and the run page an operator extra link opens.
        response = page.goto(f"{dep.base_url}/predictive/dags/ui_forecast_page")
        assert response.status == 200
        _chart_traces(page, SERIES)
        assert page.locator("#upcoming-runs tbody tr").count() >= 4  # "0 */6 * * *" over 24 h
        tasks = {
            row.locator("td").nth(0).inner_text(): row.locator("td").nth(4).inner_text()
            for row in page.locator("#dag-tasks tbody tr").all()
        }
        assert tasks == {"extract": "2", "transform": "4"}  # the tasks' cpu resource hints
        assert POOL in page.locator("#dag-tasks").inner_text()  # queue etl-workers = the capacity pool
        _shot(page, "dag-tab")
        response = page.goto(
            f"{dep.base_url}/predictive/runs/predictive_scaling/{quote(RUN_ID, safe='')}?task_id=allocate"
        )
        assert response.status == 200
        assert page.locator("#ledger tr.this-run").count() == 2
        _shot(page, "run-page")

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

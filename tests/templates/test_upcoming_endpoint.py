"""The upcoming-work endpoint on a real Airflow API server, through the provider's plugin mount.

A real api-server and dag-processor parse ``tests/templates/dags`` (cron, preset, custom timetable
registered by a test plugin, asset-triggered, a broken timetable, a DAG with a misspelt stage); the
test reads ``/predictive/api/upcoming`` with a token and checks the next runs against the schedules
computed independently here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.airflow_harness import AirflowDeployment

HERE = Path(__file__).resolve().parent
DAG_IDS = [
    "template_asset",
    "template_broken_timetable",
    "template_cron",
    "template_custom",
    "template_preset",
]
HORIZON = timedelta(hours=24)

pytestmark = pytest.mark.integration


def slots(start: datetime, end: datetime, hours: set[int] | None, minute: int) -> list[str]:
    """Every whole minute in [start, end) at ``minute`` past one of ``hours`` (None: every hour)."""
    t = start.replace(second=0, microsecond=0)
    if t < start:
        t += timedelta(minutes=1)
    out = []
    while t < end:
        if t.minute == minute and (hours is None or t.hour in hours):
            out.append(t.isoformat())
        t += timedelta(minutes=1)
    return out


def upcoming(now: datetime, hours: set[int] | None, minute: int) -> list[str]:
    """The slots the endpoint lists as not overdue: from ``now`` (a slot before it is overdue) to
    ``now + HORIZON`` inclusive."""
    return slots(now, now + HORIZON + timedelta(microseconds=1), hours, minute)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    home = tmp_path_factory.mktemp("upcoming-airflow")
    env = {"AIRFLOW__CORE__PLUGINS_FOLDER": str(HERE / "plugins")}
    with AirflowDeployment(home, HERE / "dags", components=("api-server", "dag-processor"), env=env) as dep:
        for dag_id in DAG_IDS:
            dep.wait_for_dag(dag_id, timeout=150)
        yield dep


def test_endpoint_requires_airflow_authentication(airflow):
    response = httpx.get(f"{airflow.base_url}/predictive/api/upcoming", timeout=30)
    assert response.status_code == 401


def test_endpoint_lists_next_runs_of_cron_preset_and_custom_timetables(airflow):
    with airflow.client() as client:
        response = client.get("/predictive/api/upcoming", params={"horizon_minutes": 24 * 60})
    assert response.status_code == 200, response.text
    body = response.json()
    now = datetime.fromisoformat(body["now"])
    dags = {d["dag_id"]: d for d in body["dags"]}
    runs = {dag_id: [r["run_after"] for r in d["upcoming"] if not r["overdue"]] for dag_id, d in dags.items()}
    # No scheduler runs here, so the slot the scheduler would create right away is listed as overdue:
    # with catchup=False a cron DAG runs its latest missed slot as of parsing, and every slot since
    # (two when a slot passed between parsing and this request): a run of the latest past slots.
    overdue = {dag_id: [r["run_after"] for r in d["upcoming"] if r["overdue"]] for dag_id, d in dags.items()}
    past_cron = slots(now - timedelta(hours=24), now, {0, 6, 12, 18}, 15)
    assert len(overdue["template_cron"]) <= 2
    assert overdue["template_cron"] == past_cron[len(past_cron) - len(overdue["template_cron"]) :]
    assert overdue["template_custom"] == []

    assert runs["template_cron"] == upcoming(now, {0, 6, 12, 18}, 15)  # "15 */6 * * *"
    assert runs["template_preset"] == upcoming(now, None, 0)  # "@hourly"
    assert runs["template_custom"] == upcoming(now, {6, 18}, 0)  # TwiceDailyTimetable from the plugin
    assert dags["template_custom"]["timetable"] == "twice daily at 06:00 and 18:00 UTC"
    assert len(runs["template_preset"]) == 24

    asset = dags["template_asset"]
    assert (asset["schedule_kind"], asset["asset_triggered"], asset["upcoming"]) == (
        "asset_triggered",
        True,
        [],
    )

    (skipped,) = [s for s in body["skipped"] if s["dag_id"] == "template_broken_timetable"]
    assert "business calendar service unreachable" in skipped["reason"]
    assert "template_broken_timetable" not in dags

    assert body["limits"]["pools"]["default_pool"] == 128


def test_endpoint_gives_each_task_its_pool_and_resource_hints(airflow):
    with airflow.client() as client:
        body = client.get(
            "/predictive/api/upcoming/template_cron", params={"horizon_minutes": 60 * 12}
        ).json()
        preset = client.get("/predictive/api/upcoming/template_preset").json()
    (dag,) = body["dags"]
    tasks = {t["task_id"]: t for t in dag["tasks"]}
    train = tasks["train"]
    assert (train["template"], train["stage"], train["source"]) == ("short_training", "train", "template")
    assert (train["cpu"], train["memory_gib"], train["capacity_pool"]) == (16.0, 32.0, "train-pool")
    assert train["resources"] == {"cpus": 16.0, "ram_mb": 32768.0, "disk_mb": 0.0, "gpus": 0.0}
    assert train["pool"] == "default_pool" and train["upstream"] == ["prepare"]
    assert dag["max_active_runs"] == 1
    (crunch,) = preset["dags"][0]["tasks"]
    assert (crunch["source"], crunch["cpu"], crunch["memory_gib"]) == ("resources", 3.0, 6.0)


def test_dag_with_misspelt_stage_shows_in_import_errors_naming_template_and_stage(airflow):
    with airflow.client() as client:
        errors = client.get("/api/v2/importErrors").json()["import_errors"]
    (error,) = [e for e in errors if e["filename"].endswith("template_bad_stage.py")]
    assert "workflow template 'etl_batch' has no stage 'transfrom'" in error["stack_trace"]

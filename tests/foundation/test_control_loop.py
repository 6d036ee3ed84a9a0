"""The control-loop DAG parses under Airflow 3.3 and runs end to end through ``airflow dags test``."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_control_loop_dag_parses_with_no_import_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["predictive_scaling"]
    assert [t.task_id for t in dag.tasks] == [
        "profile",
        "series_chunks",
        "forecast",
        "pool_chunks",
        "allocate",
        "evaluate",
        "close_evaluation",
    ]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.timetable.delta == timedelta(minutes=5)
    # Forecast, allocation and evaluation fan out over the executor's workers, chunk by chunk.
    assert type(dag.get_task("forecast")).__name__ == "MappedOperator"
    assert type(dag.get_task("allocate")).__name__ == "MappedOperator"
    assert type(dag.get_task("evaluate")).__name__ == "MappedOperator"
    assert dag.get_task("allocate").upstream_task_ids == {"forecast", "pool_chunks"}
    # Evaluation scores buckets that ended before the cycle: it runs beside allocation, after the
    # forecast (whose model-state writes its recalibration must not race), and yields it the workers.
    assert dag.get_task("evaluate").upstream_task_ids == {"forecast", "series_chunks"}
    assert dag.get_task("close_evaluation").upstream_task_ids == {"allocate", "evaluate"}
    assert dag.get_task("allocate").priority_weight > dag.get_task("evaluate").priority_weight


@pytest.mark.integration
def test_demo_runs_the_control_loop_and_applies_a_plan_to_the_emulator(tmp_path, monkeypatch):
    """`make demo` in small: generated history -> simulated cycles -> airflow dags test -> forecasts,
    ledger, emulator VMs, and a report whose accuracy tables the simulated cycles filled."""
    from airflow_predictive_tools.demo.runner import run_demo

    from airflow_predictive.feedback import pages
    from airflow_predictive.store import ProfileStore

    out = io.StringIO()
    result = run_demo(tmp_path / "demo", days=5, day_hours=2, cycle_minutes=30, out=out)
    text = out.getvalue()

    assert result["day"]["cycles"] == 4
    store = ProfileStore.sqlite(tmp_path / "demo" / "profile.db")
    try:
        # four simulated cycles and the real run each recorded the capacity they planned, per pool
        assert store.capacity(pool="etl-workers")["ts"].nunique() == 5
        # the simulated cycles' forecasts were scored: the page's accuracy table has numbers
        page = pages.collect(store, pools=["etl-workers"])
        cpu = next(b for b in page["pools"][0]["resources"] if b["resource"] == "cpu")
        assert cpu["accuracy"]["day"]["coverage"] is not None
    finally:
        store.dispose()

    configured = [s for s in result["series"] if s.startswith(("pool=etl-workers/", "pool=ml-training/"))]
    assert len(configured) == 10  # cpu, memory, storage, network and slots of each pool
    assert set(configured) <= set(result["forecast_series"])  # every configured pool's series forecast
    ledger = result["actions"]
    applied = [a for a in ledger if a["pool"] == "etl-workers" and a["status"] == "applied"]
    assert applied, f"no applied action for etl-workers: {ledger}"
    assert all(a["status"] in ("applied", "dry_run") for a in ledger)  # none left half-done
    assert all(a["status"] == "dry_run" for a in ledger if a["pool"] == "ml-training")  # forecast_only pool
    assert any(name.startswith("etl-workers") for name, _status, _model in result["instances"])
    assert set(result["backtest"]["policies"]) == {"reactive", "seasonal", "predictive", "oracle"}
    # the partner sync's 30-wide fan-outs hold more 8-slot workers than its CPU or memory needs
    assert result["binding"]["etl-workers"]["binding"] == "slots"
    assert "etl-workers is slot-bound" in text
    assert Path(result["report"]).stat().st_size > 10_000
    assert "why:" in text and "report page:" in text

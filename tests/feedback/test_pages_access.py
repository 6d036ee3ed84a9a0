"""The page a user sees who may read a DAG but not every DAG: the DAG's work, no pool-wide data."""

from __future__ import annotations

from airflow_predictive.feedback import pages

WORK = {"horizon_minutes": 60, "dags": [], "skipped": []}


def _data(**extra) -> dict:
    return {
        "generated_at": "2026-12-01T00:00:00+00:00",
        "history_hours": 24,
        "dag_id": "d",
        "pools": [],
        "ledger": [],
    } | extra


def test_restricted_page_shows_the_notice_instead_of_pools_and_ledger() -> None:
    html = pages.render_page(
        _data(restricted="needs read access on every DAG"), plotly_src="/p.js", upcoming=WORK
    )
    assert 'class="restricted"' in html and "needs read access on every DAG" in html
    assert "<h2>Action ledger</h2>" not in html and "<h2>Learned behaviour</h2>" not in html
    assert "No demand, forecasts or capacity stored yet" not in html


def test_unrestricted_page_keeps_ledger_and_learned_behaviour() -> None:
    html = pages.render_page(_data(), plotly_src="/p.js", upcoming=WORK)
    assert (
        "<h2>Action ledger</h2>" in html
        and "<h2>Learned behaviour</h2>" in html
        and 'class="restricted"' not in html
    )

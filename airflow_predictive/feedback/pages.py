"""Forecast page: gather what the store holds for the UI and render it with plotly (one code path).

:func:`collect` reads the profile store into a JSON-able dict (per pool and resource: demand history,
latest forecast mean and upper quantile, provisioned capacity, actions; the ledger; accuracy over the
last day and week; the mode; behaviour summaries). :func:`render_page` turns that dict into HTML with
one plotly chart per pool and resource. The API-server page and the ``make demo`` report
(:func:`airflow_predictive.feedback.report.write_report`) both call these two functions; only where
plotly.js comes from differs (served from the installed package, or inlined).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from airflow_predictive.contracts.demand import RESOURCES, parse_series_id
from airflow_predictive.contracts.stores import ForecastPageStore, LedgerReader
from airflow_predictive.feedback import evaluation
from airflow_predictive.feedback.evaluation import provisioning_level

# Behaviour summaries the profiling room stores (``store.summaries(kind)``); shown when present.
SUMMARY_KINDS: tuple[str, ...] = ("timing", "users", "application", "data_access", "queue_pressure")


def _iso(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).tz_convert("UTC").isoformat() if not isinstance(value, str) else value


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(number) else round(number, 6)


def _pool_of(series: str) -> tuple[str, str] | None:
    try:
        key = parse_series_id(series)
    except ValueError:
        return None
    return key.pool, key.resource


def ledger(
    store: LedgerReader, *, pool: str | None = None, since: datetime | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Newest-first action ledger rows (kind, amount, spot/standard, reason, status, error).

    :param store: the ProfileStore.
    :param pool: only this pool.
    :param since: only actions created at or after this time.
    :param limit: at most this many rows.
    """
    frame = store.actions(pool=pool, since=since)
    return _ledger_rows(frame, limit)


def _ledger_rows(frame: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    frame = frame.sort_values(["created_at", "request_id"], ascending=False).head(max(0, limit))
    return [
        {
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
            "pool": row["pool"],
            "resource": row["resource"],
            "kind": row["kind"],
            "amount": _num(row["amount"]),
            "provisioning": row["provisioning"],
            "target": row["target"] or "",
            "reason": row["reason"],
            "status": row["status"],
            "error": row["error"] or "",
            "plan_id": row["plan_id"],
            "request_id": row["request_id"],
        }
        for row in frame.to_dict("records")
    ]


def accuracy(evaluations: pd.DataFrame, now: datetime, level: float) -> dict[str, dict[str, float | None]]:
    """Mean scores over the last day and week: MASE, coverage of the provisioning quantile, unmet, idle.

    :param evaluations: ``store.evaluations()`` rows of one series.
    :param now: the end of both windows.
    :param level: the provisioning quantile whose coverage to show.
    """
    wanted = {
        "mase": evaluation.MASE,
        "coverage": evaluation.coverage_metric(level),
        "unmet_demand": evaluation.UNMET_DEMAND,
        "idle_capacity": evaluation.IDLE_CAPACITY,
    }
    result: dict[str, dict[str, float | None]] = {}
    for window, span in (("day", timedelta(days=1)), ("week", timedelta(days=7))):
        recent = evaluations[
            (evaluations["window_end"] > pd.Timestamp(now - span))
            & (evaluations["window_end"] <= pd.Timestamp(now))
            & (evaluations["horizon_minutes"] == evaluation.ALL_HORIZONS)
        ]
        result[window] = {
            name: _num(recent.loc[recent["metric"] == metric, "value"].mean())
            for name, metric in wanted.items()
        }
    return result


def collect(
    store: ForecastPageStore,
    *,
    pools: Sequence[str] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    now: datetime | None = None,
    history: timedelta = timedelta(hours=24),
    ledger_limit: int = 200,
    default_mode: str = "forecast_only",
) -> dict[str, Any]:
    """Everything the forecast page shows, as plain JSON-able data.

    :param store: the ProfileStore to read.
    :param pools: only these capacity pools (default: every pool with demand, forecasts or capacity).
    :param dag_id: the DAG whose tab this is (shown in the title; its upcoming runs come from the browser).
    :param run_id: the DAG run an extra link points at: its actions are highlighted first in the ledger.
    :param task_id: the task of that run the link came from.
    :param now: the page's "now" (default: the current time).
    :param history: how much demand and capacity history to draw.
    :param default_mode: the mode shown for a pool with no plan yet (``[predictive] default_mode``).
    :param ledger_limit: newest ledger rows to list.
    """
    now = now or datetime.now(UTC)
    start = now - history
    week = now - timedelta(days=7)
    pool_filter = list(pools) if pools else None

    demand = store.demand(store.series_ids(pool_filter), start=start, end=now + timedelta(minutes=1))
    forecast = store.latest_forecasts(pools=pool_filter)
    capacity = store.capacity(since=start)
    actions = store.actions(since=week)
    plans = store.plans(since=week)
    evaluations = store.evaluations(since=week)
    if pool_filter:
        capacity = capacity[capacity["pool"].isin(pool_filter)] if not capacity.empty else capacity
        actions = actions[actions["pool"].isin(pool_filter)] if not actions.empty else actions
        plans = plans[plans["pool"].isin(pool_filter)] if not plans.empty else plans

    keys: set[tuple[str, str]] = set()
    for frame in (demand, forecast):
        if not frame.empty:
            keys.update(k for k in map(_pool_of, frame["series_id"].unique()) if k)
    if not capacity.empty:
        keys.update(zip(capacity["pool"], capacity["resource"], strict=True))
    if pool_filter:
        keys = {k for k in keys if k[0] in pool_filter}

    pools_out = []
    for pool in sorted({k[0] for k in keys}):
        level = provisioning_level(plans, pool)
        pool_plans = plans[plans["pool"] == pool] if not plans.empty else plans
        mode = str(pool_plans.iloc[-1]["mode"]) if not pool_plans.empty else default_mode
        resources = []
        for resource in sorted(r for p, r in keys if p == pool):
            series = f"pool={pool}/resource={resource}"
            resources.append(
                _series_block(
                    series, pool, resource, demand, forecast, capacity, actions, evaluations, now, level
                )
            )
        pools_out.append({"pool": pool, "mode": mode, "provisioning_level": level, "resources": resources})

    rows = _ledger_rows(actions, ledger_limit)
    if run_id:
        # Actions of the linked run first: plan ids and details name the run that made them.
        rows.sort(key=lambda r: run_id not in (r["plan_id"] or ""))

    summaries = {}
    for kind in SUMMARY_KINDS:
        try:
            found = store.summaries(kind)
        except Exception:  # an older store without summaries: the page still renders
            found = {}
        if found:
            summaries[kind] = found

    return {
        "generated_at": now.isoformat(),
        "history_hours": history.total_seconds() / 3600,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "pools": pools_out,
        "ledger": rows,
        "summaries": summaries,
        "store": getattr(store, "display_url", ""),
    }


def _series_block(
    series: str,
    pool: str,
    resource: str,
    demand: pd.DataFrame,
    forecast: pd.DataFrame,
    capacity: pd.DataFrame,
    actions: pd.DataFrame,
    evaluations: pd.DataFrame,
    now: datetime,
    level: float,
) -> dict[str, Any]:
    d = demand[demand["series_id"] == series] if not demand.empty else demand
    f = forecast[forecast["series_id"] == series] if not forecast.empty else forecast
    c = (
        capacity[(capacity["pool"] == pool) & (capacity["resource"] == resource)]
        if not capacity.empty
        else capacity
    )
    a = (
        actions[(actions["pool"] == pool) & (actions["resource"] == resource)]
        if not actions.empty
        else actions
    )
    e = evaluations[evaluations["series_id"] == series] if not evaluations.empty else evaluations
    upper_col = f"q{level:g}"
    block: dict[str, Any] = {
        "series_id": series,
        "resource": resource,
        "unit": RESOURCES.get(resource, ""),
        "demand": {"ts": [_iso(t) for t in d.get("ts", [])], "value": [_num(v) for v in d.get("value", [])]},
        "forecast": {"ts": [], "mean": [], "upper": [], "upper_level": level, "model": "", "issued_at": None},
        "capacity": {
            "ts": [_iso(t) for t in c.get("ts", [])],
            "value": [_num(v) for v in c.get("value", [])],
        },
        "actions": _ledger_rows(a, 500),
        "accuracy": accuracy(e, now, level) if not e.empty else {},
    }
    if not f.empty:
        upper = f[upper_col] if upper_col in f else f["mean"]
        block["forecast"].update(
            ts=[_iso(t) for t in f["ts"]],
            mean=[_num(v) for v in f["mean"]],
            upper=[_num(v) for v in upper],
            model=str(f["model"].iloc[0]),
            fallback=str(f["fallback"].iloc[0] or ""),
            issued_at=_iso(f["issued_at"].iloc[0]),
        )
    return block


# ----------------------------------------------------------------------------- rendering


def figure(block: dict[str, Any]) -> Any:
    """The plotly figure of one pool resource: demand, forecast mean + upper band, capacity, actions.

    :param block: one entry of ``collect(...)["pools"][i]["resources"]``.
    """
    import plotly.graph_objects as go

    fc = block["forecast"]
    level = fc["upper_level"]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            name="demand",
            x=block["demand"]["ts"],
            y=block["demand"]["value"],
            mode="lines",
            line={"color": "#222", "width": 1.5},
        )
    )
    fig.add_trace(
        go.Scatter(
            name="forecast mean",
            x=fc["ts"],
            y=fc["mean"],
            mode="lines",
            line={"color": "#1f77b4", "width": 2},
        )
    )
    fig.add_trace(
        go.Scatter(
            name=f"upper q{level:g}",
            x=fc["ts"],
            y=fc["upper"],
            mode="lines",
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.18)",
            line={"color": "rgba(31,119,180,0.5)", "dash": "dot"},
        )
    )
    fig.add_trace(
        go.Scatter(
            name="provisioned",
            x=block["capacity"]["ts"],
            y=block["capacity"]["value"],
            mode="lines",
            line={"color": "#2ca02c", "width": 2, "shape": "hv"},
        )
    )
    acts = block["actions"]
    if acts:
        cap = pd.Series(
            block["capacity"]["value"],
            index=pd.to_datetime(block["capacity"]["ts"], utc=True, format="ISO8601"),
        )
        ys = []
        for act in acts:
            at = pd.Timestamp(act["created_at"])
            before = cap[cap.index <= at]
            ys.append(float(before.iloc[-1]) if not before.empty else (act["amount"] or 0.0))
        fig.add_trace(
            go.Scatter(
                name="actions",
                x=[a["created_at"] for a in acts],
                y=ys,
                mode="markers",
                marker={
                    "size": 11,
                    "symbol": "triangle-up",
                    "color": ["#d62728" if a["status"] == "failed" else "#ff7f0e" for a in acts],
                },
                customdata=[
                    [a["kind"], a["amount"], a["provisioning"], a["reason"], a["status"]] for a in acts
                ],
                hovertemplate=(
                    "%{customdata[0]} %{customdata[1]} (%{customdata[2]})<br>%{customdata[3]}"
                    "<br>status: %{customdata[4]}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title=f"{block['series_id']} ({block['unit']})",
        height=340,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.2},
        hovermode="x unified",
        yaxis={"title": block["unit"], "rangemode": "tozero"},
    )
    return fig


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return _esc(value)


def _ledger_table(rows: list[dict[str, Any]], run_id: str | None) -> str:
    if not rows:
        return '<p class="empty">No actions recorded yet.</p>'
    head = "".join(
        f"<th>{h}</th>"
        for h in ("time", "pool", "resource", "kind", "amount", "spot/standard", "reason", "status", "target")
    )
    body = []
    for r in rows:
        css = f"status-{_esc(r['status'])}" + (
            " this-run" if run_id and run_id in (r["plan_id"] or "") else ""
        )
        error = f'<div class="error">{_esc(r["error"])}</div>' if r["error"] else ""
        body.append(
            f'<tr class="{css}" data-request-id="{_esc(r["request_id"])}"><td>{_esc(r["created_at"])}</td>'
            f"<td>{_esc(r['pool'])}</td><td>{_esc(r['resource'])}</td><td>{_esc(r['kind'])}</td>"
            f'<td class="num">{_fmt(r["amount"])}</td><td>{_esc(r["provisioning"])}</td>'
            f"<td>{_esc(r['reason'])}{error}</td><td>{_esc(r['status'])}</td><td>{_esc(r['target'])}</td></tr>"
        )
    return f'<table id="ledger" class="ledger"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _accuracy_table(pool: dict[str, Any]) -> str:
    rows = []
    for block in pool["resources"]:
        acc = block.get("accuracy") or {}
        for window in ("day", "week"):
            values = acc.get(window) or {}
            rows.append(
                f"<tr><td>{_esc(block['resource'])}</td><td>last {window}</td>"
                f'<td class="num">{_fmt(values.get("mase"))}</td>'
                f'<td class="num">{_fmt(values.get("coverage"))}</td>'
                f'<td class="num">{_fmt(values.get("unmet_demand"))}</td>'
                f'<td class="num">{_fmt(values.get("idle_capacity"))}</td></tr>'
            )
    level = pool["provisioning_level"]
    return (
        f'<table class="accuracy"><thead><tr><th>resource</th><th>window</th><th>MASE</th>'
        f"<th>coverage of q{level:g} (target {level:g})</th><th>unmet demand</th><th>idle capacity</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _summaries_html(summaries: dict[str, Any]) -> str:
    if not summaries:
        return '<p class="empty">No behaviour summaries yet (the profiler writes them each cycle).</p>'
    return "".join(
        f'<div class="summary" data-kind="{_esc(kind)}"><h4>{_esc(kind)}</h4>{_summary_table(payloads)}</div>'
        for kind, payloads in summaries.items()
    )


#: Rows shown per kind of learned behaviour (the largest keys first would need a size per kind).
_SUMMARY_ROWS = 20


def _summary_table(payloads: dict[str, Any]) -> str:
    """One row per key (task, DAG, user, pool), one column per field of its payload."""
    rows = sorted(payloads.items())[:_SUMMARY_ROWS]
    columns = list(dict.fromkeys(f for _, value in rows if isinstance(value, dict) for f in value))
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["", *columns])
    body = "".join(
        "<tr><td>"
        + _esc(key)
        + "</td>"
        + "".join(_summary_cell(value.get(c) if isinstance(value, dict) else None) for c in columns)
        + "</tr>"
        for key, value in rows
    )
    more = len(payloads) - len(rows)
    note = f'<p class="meta">and {more} more</p>' if more > 0 else ""
    return f"<table><tr>{head}</tr>{body}</table>{note}"


def _summary_cell(value: Any) -> str:
    """A field as a reader wants it: numbers right-aligned, counts as their top entries, series as a range."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return f"<td>{_esc('' if value is None else value)}</td>"
    if isinstance(value, int | float):
        return f'<td class="num">{_fmt(value)}</td>'
    if isinstance(value, dict):
        counts = {k: v for k, v in value.items() if isinstance(v, int | float)}
        if counts and len(counts) == len(value):  # {name: count}: the three largest
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
            text = ", ".join(f"{k} ({_fmt(v)})" for k, v in top) + (" ..." if len(counts) > 3 else "")
        else:  # nested mappings (transitions): how many, the rest is in the JSON endpoint
            text = f"{len(value)} entries"
        return f"<td>{_esc(text)}</td>"
    if isinstance(value, list | tuple):
        numbers = [v for v in value if isinstance(v, int | float)]
        if len(numbers) == len(value) and len(value) > 6:  # a series (e.g. hour of week): its range
            return f"<td>{len(value)} values, mean {_fmt(sum(numbers) / len(numbers))}, max {_fmt(max(numbers))}</td>"
        return f"<td>{_esc(', '.join(str(v) for v in value))}</td>"
    return f"<td>{_esc(value)}</td>"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1b1f23;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:17px;margin:24px 0 6px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 4px} h4{margin:8px 0 2px;font-size:13px}
.meta{color:#666;font-size:12px} .mode{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px}
.mode-forecast_only{background:#fff3cd} .mode-forecast_and_scale{background:#d4edda}
table{border-collapse:collapse;font-size:12px;margin:6px 0} th,td{border:1px solid #ddd;padding:3px 6px}
th{background:#f5f5f5;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.status-failed td{background:#fde8e8} tr.this-run td{font-weight:600} .error{color:#b00;font-size:11px}
.empty{color:#777;font-style:italic} .chart{min-height:340px} code{font-size:11px}
"""

_SCRIPT = """
document.querySelectorAll('script.figure-data').forEach(function (node) {
  var spec = JSON.parse(node.textContent);
  Plotly.newPlot(node.dataset.target, spec.data, spec.layout, {responsive: true, displaylogo: false});
});
"""


def _upcoming_html(dag_id: str, work: dict[str, Any]) -> str:
    """Scheduled runs in the horizon, and each task's pool, template/stage and resource hints."""
    head = f"<h2>Upcoming runs of {_esc(dag_id)} in the next {work.get('horizon_minutes', '?')} min</h2>"
    if work.get("error"):
        return head + f'<p class="empty">{_esc(work["error"])}</p>'
    dags = [d for d in work.get("dags", []) if d.get("dag_id") == dag_id]
    if not dags:
        return head + '<p class="empty">No serialized DAG yet.</p>'
    dag = dags[0]
    runs = "".join(
        f"<tr><td>{_esc(r.get('run_after'))}</td><td>{_esc(r.get('data_interval_start'))}</td>"
        f"<td>{_esc(r.get('data_interval_end'))}</td></tr>"
        for r in dag.get("upcoming", [])
    )
    runs_html = (
        f'<table id="upcoming-runs"><thead><tr><th>run after</th><th>interval start</th><th>interval end</th>'
        f"</tr></thead><tbody>{runs}</tbody></table>"
        if runs
        else f'<p class="empty">No scheduled run in the horizon ({_esc(dag.get("schedule_kind"))}).</p>'
    )
    cols = (
        "task_id",
        "capacity_pool",
        "template",
        "stage",
        "cpu",
        "memory_gib",
        "storage_gib",
        "network_mbps",
        "duration_s",
        "source",
    )
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if isinstance(t.get(c), float) else ""}">{_fmt(t.get(c))}</td>' for c in cols
        )
        + "</tr>"
        for t in dag.get("tasks", [])
    )
    tasks_html = (
        '<h3>Tasks: templates, stages and resource hints</h3><table id="dag-tasks"><thead><tr>'
        + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
        + f"</tr></thead><tbody>{rows}</tbody></table>"
    )
    return head + f'<div class="meta">schedule {_esc(dag.get("timetable"))}</div>' + runs_html + tasks_html


def _script_json(value: Any) -> str:
    # Inside <script>, "</" would end the element: escape it (and the HTML comment openers).
    return json.dumps(value, default=str).replace("</", "<\\/").replace("<!--", "<\\!--")


def _pool_parts(data: dict[str, Any]) -> list[str]:
    """Each pool's charts and accuracy, the action ledger and learned behaviour, as HTML fragments."""
    parts: list[str] = []
    if not data["pools"]:
        parts.append(
            '<p class="empty">No demand, forecasts or capacity stored yet: run the control loop.</p>'
        )
    for pool in data["pools"]:
        parts.append(
            f'<h2 class="pool" data-pool="{_esc(pool["pool"])}">Pool {_esc(pool["pool"])} '
            f'<span class="mode mode-{_esc(pool["mode"])}">{_esc(pool["mode"])}</span></h2>'
        )
        for block in pool["resources"]:
            fc = block["forecast"]
            div_id = "chart-" + "".join(ch if ch.isalnum() else "-" for ch in block["series_id"])
            spec = json.loads(figure(block).to_json())
            parts.append(
                f'<div class="meta">model {_esc(fc.get("model") or "–")}'
                + (f" (fallback {_esc(fc.get('fallback'))})" if fc.get("fallback") else "")
                + f" · issued {_esc(fc.get('issued_at') or '–')}</div>"
                f'<div id="{div_id}" class="chart" data-series="{_esc(block["series_id"])}"></div>'
                f'<script type="application/json" class="figure-data" data-target="{div_id}">'
                f"{_script_json(spec)}</script>"
            )
        parts.append("<h3>Accuracy</h3>" + _accuracy_table(pool))
    parts.append("<h2>Action ledger</h2>" + _ledger_table(data["ledger"], data.get("run_id")))
    parts.append("<h2>Learned behaviour</h2>" + _summaries_html(data.get("summaries") or {}))
    return parts


def render_page(
    data: dict[str, Any],
    *,
    plotly_src: str | None = None,
    plotly_inline: str | None = None,
    upcoming: dict[str, Any] | None = None,
    title: str = "Predictive capacity",
) -> str:
    """Render :func:`collect` output as one HTML page with a plotly chart per pool resource.

    :param data: what :func:`collect` returned; with a ``restricted`` message, the page shows that
        message instead of the pools' charts, the ledger and learned behaviour.
    :param plotly_src: URL of plotly.js (the API server serves the installed package's copy).
    :param plotly_inline: plotly.js source to inline instead (self-contained report file).
    :param upcoming: the DAG's upcoming runs and task hints (``plugins.upcoming.collect``) for the DAG tab.
    :param title: page title.
    """
    if plotly_inline is not None:
        plotly_tag = f"<script>{plotly_inline}</script>"
    elif plotly_src:
        plotly_tag = f'<script src="{_esc(plotly_src)}"></script>'
    else:
        raise ValueError("render_page needs plotly_src (a URL) or plotly_inline (the plotly.js source)")
    heading = title
    if data.get("dag_id"):
        heading += f" — DAG {data['dag_id']}"
    if data.get("run_id"):
        heading += f" — run {data['run_id']}"
    parts = [
        f"<h1>{_esc(heading)}</h1>",
        f'<div class="meta">generated {_esc(data["generated_at"])} · history {data["history_hours"]:g} h'
        f" · store {_esc(data.get('store', ''))}</div>",
    ]
    if data.get("dag_id") and upcoming is not None:
        parts.append(_upcoming_html(data["dag_id"], upcoming))
    if data.get("restricted"):
        # The viewer may not see pool-wide data (see plugins.app): say so instead of an empty page.
        parts.append(f'<p class="restricted">{_esc(data["restricted"])}</p>')
    else:
        parts.extend(_pool_parts(data))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style>{plotly_tag}</head><body>"
        + "".join(parts)
        + f"<script>{_SCRIPT}</script></body></html>"
    )

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
from typing import Any, NamedTuple

import pandas as pd

from airflow_predictive.contracts.demand import RESOURCES, parse_series_id
from airflow_predictive.contracts.pools import CapacityPool
from airflow_predictive.contracts.stores import ForecastPageStore, LedgerReader
from airflow_predictive.feedback import evaluation, learning, presentation, timeline
from airflow_predictive.feedback.evaluation import provisioning_level

# Behaviour summaries the profiling room stores (``store.summaries(kind)``); shown when present.
SUMMARY_KINDS: tuple[str, ...] = ("timing", "users", "application", "data_access", "queue_pressure")
#: The feedback loop's service-level choices (``{pool: choice}``): shown per pool, not as behaviour.
CHOICE_KIND = "service_level_choice"


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
    configured: Sequence[CapacityPool] | None = None,
    interval: timedelta = timedelta(minutes=5),
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
    :param configured: the pools of the pools file (shown first, the others folded; their task slots per
        instance); None: no pools file, nothing folded.
    :param interval: the demand bucket width (``[predictive] interval_minutes``).
    """
    now = now or datetime.now(UTC)
    start = now - history
    week = now - timedelta(days=7)
    pool_filter = list(pools) if pools else None

    demand = store.demand(
        store.series_ids(pool_filter),
        start=min(start, now - learning.LOOKBACK),
        end=now + timedelta(minutes=1),
    )
    forecast = store.latest_forecasts(pools=pool_filter)
    capacity = _only(store.capacity(since=start), pool_filter)
    actions = _only(store.actions(since=week), pool_filter)
    plans = _only(store.plans(since=week), pool_filter)
    evaluations = store.evaluations(since=week)
    summaries = _summaries(store)
    frames = _Frames(demand, forecast, capacity, actions, plans, evaluations)
    by_name = {p.name: p for p in configured or ()}

    pools_out = [
        _pool_entry(pool, resources, frames, now, start, default_mode, by_name.get(pool), summaries, interval)
        for pool, resources in _pool_resources(frames, pool_filter).items()
    ]
    rows = _ledger_rows(actions, ledger_limit)
    if run_id:
        # Actions of the linked run first: plan ids and details name the run that made them.
        rows.sort(key=lambda r: run_id not in (r["plan_id"] or ""))

    return {
        "generated_at": now.isoformat(),
        "history_hours": history.total_seconds() / 3600,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "pools": presentation.order_pools(pools_out, [p.name for p in configured] if configured else None),
        "ledger": rows,
        "summaries": summaries,
        "store": getattr(store, "display_url", ""),
    }


class _Frames(NamedTuple):
    demand: pd.DataFrame
    forecast: pd.DataFrame
    capacity: pd.DataFrame
    actions: pd.DataFrame
    plans: pd.DataFrame
    evaluations: pd.DataFrame


def _only(frame: pd.DataFrame, pools: Sequence[str] | None) -> pd.DataFrame:
    return frame[frame["pool"].isin(pools)] if pools and not frame.empty else frame


def _summaries(store: ForecastPageStore) -> dict[str, Any]:
    summaries = {}
    for kind in (*SUMMARY_KINDS, CHOICE_KIND):
        try:
            found = store.summaries(kind)
        except Exception:  # an older store without summaries: the page still renders
            found = {}
        if found:
            summaries[kind] = found
    return summaries


def _of_pool(frame: pd.DataFrame, pool: str) -> pd.DataFrame:
    """The rows of ``pool``'s series (matched per distinct series id: the frame has days of rows)."""
    if frame.empty:
        return frame
    ids = [s for s in frame["series_id"].unique() if (_pool_of(s) or ("",))[0] == pool]
    return frame[frame["series_id"].isin(ids)]


def _pool_resources(frames: _Frames, pool_filter: Sequence[str] | None) -> dict[str, list[str]]:
    """Every pool the store knows (demand, forecasts or capacity) and its resources, sorted."""
    keys: set[tuple[str, str]] = set()
    for frame in (frames.demand, frames.forecast):
        if not frame.empty:
            keys.update(k for k in map(_pool_of, frame["series_id"].unique()) if k)
    if not frames.capacity.empty:
        keys.update(zip(frames.capacity["pool"], frames.capacity["resource"], strict=True))
    if pool_filter:
        keys = {k for k in keys if k[0] in pool_filter}
    return {pool: sorted(r for p, r in keys if p == pool) for pool in sorted({k[0] for k in keys})}


def _pool_entry(
    pool: str,
    resources: list[str],
    frames: _Frames,
    now: datetime,
    start: datetime,
    default_mode: str,
    config: CapacityPool | None,
    summaries: dict[str, Any],
    interval: timedelta,
) -> dict[str, Any]:
    """One pool's charts, mode, learning state, binding resource and measured queue wait."""
    level = provisioning_level(frames.plans, pool)
    pool_plans = frames.plans[frames.plans["pool"] == pool] if not frames.plans.empty else frames.plans
    mode = str(pool_plans.iloc[-1]["mode"]) if not pool_plans.empty else default_mode
    prefix = f"pool={pool}/"
    demand, forecast = _of_pool(frames.demand, pool), _of_pool(frames.forecast, pool)
    recent = demand[demand["ts"] >= pd.Timestamp(start)] if not demand.empty else demand
    blocks = [
        _series_block(
            f"{prefix}resource={r}",
            pool,
            r,
            recent,
            forecast,
            frames.capacity,
            frames.actions,
            frames.evaluations,
            now,
            level,
        )
        for r in resources
    ]
    target = config.service_level.queue_wait_p95_seconds if config else None
    promises = [config.service_level.describe()] if config else []
    # the level's words name the wait target; the page also says how it is judged live
    promises += ["queue wait judged live over the trailing hour"] if target else []
    state = learning.learning_state(
        demand, forecast, pool_plans, interval=interval, now=now, service_level="; ".join(promises) or None
    )
    state["sizing_choice"] = learning.choice_text((summaries.get(CHOICE_KIND) or {}).get(pool))
    pressure = (summaries.get("queue_pressure") or {}).get(pool)
    return {
        "pool": pool,
        "mode": mode,
        "provisioning_level": level,
        "resources": blocks,
        "learning": state,
        "binding": state["binding"],
        "slots_per_instance": config.slots if config else None,
        "instances": learning.newest_plan_summary(pool_plans).get("instances_after"),
        "queue_wait": presentation.queue_wait(pressure, now) if isinstance(pressure, dict) else None,
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
        "now": now.isoformat(),
        "demand": {
            "ts": [_iso(t) for t in d.get("ts", [])],
            "value": presentation.rounded(resource, d.get("value", [])),
        },
        "forecast": {"ts": [], "mean": [], "upper": [], "upper_level": level, "model": "", "issued_at": None},
        "capacity": {
            "ts": [_iso(t) for t in c.get("ts", [])],
            "value": presentation.rounded(resource, c.get("value", [])),
        },
        "actions": _ledger_rows(a, 500),
        "accuracy": accuracy(e, now, level) if not e.empty else {},
    }
    if not f.empty:
        upper = f[upper_col] if upper_col in f else f["mean"]
        block["forecast"].update(
            ts=[_iso(t) for t in f["ts"]],
            mean=presentation.rounded(resource, f["mean"]),
            upper=presentation.rounded(resource, upper),
            model=str(f["model"].iloc[0]),
            fallback=str(f["fallback"].iloc[0] or ""),
            issued_at=_iso(f["issued_at"].iloc[0]),
        )
    end = pd.Timestamp(f["ts"].max()).to_pydatetime() if not f.empty else None
    block["window"] = [t.isoformat() for t in presentation.time_window(now, end)]
    block["y_top"] = presentation.axis_top(
        resource, block["demand"]["value"], block["forecast"]["upper"], block["capacity"]["value"]
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
                    [
                        a["kind"],
                        a["amount"],
                        a["provisioning"],
                        presentation.reason_summary(a["reason"]),
                        a["status"],
                    ]
                    for a in acts
                ],
                hovertemplate=(
                    "%{customdata[0]} %{customdata[1]} (%{customdata[2]})<br>%{customdata[3]}"
                    "<br>status: %{customdata[4]}<extra></extra>"
                ),
            )
        )
    _layout(fig, block)
    return fig


#: One zoom preset above each chart: everything drawn. Plotly counts "1h"-style presets back from the
#: end of the data (the forecast's last bucket), not from now; the modebar's "reset axes" returns to
#: the window around now.
_RANGE_BUTTONS = [{"step": "all", "label": "whole range"}]


#: A chart's title per resource: what the numbers count, not the series id.
_TITLES = {
    "slots": "task slots (running + queued tasks' pool_slots; capacity = instances x slots per instance)",
}


def _layout(fig: Any, block: dict[str, Any]) -> None:
    """A window centred on now (zoomable, with a range slider), a "now" line, a floored y axis."""
    title = _TITLES.get(block["resource"], block["resource"])
    fig.update_layout(
        # plain layout dicts: fig.add_vline resolves subplots and costs ~0.1 s a chart
        shapes=[
            {
                "type": "line",
                "x0": block["now"],
                "x1": block["now"],
                "y0": 0,
                "y1": 1,
                "yref": "paper",
                "line": {"color": "#888", "width": 1, "dash": "dash"},
            }
        ],
        annotations=[
            {
                "x": block["now"],
                "y": 1,
                "yref": "paper",
                "text": "now",
                "showarrow": False,
                "yanchor": "bottom",
            }
        ],
        title=f"{block['series_id'].split('/', 1)[0]} · {title} ({block['unit']})",
        height=360,
        # the legend at the right: below the plot, the range slider would cover it
        margin={"l": 50, "r": 20, "t": 40, "b": 30},
        legend={"orientation": "v", "x": 1.01, "y": 1},
        hovermode="x unified",
        xaxis={
            "range": block["window"],
            "rangeslider": {"visible": True, "thickness": 0.08},
            "rangeselector": {"buttons": _RANGE_BUTTONS, "y": 1.02, "x": 1, "xanchor": "right"},
            "hoverformat": "%Y-%m-%d %H:%M",
        },
        # ",.2~f": plain decimals with thousands separators; plotly's default SI format draws 3µ.
        yaxis={"title": block["unit"], "range": [0, block["y_top"]], "tickformat": ",.2~f"},
    )


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
            f'<tr class="{css}" data-request-id="{_esc(r["request_id"])}"><td>{presentation.minute(r["created_at"])}</td>'
            f"<td>{_esc(r['pool'])}</td><td>{_esc(r['resource'])}</td><td>{_esc(r['kind'])}</td>"
            f'<td class="num">{_fmt(r["amount"])}</td><td>{_esc(r["provisioning"])}</td>'
            f"<td>{_reason_cell(r['reason'])}{error}</td><td>{_esc(r['status'])}</td><td>{_esc(r['target'])}</td></tr>"
        )
    return f'<table id="ledger" class="ledger"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _reason_cell(reason: str) -> str:
    """The reason's one-line summary; the whole reason (rule, demand vs capacity) opens on a click."""
    line = presentation.reason_summary(reason)
    if line == " ".join((reason or "").split()):
        return _esc(reason)
    return f'<details class="reason"><summary>{_esc(line)}</summary><div class="detail">{_esc(reason)}</div></details>'


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
    # queue_pressure is shown per pool (its wait, above); here it would be hundreds of timestamps.
    shown = {k: payloads for k, payloads in summaries.items() if k not in ("queue_pressure", CHOICE_KIND)}
    return _heatmaps_html(shown.get("timing") or {}) + "".join(
        f'<div class="summary" data-kind="{_esc(kind)}"><h4>{_esc(kind)}</h4>{_summary_table(payloads)}</div>'
        for kind, payloads in shown.items()
    )


#: Hour-of-week heatmaps drawn at most (pools first, then the busiest users); the rest are in the table.
_HEATMAPS = 6


def _heatmaps_html(timing: dict[str, Any]) -> str:
    """One hour-of-week heatmap (days x hours, UTC) per pool and busiest user of the timing summary."""
    grids = {
        key: grid
        for key, value in timing.items()
        if isinstance(value, dict)
        and (grid := presentation.hour_of_week_grid(value.get("hour_of_week") or []))
    }
    order = sorted(grids, key=lambda k: (not k.startswith("pool:"), -sum(map(sum, grids[k])), k))[:_HEATMAPS]
    if not order:
        return ""
    charts = "".join(_figure_html(_heatmap(key, grids[key]), key, "heatmap", key) for key in order)
    return f'<h4>Starts per hour of week (UTC)</h4><div class="heatmaps">{charts}</div>'


def _heatmap(key: str, grid: list[list[float]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=[f"{h:02d}" for h in range(24)],
            y=list(presentation.DAYS),
            colorscale="Blues",
            hovertemplate="%{y} %{x}:00 UTC: %{z:.2f} starts/week<extra></extra>",
        )
    )
    fig.update_layout(
        title=key,
        height=230,
        width=440,
        margin={"l": 40, "r": 10, "t": 30, "b": 30},
        yaxis={"autorange": "reversed"},
    )
    return fig


def _figure_html(fig: Any, name: str, css: str, label: str) -> str:
    """A plotly figure as a div plus its JSON spec (drawn by the page's one script, no inline JS)."""
    div_id = css + "-" + "".join(ch if ch.isalnum() else "-" for ch in name)
    spec = json.loads(fig.to_json())
    return (
        f'<div id="{div_id}" class="{css}" data-series="{_esc(label)}"></div>'
        f'<script type="application/json" class="figure-data" data-target="{div_id}">{_script_json(spec)}</script>'
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
        if len(value) > 6:  # a long list of names or times: how many, the rest is in the JSON endpoint
            return f"<td>{len(value)} values</td>"
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
.empty{color:#777;font-style:italic} .chart{min-height:360px} code{font-size:11px}
table.learning th{width:110px} .binding-slots{background:#fff3cd;padding:4px 8px;display:inline-block}
details.reason summary{cursor:pointer} details.reason .detail{color:#444;max-width:640px;margin-top:4px}
details.other-pools>summary{cursor:pointer;font-size:15px;margin:20px 0 6px;color:#555}
.heatmaps{display:flex;flex-wrap:wrap;gap:8px} #timeline{min-height:260px}
"""

_SCRIPT = """
document.querySelectorAll('script.figure-data').forEach(function (node) {
  var spec = JSON.parse(node.textContent);
  Plotly.newPlot(node.dataset.target, spec.data, spec.layout, {responsive: true, displaylogo: false});
});
// A chart drawn inside a folded <details> has no width yet: fit it when it opens.
document.querySelectorAll('details').forEach(function (node) {
  node.addEventListener('toggle', function () {
    node.querySelectorAll('.js-plotly-plot').forEach(function (el) { Plotly.Plots.resize(el); });
  });
});
"""


#: Upcoming runs listed as rows under the timeline (the timeline shows them all).
_NEXT_RUNS = 5


def _upcoming_html(dag_id: str, work: dict[str, Any], application: dict[str, Any] | None = None) -> str:
    """Scheduled runs in the horizon as a timeline of stages, the next few as rows, and each task's hints."""
    head = f"<h2>Upcoming runs of {_esc(dag_id)} in the next {work.get('horizon_minutes', '?')} min</h2>"
    if work.get("error"):
        return head + f'<p class="empty">{_esc(work["error"])}</p>'
    dags = [d for d in work.get("dags", []) if d.get("dag_id") == dag_id]
    if not dags:
        return head + '<p class="empty">No serialized DAG yet.</p>'
    dag = dags[0]
    runs = dag.get("upcoming", [])
    if not runs:
        body = f'<p class="empty">No scheduled run in the horizon ({_esc(dag.get("schedule_kind"))}).</p>'
    else:
        measured = timeline.measured_durations(application or {}, dag_id)
        body = _timeline_html(dag, work, measured) + _next_runs_table(runs)
    return (
        head
        + f'<div class="meta">schedule {_esc(dag.get("timetable"))} · {len(runs)} runs</div>'
        + body
        + _tasks_table(dag)
    )


#: The timeline opens on the next few runs (or an hour); its slider reaches the whole horizon.
_TIMELINE_RUNS = 6


def _timeline_html(dag: dict[str, Any], work: dict[str, Any], measured: dict[str, float]) -> str:
    """Each upcoming run's stages as bars on a time axis, hover: the capacity each stage holds."""
    import plotly.graph_objects as go

    bars = timeline.bars(dag, measured)
    fig = go.Figure()
    for stage in dict.fromkeys(b["stage"] for b in bars):
        mine = [b for b in bars if b["stage"] == stage]
        fig.add_trace(
            go.Bar(
                name=stage,
                orientation="h",
                y=[stage] * len(mine),
                base=[b["start"] for b in mine],
                # a bar's length on a date axis is in milliseconds
                x=[
                    (pd.Timestamp(b["end"]) - pd.Timestamp(b["start"])) / pd.Timedelta(milliseconds=1)
                    for b in mine
                ],
                customdata=[_bar_hover(b) for b in mine],
                hovertemplate="%{customdata}<extra></extra>",
                marker={"line": {"color": "#fff", "width": 1}},  # back-to-back runs stay apart
            )
        )
    now = pd.Timestamp(work.get("now") or bars[0]["start"])
    first = {r["run_after"] for r in dag["upcoming"][:_TIMELINE_RUNS]}
    until = max(
        [pd.Timestamp(b["end"]) for b in bars if b["run_after"] in first] + [now + pd.Timedelta(hours=1)]
    )
    fig.update_layout(
        height=140 + 28 * len(fig.data),
        barmode="overlay",
        showlegend=False,
        margin={"l": 120, "r": 20, "t": 20, "b": 30},
        xaxis={
            "type": "date",
            "range": [now.isoformat(), until.isoformat()],
            "rangeslider": {"visible": True, "thickness": 0.1},
            "tickformat": "%H:%M\n%b %d",
        },
        yaxis={"autorange": "reversed"},
    )
    return _figure_html(fig, dag["dag_id"], "timeline", dag["dag_id"])


def _bar_hover(bar: dict[str, Any]) -> str:
    assumed = " (duration assumed)" if bar["assumed_duration"] else ""
    pools = ", ".join(bar["pools"]) or "–"
    return (
        f"run {presentation.minute(bar['run_after'])} · {_esc(bar['stage'])} on {_esc(pools)}<br>"
        f"{presentation.minute(bar['start'])[-5:]}–{presentation.minute(bar['end'])[-5:]}{assumed}<br>"
        f"expects {_fmt(bar['cpu'])} vCPU, {_fmt(bar['memory_gib'])} GiB, {_fmt(bar['slots'])} slots"
    )


def _next_runs_table(runs: list[dict[str, Any]]) -> str:
    """The next runs to the minute; the data interval only when it has a length (cron triggers have none)."""
    interval = timeline.interval_differs(runs)
    head = "<th>run after</th>" + ("<th>interval start</th><th>interval end</th>" if interval else "")
    rows = "".join(
        f"<tr><td>{presentation.minute(r.get('run_after'))}{' (overdue)' if r.get('overdue') else ''}</td>"
        + (
            f"<td>{presentation.minute(r.get('data_interval_start'))}</td>"
            f"<td>{presentation.minute(r.get('data_interval_end'))}</td>"
            if interval
            else ""
        )
        + "</tr>"
        for r in runs[:_NEXT_RUNS]
    )
    more = len(runs) - _NEXT_RUNS
    note = f'<p class="meta">and {more} more in the timeline</p>' if more > 0 else ""
    return f'<table id="upcoming-runs"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{note}'


def _tasks_table(dag: dict[str, Any]) -> str:
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
    return (
        '<h3>Tasks: templates, stages and resource hints</h3><table id="dag-tasks"><thead><tr>'
        + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
        + f"</tr></thead><tbody>{rows}</tbody></table>"
    )


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
    folded = [p for p in data["pools"] if p.get("folded")]
    parts.extend(_pool_html(pool) for pool in data["pools"] if not pool.get("folded"))
    if folded:
        # Pools the pools file does not name (e.g. "default", the control loop's own queue): nothing
        # plans them, so they wait below, folded.
        names = ", ".join(p["pool"] for p in folded)
        parts.append(
            f'<details class="other-pools"><summary>{len(folded)} other pool(s) not in the pools file: '
            f"{_esc(names)}</summary>{''.join(_pool_html(p) for p in folded)}</details>"
        )
    parts.append("<h2>Action ledger</h2>" + _ledger_table(data["ledger"], data.get("run_id")))
    parts.append("<h2>Learned behaviour</h2>" + _summaries_html(data.get("summaries") or {}))
    return parts


def _pool_html(pool: dict[str, Any]) -> str:
    """A pool's heading, learning state, binding resource, queue wait, charts and accuracy."""
    parts = [
        f'<h2 class="pool" data-pool="{_esc(pool["pool"])}">Pool {_esc(pool["pool"])} '
        f'<span class="mode mode-{_esc(pool["mode"])}">{_esc(pool["mode"])}</span></h2>',
        _learning_html(pool),
        _binding_html(pool),
    ]
    for block in pool["resources"]:
        fc = block["forecast"]
        parts.append(
            f'<div class="meta">model {_esc(fc.get("model") or "–")}'
            + (f" (fallback {_esc(fc.get('fallback'))})" if fc.get("fallback") else "")
            + f" · issued {presentation.minute(fc.get('issued_at'))}</div>"
            + _figure_html(figure(block), block["series_id"], "chart", block["series_id"])
        )
    parts.append(_queue_wait_html(pool))
    parts.append("<h3>Accuracy</h3>" + _accuracy_table(pool))
    return f'<section class="pool" data-pool="{_esc(pool["pool"])}">{"".join(parts)}</section>'


def _learning_html(pool: dict[str, Any]) -> str:
    """History per resource, model, rule in force, service level, and what the loop still waits for."""
    state = pool.get("learning") or {}
    days = state.get("history_days") or {}
    capped = "+" if state.get("history_capped") else ""
    history = ", ".join(f"{r} {v:.1f}{capped} d" for r, v in sorted(days.items())) or "none yet"
    rows = [
        ("phase", state.get("phase", "")),
        ("history", history),
        (
            "model",
            (state.get("model") or "–")
            + (f" (fallback {state['fallback']})" if state.get("fallback") else ""),
        ),
        ("rule in force", state.get("rule", "")),
        ("service level", state.get("service_level", "")),
        ("sizing chosen", state.get("sizing_choice") or "none yet (half a day of issued forecasts first)"),
    ]
    if state.get("waiting_for"):
        rows.append(("waiting for", state["waiting_for"]))
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="learning" data-phase="{_esc(state.get("phase", ""))}">{body}</table>'


def _binding_html(pool: dict[str, Any]) -> str:
    """Which resource sized the newest plan; for task slots, the capacity it counts them against."""
    binding = pool.get("binding")
    if not binding:
        return ""
    if binding != "slots":
        return f'<p class="binding">{_esc(binding)} binds: it needs the most instances.</p>'
    per = pool.get("slots_per_instance")
    capacity = (
        f" ({pool['instances']} instances x {per} slots)" if per and pool.get("instances") is not None else ""
    )
    return (
        f'<p class="binding binding-slots">Task slots bind{_esc(capacity)}: the pool is sized by how many '
        "tasks run or wait (their pool_slots), not by what they use.</p>"
    )


def _queue_wait_html(pool: dict[str, Any]) -> str:
    """The pool's measured queue wait: p50 and p95 of the last day's buckets, and a small chart."""
    wait = pool.get("queue_wait")
    if not wait or not wait["buckets"]:
        return ""
    import plotly.graph_objects as go

    fig = go.Figure(
        [
            # a bucket with no task queued has no wait (None): dots, not a line broken into fragments
            go.Scatter(
                name="mean wait", x=wait["ts"], y=wait["mean_s"], mode="markers", marker={"color": "#9467bd"}
            ),
            go.Scatter(
                name="max wait", x=wait["ts"], y=wait["max_s"], mode="markers", marker={"color": "#bbb"}
            ),
        ]
    )
    fig.update_layout(
        title="queue wait (s), last day",
        height=200,
        margin={"l": 40, "r": 10, "t": 30, "b": 30},
        legend={"orientation": "h"},
        yaxis={"rangemode": "tozero", "tickformat": ",.0f"},
    )
    basis = (
        f"over {wait['tasks']} tasks, {100 * wait['waited_long_share']:.0f}% waited over 30 s"
        if wait.get("tasks")
        else f"over {wait['buckets']} buckets' mean waits"
    )
    text = (
        f'<p class="queue-wait">queue wait, last day: p50 <b>{_fmt(wait["p50_s"])} s</b>, '
        f"p95 <b>{_fmt(wait['p95_s'])} s</b> ({basis})</p>"
    )
    return text + _figure_html(fig, pool["pool"], "queue-chart", pool["pool"])


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
        parts.append(
            _upcoming_html(data["dag_id"], upcoming, (data.get("summaries") or {}).get("application"))
        )
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


def render_run_page(run: dict[str, Any], *, plotly_src: str, title: str = "Predictive capacity") -> str:
    """One control-loop run (:func:`.run_view.collect_run`): its forecasts, plans and actions.

    :param run: what ``collect_run`` returned.
    :param plotly_src: URL of plotly.js (not drawn here, loaded so the page matches the others).
    :param title: page title.
    """
    heading = f"{title} — run {run['run_id']} of {run['dag_id']}"
    parts = [
        f"<h1>{_esc(heading)}</h1>",
        (
            f'<div class="meta">what this run did between {presentation.minute(run["start"])} and '
            f"{presentation.minute(run['end'])} UTC"
            if run["start"]
            else '<div class="meta">Airflow does not know this run and its id names no time: only plans '
            "whose id names it are shown"
        )
        + (f" · opened from task {_esc(run['task_id'])}" if run.get("task_id") else "")
        + "</div>",
        "<h2>Forecasts issued</h2>" + _run_forecasts_table(run["forecasts"]),
        "<h2>Plans</h2>" + _run_plans_table(run["plans"]),
        "<h2>Actions</h2>"
        + (
            _ledger_table(run["actions"], None)
            if run["actions"]
            else '<p class="empty">This run recorded no action.</p>'
        ),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style>"
        f'<script src="{_esc(plotly_src)}"></script></head><body>' + "".join(parts) + "</body></html>"
    )


def _run_forecasts_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="empty">This run issued no forecast (or it has been pruned).</p>'
    body = "".join(
        f"<tr><td>{_esc(r['series_id'])}</td><td>{presentation.minute(r['issued_at'])}</td>"
        f"<td>{_esc(r['model'])}{' (fallback ' + _esc(r['fallback']) + ')' if r['fallback'] else ''}</td>"
        f'<td class="num">{r["buckets"]}</td><td>{presentation.minute(r["first_ts"])} – '
        f"{presentation.minute(r['last_ts'])[-5:]}</td>"
        f'<td class="num">{_fmt(r["next_mean"])}</td><td class="num">{_fmt(r["peak_upper"])} ({_esc(r["upper"])})</td></tr>'
        for r in rows
    )
    return (
        '<table id="run-forecasts"><thead><tr><th>series</th><th>issued</th><th>model</th><th>buckets</th>'
        "<th>span</th><th>next mean</th><th>peak upper</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _run_plans_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="empty">This run made no plan.</p>'
    body = "".join(
        f'<tr data-plan-id="{_esc(r["plan_id"])}"><td>{_esc(r["pool"])}</td>'
        f"<td>{presentation.minute(r['created_at'])}</td><td>{_esc(r['mode'])}</td><td>{_esc(r['rule'])}</td>"
        f'<td>{_esc(r["binding"])}</td><td class="num">{_fmt(r["instances_before"])} → '
        f'{_fmt(r["instances_after"])}</td><td class="num">{_fmt(r["cost_before"])} → {_fmt(r["cost_after"])}</td></tr>'
        for r in rows
    )
    return (
        '<table id="run-plans"><thead><tr><th>pool</th><th>planned</th><th>mode</th><th>rule</th>'
        "<th>binding</th><th>instances</th><th>cost per hour</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )

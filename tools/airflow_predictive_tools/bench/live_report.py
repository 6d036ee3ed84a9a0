"""The HTML page of ``bench live``: per policy, queued + running tasks against worker slots over time
with the actions marked, and the metrics table."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Any

_MARKERS = {"launch_instances": ("triangle-up", "#2a9d8f"), "release": ("triangle-down", "#e76f51")}


def metrics_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy: the table of the page, the docs and the README."""
    rows = []
    for policy, m in result["policies"].items():
        wait = m["queue_wait"]
        rows.append(
            {
                "policy": policy,
                "tries": wait.get("tries", 0),
                "wait p50 s": wait.get("p50_s"),
                "wait p95 s": wait.get("p95_s"),
                "wait max s": wait.get("max_s"),
                "waited > 30 s": wait.get("share_over_30s"),
                # the queue model a queue-wait level is chosen by, on the slots this pool had
                "replayed p95 s": (m.get("queue_wait_replayed") or {}).get("p95_s"),
                "VM-hours": m["vm_hours"],
                "cost $": m["cost_usd"],
                "tasks lost": m["tasks_lost"],
                "busy VMs released": m["busy_vms_released"],
                "actions": ", ".join(f"{k} {v}" for k, v in sorted(m["actions"].items())) or "none",
            }
        )
    return rows


def markdown_table(result: dict[str, Any]) -> str:
    """The metrics table in Markdown."""
    rows = metrics_rows(result)
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def _figure(result: dict[str, Any], policy: str) -> Any:
    import plotly.graph_objects as go

    samples = [s for s in result["samples"] if policy in s]
    slots = result["settings"]["pools"]["slots"]
    t = [datetime.fromisoformat(s["t"]) for s in samples]
    demand = [s[policy]["queued"] + s[policy]["running"] for s in samples]
    fig = go.Figure()
    fig.add_scatter(x=t, y=demand, name="queued + running tasks", line={"shape": "hv", "color": "#264653"})
    fig.add_scatter(
        x=t,
        y=[s[policy]["slots"] for s in samples],
        name="worker slots (RUNNING VMs)",
        line={"shape": "hv", "color": "#f4a261"},
    )
    fig.add_scatter(
        x=t,
        y=[slots * s[policy]["vms"] for s in samples],
        name="slots incl. booting VMs",
        line={"shape": "hv", "color": "#f4a261", "dash": "dot"},
    )
    top = max(demand + [s[policy]["slots"] for s in samples] + [1])
    for kind, (symbol, color) in _MARKERS.items():
        acts = [a for a in result["policies"][policy]["action_times"] if a["kind"] == kind]
        if acts:
            fig.add_scatter(
                x=[datetime.fromisoformat(a["t"]) for a in acts],
                y=[top * 1.08] * len(acts),
                mode="markers",
                name=kind,
                marker={"symbol": symbol, "size": 11, "color": color},
                text=[f"{kind} {a['amount']:g}" for a in acts],
                hoverinfo="text+x",
            )
    start = datetime.fromisoformat(result["workload"]["start"])
    fig.add_vline(x=start, line={"dash": "dash", "color": "#999"})
    fig.update_layout(
        title=f"{policy}",
        height=300,
        margin={"l": 50, "r": 20, "t": 40, "b": 30},
        yaxis_title="tasks / slots",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def write_report(result: dict[str, Any], path: Path) -> None:
    """Write the page (plotly's JS inlined once: it opens without a network).

    :param result: what ``live.run`` returned (with ``command``).
    :param path: the HTML file.
    """
    rows = metrics_rows(result)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    s = result["settings"]
    figures = [
        _figure(result, p).to_html(full_html=False, include_plotlyjs=(i == 0))
        for i, p in enumerate(result["policies"])
    ]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>bench live</title>
<style>body{{font-family:sans-serif;margin:20px;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}</style></head><body>
<h1>Live benchmark: task queue wait and worker VM-hours</h1>
<p><code>{html.escape(str(result.get("command")))}</code> &middot; {html.escape(result["date"])} &middot;
wall {result.get("wall_seconds")} s &middot; workload {html.escape(result["workload"]["start"])} for {s["minutes"]} min,
seed {s["seed"]}, VM boot {s["boot_seconds"]:g} s, control loop every {s["pools"]["cadence_minutes"]:g} min,
KEDA poll {s["keda"]["polling_seconds"]:g} s, {s["machine_type"]} with {s["pools"]["slots"]} slots,
${s["price_per_vm_hour"]:.4f}/VM-hour; static holds {s["static_instances"]} VMs.</p>
<table><tr>{head}</tr>{body}</table>
<p>Dashed line: the workload's start. Triangles: launches (up) and releases (down) applied.</p>
{"".join(figures)}
</body></html>"""
    path.write_text(page)


CHROMIUM = "/usr/bin/chromium"  # Debian's (scripts/ensure-chromium.sh): Playwright's download cannot run here


def screenshot(page: Path, png: Path, width: int = 1240) -> None:
    """A full-page PNG of the report, by headless Chromium through Playwright (the README's picture).

    :param page: the HTML report.
    :param png: where to write the picture.
    :param width: viewport width in pixels.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            tab = browser.new_page(viewport={"width": width, "height": 900})
            tab.goto(Path(page).resolve().as_uri())
            tab.wait_for_selector(".plotly .main-svg")
            tab.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()

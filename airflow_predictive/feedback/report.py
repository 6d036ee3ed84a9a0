"""The forecast report page as one self-contained HTML file (``make demo`` ends by writing it).

Same data and same charts as the ``/predictive`` page in the Airflow UI
(:func:`airflow_predictive.feedback.pages.collect` and :func:`~airflow_predictive.feedback.pages.render_page`);
only plotly.js differs: it is inlined from the installed ``plotly`` package's offline bundle, so the
file opens anywhere with no server and no internet access.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow_predictive.contracts.stores import ForecastPageStore
from airflow_predictive.feedback import pages


def render_report(
    store: ForecastPageStore,
    *,
    now: datetime | None = None,
    pools: list[str] | None = None,
    history_hours: float = 24,
    default_mode: str = "forecast_only",
) -> str:
    """The report HTML (plotly.js inlined).

    :param store: the ProfileStore.
    :param now: the report's "now" (default: the current time).
    :param pools: only these capacity pools.
    :param history_hours: demand and capacity history to draw.
    :param default_mode: the mode shown for a pool with no plan yet (``[predictive] default_mode``).
    """
    from plotly.offline import get_plotlyjs

    data = pages.collect(
        store, pools=pools, now=now, history=timedelta(hours=history_hours), default_mode=default_mode
    )
    return pages.render_page(data, plotly_inline=get_plotlyjs(), title="Predictive capacity report")


def write_report(
    store: ForecastPageStore,
    path: str | Path,
    *,
    now: datetime | None = None,
    pools: list[str] | None = None,
    history_hours: float = 24,
    default_mode: str = "forecast_only",
) -> Path:
    """Write the report page to ``path`` (folders created); return its absolute path.

    :param store: the ProfileStore.
    :param path: the HTML file to write.
    :param now: the report's "now" (default: the current time).
    :param pools: only these capacity pools.
    :param history_hours: demand and capacity history to draw.
    :param default_mode: the mode shown for a pool with no plan yet (``[predictive] default_mode``).
    """
    target = Path(path).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        render_report(store, now=now, pools=pools, history_hours=history_hours, default_mode=default_mode),
        encoding="utf-8",
    )
    return target

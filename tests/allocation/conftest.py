"""Shared builders for allocation tests: forecast frames and pool states from plain numbers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pandas as pd

from airflow_predictive.contracts.forecast import DEFAULT_QUANTILES, quantile_column

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SPREAD = {0.5: 1.0, 0.8: 1.1, 0.9: 1.2, 0.95: 1.3, 0.99: 1.5}


def forecast_frame(
    pool: str, levels: Mapping[str, list[float]], *, start: datetime = NOW, step_minutes: int = 5
) -> pd.DataFrame:
    """A forecast in the contract: per resource a list of median values, quantiles scaled by SPREAD."""
    rows = []
    for resource, values in levels.items():
        for k, value in enumerate(values):
            row = {
                "series_id": f"pool={pool}/resource={resource}",
                "ts": start + timedelta(minutes=step_minutes * k),
                "mean": value,
                "model": "test",
                "fallback": "",
                "issued_at": start,
            }
            row.update({quantile_column(q): value * SPREAD[q] for q in DEFAULT_QUANTILES})
            rows.append(row)
    return pd.DataFrame(rows)

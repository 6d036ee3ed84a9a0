"""The one forecaster used by the DAG, the operator, the backtest and the benchmarks.

:class:`Forecaster` works on the long demand frame (``series_id, ts, value``):

- :meth:`Forecaster.select` is the slow, off-critical-path step: ``pmdarima.auto_arima`` order
  selection per series in a worker process that is recycled every few series (pmdarima's memory
  grows), returning small JSON states.
- :meth:`Forecaster.forecast` is the per-cycle warm path: it re-filters each series' recent window
  with its stored parameters (about a millisecond), re-estimates the parameters of the ``refit``
  series (warm-started CSS, tens of milliseconds) and returns the forecast frame of
  :mod:`airflow_predictive.contracts.forecast` plus the updated states. A series that cannot be
  modelled gets a recorded fallback; a series that cannot be forecast at all is reported in
  :attr:`Forecaster.errors`, never failing the others.

:func:`forecast_cycle` ties it to the ProfileStore for the operator and the control-loop DAG.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import current_process, get_context

import numpy as np
import pandas as pd

from airflow_predictive.contracts.forecast import (
    DEFAULT_QUANTILES,
    MIN_HISTORY_DAYS,
    forecast_columns,
    quantile_column,
)
from airflow_predictive.contracts.stores import ForecastCycleStore
from airflow_predictive.forecasting.auto_arima import AutoArima
from airflow_predictive.forecasting.models import (
    STATE_VERSION,
    Constant,
    Prediction,
    RecentLevel,
    SeasonalNaive,
    season_length,
)
from airflow_predictive.forecasting.series import (
    SeriesError,
    SeriesWindow,
    now_bucket,
    regular_window,
    to_epoch_seconds,
)

log = logging.getLogger(__name__)

MODEL_NAME = "auto_arima"


def pin_threads() -> None:
    """One BLAS/OpenMP thread per process: two threads on a busy 2-core machine made a 1 s fit take 20-66 s."""
    from threadpoolctl import threadpool_limits

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    threadpool_limits(1)


class Forecaster:
    """Forecast every demand series ``horizon`` ahead at ``interval`` buckets with calibrated quantiles.

    :param interval: bucket width of the demand series.
    :param horizon: how far ahead each forecast reaches (one row per bucket).
    :param quantiles: quantile levels of the forecast frame.
    :param history_days: days of history each series is read with (selection, calibration, filtering).
    :param min_history_days: less observed history than this -> seasonal naive / recent level fallback.
    :param select_workers: processes for order selection (0 = in this process, for tests and tools).
    :param recycle_after: series per selection worker before it is replaced (bounds pmdarima memory).
    :param model: the statistical model (its knobs: selection window, orders, calibration window...).
    """

    def __init__(
        self,
        *,
        interval: timedelta = timedelta(minutes=5),
        horizon: timedelta = timedelta(hours=24),
        quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
        history_days: float = 7.0,
        min_history_days: float = MIN_HISTORY_DAYS,
        select_workers: int = 1,
        recycle_after: int = 25,
        model: AutoArima | None = None,
    ) -> None:
        if interval <= timedelta(0) or horizon < interval:
            raise ValueError(f"need 0 < interval <= horizon, got interval={interval}, horizon={horizon}")
        for level in quantiles:
            quantile_column(level)
        self.interval = interval
        self.interval_s = int(interval.total_seconds())
        self.horizon = horizon
        self.steps = int(horizon / interval)
        self.quantiles = tuple(sorted(quantiles))
        self.period = season_length(self.interval_s)
        self.history_buckets = max(1, round(history_days * self.period))
        self.min_history_buckets = max(1, round(min_history_days * self.period))
        self.select_workers = select_workers
        self.recycle_after = recycle_after
        self.model = model or AutoArima()
        self.errors: dict[str, str] = {}
        pin_threads()

    # ---------------------------------------------------------------- windows

    def windows(self, history: pd.DataFrame, now: datetime) -> dict[str, SeriesWindow]:
        """Regular windows of every series in the long frame (bad series go to :attr:`errors`).

        :param history: long frame ``series_id, ts, value``.
        :param now: the forecast origin; later samples are ignored.
        """
        missing = {"series_id", "ts", "value"} - set(history.columns)
        if missing:
            raise ValueError(f"history frame lacks column(s): {', '.join(sorted(missing))}")
        end = now_bucket(now, self.interval_s)
        out: dict[str, SeriesWindow] = {}
        if history.empty:
            return out
        seconds = to_epoch_seconds(history["ts"])
        values = pd.to_numeric(history["value"], errors="coerce").to_numpy(dtype=float)
        for sid, idx in _series_rows(history["series_id"].to_numpy()).items():
            try:
                out[sid] = regular_window(
                    sid,
                    seconds[idx],
                    values[idx],
                    interval_s=self.interval_s,
                    end=end,
                    length=self.history_buckets,
                    season=self.period,
                )
            except SeriesError as exc:
                self.errors[sid] = str(exc)
        return out

    def _needs_fallback(self, window: SeriesWindow) -> str:
        if window.observed_span < self.min_history_buckets:
            return "short_history"
        # Constant means every measured value of the window is the same. A metric stuck for a day or
        # two (a Bitbrains trace holds one value for three days) is not: a constant forecast with
        # zero-width quantiles would be exceeded by every later rise.
        if float(np.ptp(window.values[window.observed])) == 0.0:
            return "constant"
        return ""

    # ---------------------------------------------------------------- selection (slow path)

    def select(self, history: pd.DataFrame, *, now: datetime | None = None) -> dict[str, dict]:
        """Order selection for every series of the long frame; JSON-able model states keyed by series id.

        Series with too little history, constant series and bad series get no state (the forecast
        falls back for them; bad ones are in :attr:`errors`).

        :param history: long frame ``series_id, ts, value``.
        :param now: the end of the history to use (default: the latest timestamp in the frame).
        """
        self.errors = {}
        if now is None:
            if history.empty:
                return {}
            now = pd.Timestamp(history["ts"].max()).to_pydatetime()
            now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
        windows = {sid: w for sid, w in self.windows(history, now).items() if not self._needs_fallback(w)}
        if not windows:
            return {}
        jobs = [(sid, w) for sid, w in windows.items()]
        # A daemonic process may not have children: a Celery worker's prefork pool runs Airflow's task
        # processes as daemons, where a process pool fails ("daemonic processes are not allowed to have
        # children"). There the series are selected one after another in the task's own process.
        if self.select_workers <= 0 or current_process().daemon:
            results = [_select_one(self.model, sid, w, self.steps, self.quantiles) for sid, w in jobs]
        else:
            results = self._select_in_workers(jobs)
        states = {}
        for sid, state, error in results:
            if error:
                self.errors[sid] = error
            else:
                states[sid] = state
        return states

    def _select_in_workers(self, jobs: list[tuple[str, SeriesWindow]]) -> list[tuple[str, dict | None, str]]:
        import pmdarima  # noqa: F401  (imported once here, inherited by every forked worker)

        workers = max(1, min(self.select_workers, len(jobs)))
        batch = workers * max(1, self.recycle_after)
        results: list[tuple[str, dict | None, str]] = []
        # A fresh pool of forked workers per batch: each worker exits after about `recycle_after`
        # series, returning pmdarima/statsmodels' grown heap to the OS. Fork (not spawn) needs no
        # importable __main__, so it works inside Airflow task processes and any script.
        for start in range(0, len(jobs), batch):
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=get_context("fork"), initializer=pin_threads
            ) as pool:
                futures = [
                    pool.submit(_select_one, self.model, sid, window, self.steps, self.quantiles)
                    for sid, window in jobs[start : start + batch]
                ]
                results += [f.result() for f in futures]
        return results

    # ---------------------------------------------------------------- forecast (warm path)

    def forecast(
        self,
        history: pd.DataFrame,
        states: dict[str, dict],
        *,
        now: datetime,
        refit: Collection[str] = (),
    ) -> tuple[pd.DataFrame, dict[str, dict]]:
        """Forecast every series of ``history`` from its stored state; re-estimate the ``refit`` series.

        :param history: long frame ``series_id, ts, value`` up to ``now``.
        :param states: model states by series id (from :meth:`select` or the store).
        :param now: the forecast origin: ``issued_at``; the first row is the bucket after ``now``.
        :param refit: series whose parameters are re-estimated (warm) this cycle.
        :returns: the forecast frame and the states (updated ones for ``refit`` series).
        """
        self.errors = {}
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        refit = set(refit)
        windows = self.windows(history, now)
        new_states: dict[str, dict] = {}
        parts: list[tuple[str, SeriesWindow, Prediction]] = []
        for sid, window in windows.items():
            state = states.get(sid)
            try:
                if state is not None and state.get("kind") == "arima" and sid in refit:
                    state = self.model.refit(window, state, steps=self.steps, levels=self.quantiles)
                    new_states[sid] = state
                prediction = self.predict_window(window, state)
            except Exception as exc:  # one bad series must never fail the cycle
                log.warning("forecast of %s failed (%s); using a fallback", sid, exc)
                try:
                    prediction = self._fallback(window, f"error: {type(exc).__name__}")
                except Exception as inner:
                    self.errors[sid] = f"series {sid!r} cannot be forecast: {inner}"
                    continue
            parts.append((sid, window, prediction))
        return self._frame(parts, now), new_states

    def predict_window(self, window: SeriesWindow, state: dict | None) -> Prediction:
        """Forecast one regular window from its state, or with the fallback its history calls for.

        :param window: the regular history of one series.
        :param state: its model state (``None`` when it has none).
        """
        reason = self._needs_fallback(window)
        if reason:
            return self._fallback(window, reason)
        if state is None or state.get("kind") != "arima" or state.get("version") != STATE_VERSION:
            return self._fallback(window, "no_state")
        if state.get("interval_s") != self.interval_s:
            return self._fallback(window, "state_interval_mismatch")
        return self.model.predict(window, state, steps=self.steps, levels=self.quantiles)

    def _fallback(self, window: SeriesWindow, reason: str) -> Prediction:
        if reason == "constant":
            model = Constant()
        elif window.values.size > self.period and window.observed_span > self.period:
            model = SeasonalNaive(1)
        else:
            model = RecentLevel()
        prediction = model.predict(window, {}, steps=self.steps, levels=self.quantiles)
        prediction.fallback = f"{reason}:{model.name}"
        return prediction

    def _frame(self, parts: list[tuple[str, SeriesWindow, Prediction]], now: datetime) -> pd.DataFrame:
        columns = forecast_columns(self.quantiles)
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        steps = self.steps
        n = len(parts)
        ends = np.array([w.end for _, w, _ in parts], dtype=np.int64)
        buckets = (ends[:, None] + np.arange(1, steps + 1)[None, :]).ravel()
        stamps = (buckets * self.interval_s).astype("datetime64[s]").astype("datetime64[ns]")
        issued = pd.Timestamp(now)
        issued = issued.tz_localize("UTC") if issued.tzinfo is None else issued.tz_convert("UTC")
        qs = np.concatenate([p.quantiles for _, _, p in parts])
        data: dict[str, object] = {
            "series_id": np.repeat(np.array([sid for sid, _, _ in parts], dtype=object), steps),
            "ts": pd.DatetimeIndex(stamps).tz_localize("UTC"),
            "mean": np.concatenate([p.mean for _, _, p in parts]),
        }
        for j, level in enumerate(self.quantiles):
            data[quantile_column(level)] = qs[:, j]
        data["model"] = np.repeat(np.array([p.model for _, _, p in parts], dtype=object), steps)
        data["fallback"] = np.repeat(np.array([p.fallback for _, _, p in parts], dtype=object), steps)
        data["issued_at"] = pd.DatetimeIndex(
            np.full(n * steps, issued.value, dtype="datetime64[ns]")
        ).tz_localize("UTC")
        return pd.DataFrame(data, copy=False)


def _series_rows(ids: np.ndarray) -> dict:
    """Row positions of each series id.

    The store returns each series' rows together; finding those runs by comparing neighbours is
    several times cheaper than hashing every row's id (a groupby), which is the fallback when a
    series' rows are scattered.
    """
    if ids.size == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    run_ids = ids[starts]
    if len(set(run_ids.tolist())) == run_ids.size:
        bounds = np.r_[starts, ids.size]
        return {sid: np.arange(bounds[i], bounds[i + 1]) for i, sid in enumerate(run_ids.tolist())}
    return pd.Series(ids).groupby(ids, sort=False).indices


def _select_one(
    model: AutoArima, sid: str, window: SeriesWindow, steps: int, levels: tuple[float, ...]
) -> tuple[str, dict | None, str]:
    """Worker entry point: fit one series, never raising (the error names the series)."""
    try:
        return sid, model.fit(window, steps=steps, levels=levels), ""
    except Exception as exc:
        return sid, None, f"order selection for series {sid!r} failed: {type(exc).__name__}: {exc}"


def forecast_cycle(
    store: ForecastCycleStore,
    series_ids: Sequence[str],
    *,
    now: datetime,
    forecaster: Forecaster | None = None,
    refit_fraction: float | None = None,
    max_selections: int = 50,
) -> dict:
    """One control-loop cycle for ``series_ids``: read history + states, select/refit, forecast, write back.

    Series without a state or flagged ``needs_reselect`` get order selection (at most
    ``max_selections`` per cycle, the rest fall back to seasonal naive until their turn); the
    ``refit_fraction`` of series with the oldest fits are re-estimated warm, so with the default
    (one hour's worth of cycles) every series is refreshed at least hourly.

    :param store: a :class:`~airflow_predictive.store.ProfileStore`.
    :param series_ids: the series to forecast.
    :param now: the forecast origin.
    :param forecaster: the engine (default: ``Forecaster()``).
    :param refit_fraction: share of series re-estimated per cycle (default: interval / 1 hour).
    :param max_selections: cap on order selections in this cycle (selection is slow).
    :returns: a JSON-able summary (counts, fallbacks, errors, seconds, ``per_series`` headline numbers).
    """
    started = time.perf_counter()
    forecaster = forecaster or Forecaster()
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    series_ids = list(dict.fromkeys(series_ids))
    history = store.demand(
        series_ids,
        start=now - timedelta(seconds=forecaster.history_buckets * forecaster.interval_s),
        end=now + forecaster.interval,
    )
    rows = store.model_states(series_ids)
    states = {
        sid: row["state"]
        for sid, row in rows.items()
        if row["model"] == MODEL_NAME and not row["needs_reselect"]
    }
    to_select = [sid for sid in series_ids if sid not in states][: max(0, max_selections)]
    selected: dict[str, dict] = {}
    errors: dict[str, str] = {}
    if to_select:
        subset = history[history["series_id"].isin(to_select)]
        selected = forecaster.select(subset, now=now)
        errors.update(forecaster.errors)
        states.update(selected)
    fraction = refit_fraction if refit_fraction is not None else forecaster.interval / timedelta(hours=1)
    fitted = sorted(
        (sid for sid in states if sid not in selected),
        key=lambda sid: rows.get(sid, {}).get("fitted_at") or datetime.min.replace(tzinfo=UTC),
    )
    refit = fitted[: math.ceil(fraction * len(fitted))] if fitted else []
    frame, updated = forecaster.forecast(history, states, now=now, refit=refit)
    errors.update(forecaster.errors)
    forecasted = set(frame["series_id"]) if not frame.empty else set()
    for sid in series_ids:
        if sid not in errors and sid not in forecasted:
            errors[sid] = f"series {sid!r} has no demand in the last {forecaster.history_buckets} buckets"
    if not frame.empty:
        store.write_forecasts(frame)
    changed = {**selected, **updated}
    if changed:
        store.save_model_states(
            {"series_id": sid, "model": MODEL_NAME, "state": state, "fitted_at": now, "needs_reselect": False}
            for sid, state in changed.items()
        )
    fallbacks = (
        frame.drop_duplicates("series_id")
        .query("fallback != ''")
        .set_index("series_id")["fallback"]
        .to_dict()
        if not frame.empty
        else {}
    )
    return {
        "per_series": per_series_summary(frame, forecaster),
        "issued_at": now.isoformat(),
        "series": len(series_ids),
        "forecasted": int(frame["series_id"].nunique()) if not frame.empty else 0,
        "selected": sorted(selected),
        "refit": sorted(updated),
        "fallbacks": fallbacks,
        "errors": errors,
        "seconds": round(time.perf_counter() - started, 3),
    }


def per_series_summary(frame: pd.DataFrame, forecaster: Forecaster) -> dict[str, dict]:
    """Headline numbers per series: model, fallback, next-hour mean and upper quantile, 24 h peak.

    :param frame: a forecast frame.
    :param forecaster: the engine that made it (interval and quantiles).
    """
    if frame.empty:
        return {}
    upper = quantile_column(0.95 if 0.95 in forecaster.quantiles else max(forecaster.quantiles))
    hour = max(1, int(timedelta(hours=1) / forecaster.interval))
    out = {}
    for sid, rows in frame.groupby("series_id", sort=True):
        out[str(sid)] = {
            "model": str(rows["model"].iloc[0]),
            "fallback": str(rows["fallback"].iloc[0]),
            "next_hour_mean": round(float(rows["mean"].iloc[:hour].mean()), 4),
            "next_hour_q95": round(float(rows[upper].iloc[:hour].max()), 4),
            "peak_q95": round(float(rows[upper].max()), 4),
        }
    return out

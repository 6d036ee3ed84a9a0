"""The forecaster's contract: frame shape, state round trip, warm refit, calibration."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd

from airflow_predictive.contracts.forecast import forecast_columns
from airflow_predictive.forecasting import arima
from airflow_predictive.forecasting.auto_arima import Selection
from airflow_predictive.forecasting.engine import Forecaster
from tests.forecasting.conftest import SID


def test_forecast_frame_follows_the_contract(demand, origin, selected):
    forecaster, states = selected
    frame, updated = forecaster.forecast(demand[demand["ts"] <= origin], states, now=origin)
    assert list(frame.columns) == forecast_columns(forecaster.quantiles)
    assert len(frame) == 288 and updated == {}
    assert frame["ts"].iloc[0] == pd.Timestamp(origin).floor("5min") + pd.Timedelta(minutes=5)
    assert (frame["ts"].diff().dropna() == pd.Timedelta(minutes=5)).all()
    assert (frame["issued_at"] == pd.Timestamp(origin)).all()
    assert set(frame["model"]) == {"auto_arima"} and set(frame["fallback"]) == {""}
    qs = frame[["q0.5", "q0.8", "q0.9", "q0.95", "q0.99"]].to_numpy()
    assert (np.diff(qs, axis=1) >= 0).all() and (qs >= 0).all()


def test_state_is_small_json_and_round_trips_to_the_same_forecast(demand, origin, selected):
    forecaster, states = selected
    text = json.dumps(states[SID])
    assert len(text) < 8000  # small JSON, not an 18-62 MB pickle
    restored = {SID: json.loads(text)}
    history = demand[demand["ts"] <= origin]
    fresh, _ = forecaster.forecast(history, states, now=origin)
    again, _ = Forecaster(select_workers=0).forecast(history, restored, now=origin)
    pd.testing.assert_frame_equal(fresh, again)


def test_stored_parameters_reproduce_pmdarimas_own_forecast(demand, origin, selected):
    """The warm filter with an exactly fitted model's numbers gives the forecast pmdarima itself makes."""
    forecaster, states = selected
    window = forecaster.windows(demand[demand["ts"] <= origin], origin)[SID]
    state = {k: v for k, v in states[SID].items() if k != "calibration"}
    n = 2 * 288
    z = np.clip(window.values[-n:] / state["scale"], *state["clip"])
    buckets = window.buckets[-n:]
    full = {**state, "order": [0, 0, 0], "seasonal_order": [0, 0, 0, 0]}  # constant + Fourier terms
    beta = np.linalg.lstsq(arima.exog(buckets, full), z, rcond=None)[0]
    residual = z - arima.exog(buckets, full) @ beta
    exact = Selection(state, None, beta, residual).refit_exact()
    values = dict(zip(exact.arima_res_.model.param_names, exact.params(), strict=True))
    state["ar"] = [values[f"ar.L{i}"] for i in range(1, state["order"][0] + 1)]
    state["ma"] = [values[f"ma.L{i}"] for i in range(1, state["order"][2] + 1)]
    differenced = state["order"][1] > 0
    state["beta"] = (beta[1:] if differenced else beta).tolist()
    state = json.loads(json.dumps(state))
    ours = arima.point_forecast(z, buckets, state, 288)
    # pmdarima forecasts the first-stage residual; add back the regression at the future buckets
    future = np.arange(window.end + 1, window.end + 289)
    theirs = exact.predict(n_periods=288) + arima.exog(future, full) @ beta
    np.testing.assert_allclose(ours, theirs, atol=0.02 * np.abs(theirs).mean())


def test_refit_re_estimates_warm_and_keeps_the_orders(demand, origin, selected):
    forecaster, states = selected
    later = origin + timedelta(hours=6)
    frame, updated = forecaster.forecast(demand[demand["ts"] <= later], states, now=later, refit=[SID])
    new, old = updated[SID], states[SID]
    assert new["order"] == old["order"] and new["fourier"] == old["fourier"]
    assert "refit_at" in new and new["calibrated_end_bucket"] > old["calibrated_end_bucket"]
    assert set(frame["fallback"]) == {""}


def test_upper_quantiles_are_calibrated_on_held_out_days(demand, origin, selected):
    """Across 24 hourly origins of the two held-out days the upper quantiles are exceeded near nominal."""
    forecaster, states = selected
    values = demand.set_index("ts")["value"]
    hits = {0.8: [], 0.9: [], 0.95: []}
    for k in range(24):
        now = origin + timedelta(hours=k)
        frame, updated = forecaster.forecast(
            demand[demand["ts"] <= now], states, now=now, refit=[SID] if k % 6 == 0 else []
        )
        states = {**states, **updated}
        actual = values.reindex(frame["ts"]).to_numpy()
        ok = np.isfinite(actual)
        for level in hits:
            hits[level].append(actual[ok] > frame[f"q{level:g}"].to_numpy()[ok])
    for level, rows in hits.items():
        rate = float(np.concatenate(rows).mean())
        assert abs(rate - (1 - level)) < 0.05, (level, rate)


def test_clipping_keeps_frequent_bursts_and_level_shifts_in_the_model_input():
    """Only rare values are outliers: bursts in 9% of the buckets or a new level stay visible to the model."""
    from airflow_predictive.forecasting.auto_arima import clip_bounds

    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.02, 2000)
    bursty = base.copy()
    bursty[rng.random(2000) < 0.09] = 500.0
    lo, hi = clip_bounds(bursty, 10.0)
    assert hi >= 500.0 and lo <= base.min()
    shifted = np.r_[base[:1200], base[1200:] + 0.6]  # a lasting step of 30 robust SDs
    assert clip_bounds(shifted, 10.0)[1] >= shifted.max() - 0.1
    single = base.copy()
    single[7] = 500.0  # one gross outlier is still clipped
    assert clip_bounds(single, 10.0)[1] < 2.0


def test_a_rise_above_the_clip_that_lasts_half_an_hour_is_read_as_the_new_level():
    """NAB rds_cpu jumped from 17% to 28% CPU and stayed: clipped at 22.8, the model forecast q0.9 = 26
    one step ahead for hours while demand held 27.5."""
    from airflow_predictive.forecasting.auto_arima import clip_input

    base = np.full(600, 1.0)
    bounds = (0.8, 1.2)
    risen = np.r_[base, np.full(6, 2.0)]  # 30 minutes of 5-minute buckets at the new level
    np.testing.assert_array_equal(clip_input(risen, bounds, 300)[-6:], 2.0)
    assert (clip_input(risen, bounds, 300)[:-6] == 1.0).all()
    spike = np.r_[base, np.full(5, 2.0)]  # 25 minutes: still outliers
    np.testing.assert_array_equal(clip_input(spike, bounds, 300)[-5:], 1.2)
    ended = np.r_[base, np.full(6, 2.0), 1.0]  # the run must reach the newest bucket
    assert clip_input(ended, bounds, 300).max() == 1.2
    dropped = np.r_[base, np.full(12, 0.1)]  # a drop stays clipped: the forecast errs on capacity
    np.testing.assert_array_equal(clip_input(dropped, bounds, 300)[-12:], 0.8)


def test_css_refit_from_an_unstable_state_returns_a_stable_one_without_overflow():
    """A non-invertible MA and an explosive AR used to overflow in every filter of the state."""
    import warnings

    rng = np.random.default_rng(3)
    buckets = np.arange(1440)
    z = 1.0 + 0.1 * np.cumsum(rng.normal(size=1440)) / 10
    state = {
        "order": [2, 0, 1],
        "seasonal_order": [0, 0, 0, 0],
        "fourier": {"period": 288, "k": 2},
        "beta": [1.0, 0.0, 0.0, 0.0, 0.0],
        "ar": [1.5, 0.3],
        "ma": [-1.8],
        "sar": [],
        "sma": [],
    }
    assert not arima.is_stable(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        new = arima.css_refit(z, buckets, state)
        assert arima.is_stable(new)
        assert np.isfinite(arima.point_forecast(z, buckets, new, 288)).all()
        assert np.isfinite(new["sigma2"]) and new["sigma2"] < 1.0


def test_css_refit_recovers_known_arma_and_fourier_coefficients():
    """Variable projection: beta by least squares, the ARMA coefficients searched, from a poor start."""
    from scipy import signal

    rng = np.random.default_rng(5)
    buckets = np.arange(10_000, 10_000 + 1440)
    spec = {"order": [1, 0, 1], "seasonal_order": [0, 0, 0, 0], "fourier": {"period": 288, "k": 2}}
    true_beta = np.array([2.0, 0.5, -0.3, 0.2, 0.1])
    noise = signal.lfilter([1.0, 0.4], [1.0, -0.7], rng.normal(0, 0.05, buckets.size))
    z = arima.exog(buckets, spec) @ true_beta + noise
    start = {**spec, "beta": [1.0, 0, 0, 0, 0], "ar": [0.1], "ma": [0.0], "sar": [], "sma": []}
    new = arima.css_refit(z, buckets, start)
    np.testing.assert_allclose(new["beta"][1:], true_beta[1:], atol=0.03)
    assert abs(new["ar"][0] - 0.7) < 0.08 and abs(new["ma"][0] - 0.4) < 0.1
    assert abs(new["sigma2"] - 0.05**2) < 0.0005


def test_rows_of_a_series_need_not_be_contiguous(demand, origin, selected):
    forecaster, states = selected
    history = demand[demand["ts"] <= origin]
    other = history.assign(series_id="pool=bench-0001/resource=cpu")
    together = pd.concat([history, other])
    interleaved = together.sample(frac=1.0, random_state=0)
    states = {**states, "pool=bench-0001/resource=cpu": states[SID]}
    a, _ = forecaster.forecast(together, states, now=origin)
    b, _ = forecaster.forecast(interleaved, states, now=origin)
    pd.testing.assert_frame_equal(
        a.sort_values(["series_id", "ts"]).reset_index(drop=True),
        b.sort_values(["series_id", "ts"]).reset_index(drop=True),
    )
    assert a["series_id"].nunique() == 2


def test_bench_deals_the_re_estimated_series_evenly_to_the_workers():
    from airflow_predictive_tools.bench.forecasting import balanced_chunks

    ids = [f"s{i:03d}" for i in range(100)]
    heavy = set(ids[::12])  # every 12th id: all even, all in one worker if dealt by position
    chunks = balanced_chunks(ids, heavy, 2)
    assert sorted(sum(chunks, [])) == ids
    assert [len(set(c) & heavy) for c in chunks] == [5, 4]
    assert abs(len(chunks[0]) - len(chunks[1])) <= 1


def _select_as_daemon(history: pd.DataFrame, origin, answers) -> None:
    try:
        states = Forecaster(select_workers=2).select(history, now=origin)
        answers.put(sorted(states))
    except Exception as exc:  # the parent asserts on what happened here
        answers.put(f"{exc.__class__.__name__}: {exc}")


def test_selection_runs_inside_a_daemonic_process_like_a_celery_prefork_child(demand, origin):
    # Airflow's Celery workers run task processes as daemons, which may not start a process pool: the
    # forecast task's first cycle failed there with "daemonic processes are not allowed to have children".
    import multiprocessing

    history = demand[(demand["ts"] <= origin) & (demand["ts"] > origin - timedelta(days=3))]
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_select_as_daemon, args=(history, origin, answers), daemon=True)
    child.start()
    answer = answers.get(timeout=240)
    child.join(timeout=30)
    assert answer == [SID], answer

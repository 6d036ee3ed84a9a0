"""Allocation in chunks of pools plans exactly what one pool at a time plans, caps included.

The DAG maps ``allocate`` over chunks of pools, and each chunk reads its pools' forecasts and recent
demand in one go (``PlanningInputs``). Every cap is a pool's own (``max_instances``,
``budget_per_hour``), so the plans must not depend on how pools are grouped.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from airflow_predictive_tools.bench.forecasting import generate_history
from airflow_predictive_tools.bench.scaleout_seed import forecast_frame

from airflow_predictive.contracts.pools import CapacityPool, Signal
from airflow_predictive.gce.compute import ComputeEngine
from airflow_predictive.operators.preemptive_allocate import allocate_pools, pool_chunks
from airflow_predictive.runtime.allocation_cycle import PlanningInputs, run_cycle
from airflow_predictive.store import ProfileStore
from tests.allocation.conftest import FAST, NOW, PROJECT, ZONE

POOLS = [f"bench-{i:04d}" for i in range(5)]


class _Hook:
    """What ``allocate_pools`` needs of a GceAllocatorHook: the emulator's engine per project and zone."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get_engine(self, project: str, zone: str) -> ComputeEngine:
        return ComputeEngine(project, zone, endpoint=self.url, retry=FAST, operation_timeout=30)


def _pools() -> list[CapacityPool]:
    common = {"project": PROJECT, "zone": ZONE, "machine_type": "n2-standard-8", "spot": {"mode": "none"}}
    return [
        CapacityPool(name=POOLS[0], max_instances=20, **common),
        CapacityPool(name=POOLS[1], max_instances=1, **common),  # capped at max_instances
        CapacityPool(name=POOLS[2], max_instances=20, budget_per_hour=0.5, **common),  # capped by budget
        CapacityPool(name=POOLS[3], max_instances=20, policy={"signal": "recent_demand"}, **common),
        CapacityPool(name=POOLS[4], max_instances=20, **common),  # no forecast stored
    ]


@pytest.fixture
def seeded(tmp_path) -> ProfileStore:
    store = ProfileStore.sqlite(tmp_path / "profile.db")
    history = generate_history(len(POOLS) * 4, days=2, end=NOW - timedelta(minutes=5), seed=3)
    store.write_demand(history)
    ids = sorted(set(history["series_id"]))
    store.write_forecasts(forecast_frame([i for i in ids if not i.startswith(f"pool={POOLS[4]}/")], NOW, 48))
    yield store
    store.dispose()


def _plans(results) -> dict[str, tuple]:
    return {
        r.pool: (
            r.error,
            [(str(a.kind), a.amount, a.target, str(a.provisioning), a.reason) for a in r.plan.actions],
            list(r.plan.capped),
            r.plan.summary,
        )
        for r in results
    }


def test_pools_planned_in_chunks_get_the_plans_each_gets_alone(seeded, emulator_url, control) -> None:
    pools = _pools()
    hook = _Hook(emulator_url)
    alone = [
        run_cycle(p, seeded, hook.get_engine(p.project, p.zone), now=NOW, busy_hosts=[], record=False)
        for p in pools
    ]
    by_name = {p.name: p for p in pools}
    chunked = [
        result
        for chunk in pool_chunks([p.name for p in pools], chunk_size=2)
        for result in allocate_pools(
            [by_name[n] for n in chunk], seeded, hook, now=NOW, tasks=lambda: [], apply=False, record=False
        )
    ]

    assert _plans(chunked) == _plans(alone)
    plans = _plans(chunked)
    assert all(not error for error, *_ in plans.values())
    # the caps that belong to one pool hold whichever chunk plans it
    assert any("max_instances" in cap for cap in plans[POOLS[1]][2])
    assert any("budget_per_hour" in cap for cap in plans[POOLS[2]][2])
    assert any("no forecast stored" in cap for cap in plans[POOLS[4]][2])
    assert plans[POOLS[0]][1], "the uncapped pool should scale out to its forecast"


def test_planning_inputs_give_each_pool_the_rows_its_own_reads_return(seeded) -> None:
    pools = _pools()
    together = PlanningInputs.read(seeded, pools, NOW)
    for pool in pools:
        alone = PlanningInputs.read(seeded, [pool], NOW)
        own = seeded.latest_forecasts(pools=[pool.name])
        if pool.policy.signal is not Signal.FORECAST:
            assert together.forecast_of(pool) is None
        elif own.empty:
            assert together.forecast_of(pool).empty and alone.forecast_of(pool).empty
        else:
            pd.testing.assert_frame_equal(together.forecast_of(pool), own)
            pd.testing.assert_frame_equal(alone.forecast_of(pool), own)
        pd.testing.assert_frame_equal(together.demand_of(pool), alone.demand_of(pool))
        assert not together.demand_of(pool).empty


def test_pool_chunks_refuse_a_chunk_size_below_one() -> None:
    with pytest.raises(ValueError, match="pools_per_chunk must be at least 1"):
        pool_chunks(["a"], chunk_size=0)


def test_a_pool_following_its_choice_reads_only_its_stabilisation_window_and_plans_the_same(
    seeded, emulator_url, control
) -> None:
    """The daily-cycle check is off for a pool that follows a service-level choice, so its days of demand
    are not read; what the planner uses (the guard's newest value, the window's peak) is the same."""
    [base] = [p for p in _pools() if p.name == POOLS[0]]
    chosen = base.model_copy(update={"policy": base.policy.model_copy(update={"min_daily_cycle": -1.0})})
    short = PlanningInputs.read(seeded, [chosen], NOW).demand_of(chosen)
    long = PlanningInputs.read(seeded, [base], NOW).demand_of(base)
    span = pd.to_datetime(short["ts"], utc=True)
    assert span.min() >= pd.Timestamp(NOW - timedelta(minutes=chosen.scale_in.stabilization_minutes))
    assert len(short) < len(long) / 10
    engine = _Hook(emulator_url).get_engine(PROJECT, ZONE)
    read_short, read_long = (
        run_cycle(
            chosen,
            seeded,
            engine,
            now=NOW,
            busy_hosts=[],
            record=False,
            inputs=PlanningInputs(
                forecasts={chosen.name: seeded.latest_forecasts(pools=[chosen.name])},
                demand={chosen.name: demand},
            ),
        )
        for demand in (short, long)
    )
    assert _plans([read_short]) == _plans([read_long])


def test_a_pool_with_a_seasonal_floor_reads_the_days_it_looks_back_on(seeded) -> None:
    """A pool following a floor candidate reads a day of demand before the bucket the floor looks at,
    not only its stabilisation window."""
    [base] = [p for p in _pools() if p.name == POOLS[0]]
    chosen = base.policy.model_copy(update={"min_daily_cycle": -1.0, "seasonal_floor_days": 1})
    pool = base.model_copy(update={"policy": chosen})
    demand = PlanningInputs.read(seeded, [pool], NOW).demand_of(pool)
    span = pd.to_datetime(demand["ts"], utc=True)
    assert span.min() <= pd.Timestamp(NOW - timedelta(days=1))

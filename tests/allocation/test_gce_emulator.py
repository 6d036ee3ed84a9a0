"""The allocator through the real google-cloud-compute client against the local Compute Engine emulator:
each action kind, dry run, retries, re-runs, faults mid-plan, busy VMs, caps, concurrent runs, quota errors."""

from __future__ import annotations

import threading
from datetime import timedelta

import pandas as pd
import pytest

from airflow_predictive.contracts.plan import Action, ActionKind, Provisioning
from airflow_predictive.gce.compute import ComputeEngine, QuotaExceeded
from airflow_predictive.planning.planner import plan
from airflow_predictive.runtime.allocation_cycle import run_cycle
from airflow_predictive.runtime.ledger import execute_plan
from tests.allocation.conftest import FAST, NOW, PROJECT, ZONE, forecast_frame, make_pool


def seed_vms(control, names, *, machine="n2-standard-8", spot=()):
    bodies = []
    for name in names:
        body = {
            "name": name,
            "machineType": f"zones/{ZONE}/machineTypes/{machine}",
            "labels": {"predictive-pool": "etl"},
            "disks": [{"boot": True, "autoDelete": True, "initializeParams": {"sourceImage": "debian-12"}}],
            "networkInterfaces": [{"network": "global/networks/default"}],
        }
        if name in spot:
            body["scheduling"] = {"provisioningModel": "SPOT"}
        bodies.append(body)
    control.seed(project=PROJECT, zone=ZONE, instances=bodies)


def live_names(engine, pool) -> list[str]:
    return sorted(i.name for i in engine.pool_state(pool).live())


def test_launch_storage_resize_bandwidth_and_release_apply_through_the_real_client(engine, store):
    pool = make_pool(machine_type="n2-standard-32", max_instances=2)
    frame = forecast_frame("etl", {"cpu": [40] * 6, "storage": [250] * 6})  # q0.9: 48 vCPU, 300 GiB
    p = plan(frame, engine.pool_state(pool), pool, NOW)
    assert [a.kind for a in p.actions] == [ActionKind.LAUNCH_INSTANCES, ActionKind.ALLOCATE_STORAGE]
    outcome = execute_plan(p, store, lambda a: engine.apply(a, pool))
    assert len(outcome.applied) == 2 and not outcome.failed
    state = engine.pool_state(pool)
    assert len(state.live()) == 2
    assert state.disks[0].size_gib == 300 and state.disks[0].attached_to == p.actions[0].details["names"][0]

    first = sorted(i.name for i in state.live())[0]
    grow = Action(
        "etl",
        ActionKind.ALLOCATE_STORAGE,
        100,
        "test",
        "grow-1",
        resource="storage",
        details={"disk": state.disks[0].name, "size_gib": 400, "grow": True},
    )
    tier = Action(
        "etl",
        ActionKind.RAISE_BANDWIDTH,
        50000,
        "test",
        "tier-1",
        resource="network",
        target=first,
        details={"instance": first, "tier": "TIER_1"},
    )
    bigger = Action(
        "etl",
        ActionKind.RESIZE_INSTANCE,
        48,
        "test",
        "resize-1",
        target=first,
        details={"instance": first, "machine_type": "n2-standard-48"},
    )
    for action in (grow, tier, bigger):
        engine.apply(action, pool)
    state = engine.pool_state(pool)
    vm = next(i for i in state.instances if i.name == first)
    assert (vm.status, vm.tier_1, vm.machine_type) == ("RUNNING", True, "n2-standard-48")
    assert state.disks[0].size_gib == 400

    release = Action(
        "etl", ActionKind.RELEASE, 1, "test", "release-1", target=first, details={"instance": first}
    )
    engine.apply(release, pool)
    engine.apply(release, pool)  # a repeat of a done release is harmless
    assert first not in live_names(engine, pool)


def test_managed_instance_group_resize_and_release_by_name(engine, control, store):
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instanceTemplates=[
            {
                "name": "etl-tpl",
                "properties": {
                    "machineType": "n2-standard-8",
                    "disks": [
                        {"boot": True, "autoDelete": True, "initializeParams": {"sourceImage": "debian-12"}}
                    ],
                    "networkInterfaces": [{"network": "global/networks/default"}],
                },
            }
        ],
        instanceGroupManagers=[
            {
                "name": "etl-std",
                "instanceTemplate": "global/instanceTemplates/etl-tpl",
                "targetSize": 1,
                "baseInstanceName": "etl-std",
            }
        ],
    )
    pool = make_pool(backend="managed_instance_group", group="etl-std")
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=[])
    assert result.plan.actions == []  # no forecast: only the floor (0) is enforced, nothing shrinks blind
    store.write_forecasts(forecast_frame("etl", {"cpu": [20] * 12}))  # q0.9 = 24 vCPU = 3 VMs
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=[])
    assert [(a.kind, a.amount) for a in result.plan.actions] == [(ActionKind.RESIZE_GROUP, 3)]
    state = engine.pool_state(pool)
    assert state.target_sizes == {"etl-std": 3}
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}, start=NOW + timedelta(hours=2)))
    busy = sorted(i.name for i in state.instances)[0]
    result = run_cycle(pool, store, engine, now=NOW + timedelta(hours=2), busy_hosts=[busy])
    released = [a.target for a in result.plan.actions if a.kind == ActionKind.RELEASE]
    assert len(released) == 2 and busy not in released
    assert engine.pool_state(pool).target_sizes == {"etl-std": 1}


def test_dry_run_records_the_plan_and_changes_nothing(engine, store):
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [30] * 12}))
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=[], apply=False)
    assert result.plan.actions and live_names(engine, pool) == []
    assert set(store.actions(pool="etl")["status"]) == {"dry_run"}
    # forecast_only pools never apply unless forced
    result = run_cycle(make_pool(mode="forecast_only"), store, engine, now=NOW, busy_hosts=[])
    assert not result.applied_mode and live_names(engine, pool) == []


def test_retries_after_429_and_503_converge_with_exactly_the_intended_capacity(engine, control, store):
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [30] * 12}))  # 36 vCPU -> 5 VMs
    control.inject_fault(method="POST", path_regex="/instances$", status=429, count=3)
    control.inject_fault(method="POST", path_regex="/instances$", status=503, count=2)
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=[])
    assert not result.outcome.failed
    assert len(live_names(engine, pool)) == 5
    assert engine.calls > 5 + 5  # the retried calls were really made
    # the next cycle sees the capacity and plans nothing
    again = run_cycle(pool, store, engine, now=NOW + timedelta(minutes=5), busy_hosts=[])
    assert again.plan.actions == [] and len(live_names(engine, pool)) == 5


def test_a_rerun_of_the_same_plan_creates_nothing_new(engine, store):
    pool = make_pool()
    frame = forecast_frame("etl", {"cpu": [30] * 12, "storage": [100] * 12})
    p = plan(frame, engine.pool_state(pool), pool, NOW)
    execute_plan(p, store, lambda a: engine.apply(a, pool))
    before = engine.pool_state(pool)
    outcome = execute_plan(p, store, lambda a: engine.apply(a, pool))
    assert outcome.applied == [] and len(outcome.skipped) == len(p.actions)
    for action in p.actions:  # even bypassing the ledger, request ids and names stop duplicates
        engine.apply(action, pool)
    after = engine.pool_state(pool)
    assert sorted(i.name for i in after.instances) == sorted(i.name for i in before.instances)
    assert [d.name for d in after.disks] == [d.name for d in before.disks]


def test_a_fault_mid_plan_is_recorded_and_the_next_cycle_converges(engine, control, store):
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [30] * 12, "storage": [100] * 12}))
    control.inject_fault(
        method="POST",
        path_regex="/disks$",
        operation_error={
            "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
            "message": "no capacity",
            "http_status": 503,
        },
    )
    first = run_cycle(pool, store, engine, now=NOW, busy_hosts=[])
    ledger = store.actions(plan_id=first.plan.plan_id).set_index("kind")
    assert ledger.loc["launch_instances", "status"] == "applied"
    assert ledger.loc["allocate_storage", "status"] == "failed"
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in ledger.loc["allocate_storage", "error"]
    second = run_cycle(pool, store, engine, now=NOW + timedelta(minutes=5), busy_hosts=[])
    assert [a.kind for a in second.plan.actions] == [ActionKind.ALLOCATE_STORAGE]
    state = engine.pool_state(pool)
    assert len(state.live()) == 5 and len(state.disks) == 1


def test_scale_in_never_picks_a_vm_running_a_task(engine, control, store):
    seed_vms(control, ["etl-a", "etl-b", "etl-c", "etl-d"], spot=("etl-d",))
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [1] * 12}))
    busy = ["etl-a.us-central1-a.c.demo-project.internal", "etl-d"]
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=busy)
    released = [a.target for a in result.plan.actions if a.kind == ActionKind.RELEASE]
    assert sorted(released) == ["etl-b", "etl-c"]
    assert live_names(engine, pool) == ["etl-a", "etl-d"]
    # running task instances unknown (API down): nothing is released
    result = run_cycle(pool, store, engine, now=NOW + timedelta(minutes=5), busy_hosts=None)
    assert not [a for a in result.plan.actions if a.kind == ActionKind.RELEASE]


def test_max_instances_and_budget_hold_against_compute_engine(engine, store):
    store.write_forecasts(forecast_frame("etl", {"cpu": [400] * 12}))
    result = run_cycle(make_pool(max_instances=4), store, engine, now=NOW, busy_hosts=[])
    assert len(live_names(engine, make_pool())) == 4 and result.plan.capped
    result = run_cycle(
        make_pool(max_instances=10, budget_per_hour=2.0),
        store,
        engine,
        now=NOW + timedelta(minutes=5),
        busy_hosts=[],
    )
    assert result.plan.summary["cost_after"] <= 2.0
    assert len(live_names(engine, make_pool())) == 5  # 5 x 0.39/h fits 2.0/h, 6 would not


def test_two_allocator_runs_at_once_do_not_double_provision(emulator_url, control, store):
    pool = make_pool()
    store.write_forecasts(forecast_frame("etl", {"cpu": [30] * 12}))
    results = []

    def one_run(offset: int) -> None:
        engine = ComputeEngine(PROJECT, ZONE, endpoint=emulator_url, retry=FAST)
        results.append(
            run_cycle(
                pool, store, engine, now=NOW + timedelta(minutes=offset), busy_hosts=[], lock_wait_seconds=20
            )
        )

    threads = [threading.Thread(target=one_run, args=(k * 5,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine = ComputeEngine(PROJECT, ZONE, endpoint=emulator_url)
    assert len(live_names(engine, pool)) == 5
    assert sorted(len(r.plan.actions) for r in results) == [0, 1]


def test_quota_errors_become_a_clear_message_in_the_ledger(engine, control, store):
    control.set_quota("us-central1", "CPUS", 16, project=PROJECT)
    store.write_forecasts(forecast_frame("etl", {"cpu": [30] * 12}))
    result = run_cycle(make_pool(), store, engine, now=NOW, busy_hosts=[])
    (error,) = result.outcome.failed.values()
    assert "quota exceeded" in error.lower() and "request a quota increase" in error.lower()
    with pytest.raises(QuotaExceeded):
        engine.apply(result.plan.actions[0], make_pool())
    assert result.plan.actions[0].provisioning == Provisioning.STANDARD


def test_a_cycle_launches_workers_for_queued_slots_and_records_slot_capacity(engine, store):
    # I/O-bound tasks: 0.1 vCPU, but 25 slots running or queued (q0.9: 30) on 4-slot workers
    pool = make_pool(slots_per_instance=4)
    store.write_forecasts(forecast_frame("etl", {"cpu": [0.1] * 12, "slots": [25] * 12}))
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=[])
    assert [(str(a.kind), a.amount, a.resource) for a in result.plan.actions] == [
        ("launch_instances", 8, "slots")
    ]
    assert len(live_names(engine, pool)) == 8
    again = run_cycle(pool, store, engine, now=NOW + timedelta(minutes=5), busy_hosts=[])
    assert again.plan.actions == []
    slots = store.capacity(pool="etl").query("resource == 'slots'")["value"].tolist()
    assert slots == [0.0, 32.0]  # what each cycle read: nothing, then 8 workers x 4 slots


def test_a_cycle_given_observed_demand_sizes_from_it_not_from_the_store(engine, store):
    # The live benchmark's KEDA-style rule polls every few seconds: its samples, not the store's
    # 5-minute series (which says 0 slots here), size the pool: 5 queued + running tasks at 2 slots a VM.
    pool = make_pool(
        name="keda",
        machine_type="n2-standard-2",
        slots_per_instance=2,
        max_instances=6,
        policy={"signal": "recent_demand", "planning_interval_minutes": 5 / 60},
        scale_in={"stabilization_minutes": 5},
    )
    store.write_demand(_slots_rows("keda", 0.0))
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=[], observed={"slots": [0, 3, 5]})
    launched = [a for a in result.plan.actions if a.kind == ActionKind.LAUNCH_INSTANCES]
    assert sum(a.amount for a in launched) == 3, result.plan.summary
    result = run_cycle(pool, store, engine, now=NOW, busy_hosts=[])
    released = [a for a in result.plan.actions if a.kind == ActionKind.RELEASE]
    assert len(released) == 3  # without them the store's 0 slots rule: every idle VM goes


def _slots_rows(pool: str, value: float):
    import pandas as pd

    from airflow_predictive.contracts.demand import series_id

    ts = pd.date_range(end=NOW, periods=3, freq="5min")
    return pd.DataFrame({"series_id": series_id(pool, "slots"), "ts": ts, "value": value})


# ------------------------------------------------------------------ the bucket in progress


def _issue(pool: str, issued_at, start, slots: list[float]):
    frame = forecast_frame(pool, {"slots": slots}, start=start)
    return frame.assign(issued_at=issued_at)


def test_the_bucket_in_progress_is_planned_from_the_issue_before(engine, control, any_store):
    # The loop forecasts, then plans, in one bucket: the newest issue starts at the next bucket. Known
    # work starting in this bucket (10 slots a minute from now) is in the issue before, at lead 1; read
    # from the newest alone, the scale-in hold saw 2 slots and released 4 of the 5 idle VMs it needed.
    from airflow_predictive.runtime.allocation_cycle import PlanningInputs

    pool = make_pool(
        name="hold",
        machine_type="n2-standard-2",
        slots_per_instance=2,
        max_instances=8,
        policy={"min_daily_cycle": -1},
    )
    bucket = NOW  # a bucket boundary
    now = bucket + timedelta(seconds=40)
    any_store.write_forecasts(_issue("hold", bucket - timedelta(minutes=4), bucket, [10.0] + [2.0] * 11))
    any_store.write_forecasts(
        _issue("hold", bucket + timedelta(seconds=30), bucket + timedelta(minutes=5), [2.0] * 12)
    )
    frame = PlanningInputs.read(any_store, [pool], now).forecast_of(pool)
    ts = pd.to_datetime(frame["ts"], utc=True)
    assert ts.min() == pd.Timestamp(bucket) and frame.loc[ts == pd.Timestamp(bucket), "mean"].item() == 10.0
    assert (frame.loc[ts > pd.Timestamp(bucket), "mean"] == 2.0).all() and len(frame) == 13
    control.seed(
        project=PROJECT,
        zone=ZONE,
        instances=[
            {
                "name": f"hold-{k}",
                "machineType": f"zones/{ZONE}/machineTypes/n2-standard-2",
                "labels": {"predictive-pool": "hold"},
            }
            for k in range(5)
        ],
        ready=True,
    )
    result = run_cycle(pool, any_store, engine, now=now, busy_hosts=[])
    assert not [a for a in result.plan.actions if a.kind == ActionKind.RELEASE], result.plan.summary
    assert result.plan.summary["hold"]["slots"] >= 10.0


def test_a_newest_issue_that_covers_the_bucket_in_progress_is_read_alone(any_store):
    from airflow_predictive.runtime.allocation_cycle import PlanningInputs

    pool = make_pool(name="hold", policy={"min_daily_cycle": -1})
    any_store.write_forecasts(
        _issue("hold", NOW - timedelta(minutes=9), NOW - timedelta(minutes=5), [9.0] * 12)
    )
    any_store.write_forecasts(_issue("hold", NOW - timedelta(minutes=4), NOW, [3.0] * 12))
    frame = PlanningInputs.read(any_store, [pool], NOW + timedelta(seconds=40)).forecast_of(pool)
    assert len(frame) == 12 and (frame["mean"] == 3.0).all()

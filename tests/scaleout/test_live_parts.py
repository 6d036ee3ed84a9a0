"""``bench live``'s pure parts: the policies as pool settings, KEDA's window, the seeded workload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from airflow_predictive_tools.bench import live_policies as lp
from airflow_predictive_tools.bench import live_workload as lw
from airflow_predictive_tools.bench.live import lost_tasks, pickup_check, replayed_waits, wait_summary

from airflow_predictive.contracts.pools import Signal, parse_pools

START = datetime(2026, 12, 6, 15, 7, tzinfo=UTC)


def test_keda_sizes_from_five_minutes_of_polls_and_goes_to_zero_after_thirty_idle_seconds() -> None:
    busy_then_idle = [4.0] * 10 + [0.0] * 5
    assert max(lp.keda_window(busy_then_idle)) == 4.0  # HPA's 300 s window still holds the peak
    assert lp.keda_window(busy_then_idle + [0.0]) == [0.0] * 6  # 6 idle polls = cooldownPeriod 30 s
    assert len(lp.keda_window([1.0] * 100)) == 60  # 300 s / 5 s polls


def test_every_policy_is_a_valid_pool_of_the_one_planner() -> None:
    pools = parse_pools(yaml.safe_load(lp.pools_yaml(lp.POLICIES, lp.PoolSettings(), 5)))
    assert sorted(pools) == ["live-cpu", "live-predictive", "live-static"]  # queue: the bench's loop
    assert pools["live-cpu"].policy.signal is Signal.RECENT_DEMAND
    assert pools["live-cpu"].policy.target_utilization == 0.6
    assert pools["live-cpu"].scale_in.stabilization_minutes == 10
    assert pools["live-static"].min_instances == pools["live-static"].max_instances == 5
    assert pools["live-predictive"].policy.signal is Signal.FORECAST
    queue = lp.queue_pool(lp.PoolSettings())
    assert queue.policy.planning_interval_minutes * 60 == pytest.approx(5.0)
    assert queue.slots == 2


def test_unknown_or_repeated_policies_get_one_error_naming_the_choices() -> None:
    for text in ("predictive,keda", "queue,queue", ""):
        with pytest.raises(ValueError, match="predictive, queue, cpu, static"):
            lp.parse_policies(text)


def test_a_predictive_variant_is_the_product_at_another_provisioning_quantile() -> None:
    names = lp.parse_policies("predictive,predictive-q50,queue")
    pools = parse_pools(yaml.safe_load(lp.pools_yaml(names, lp.PoolSettings(), 5)))
    assert sorted(pools) == ["live-predictive", "live-predictive-q50"]
    base, variant = pools["live-predictive"], pools["live-predictive-q50"]
    assert (base.policy.quantile, variant.policy.quantile) == (0.9, 0.5)
    assert variant.policy.model_copy(update={"quantile": 0.9}) == base.policy  # nothing else differs
    assert variant.scale_in == base.scale_in and lp.in_dag("predictive-q50") and not lp.in_dag("queue")
    # its DAG copies are Python the DAG processor parses (a dash is no identifier)
    workload = lw.build_workload(START.replace(minute=10), 30, 7)
    source = lw.dag_source(workload, names, "/tmp/templates", {p: lp.pool_name(p) for p in names})
    compile(source, "live_workload.py", "exec")
    assert "'orders_etl__predictive-q50'" in source
    for text in ("predictive-q0.5", "predictive-q90", "predictive-q7"):
        with pytest.raises(ValueError, match="predictive-q50"):
            lp.parse_policies(text)


def test_the_plan_trail_says_what_each_cycle_covered_and_held() -> None:
    import json

    import pandas as pd
    from airflow_predictive_tools.bench.live import plan_trail

    summary = {
        "sizing": "forecast",
        "quantile": 0.9,
        "demand": {"slots": 9.09, "cpu": 0.2},
        "hold": {"slots": 9.95},
        "instances_before": 0,
        "instances_after": 5,
    }
    rows = pd.DataFrame(
        {"created_at": [pd.Timestamp("2026-12-06 20:28:43", tz="UTC")], "summary": [json.dumps(summary)]}
    )
    assert plan_trail(rows) == [
        {
            "t": "2026-12-06T20:28:43+00:00",
            "sizing": "forecast",
            "quantile": 0.9,
            "demand_slots": 9.09,
            "hold_slots": 9.95,
            "vms_before": 0,
            "vms_after": 5,
        }
    ]


def test_the_same_seed_gives_the_same_runs_and_another_seed_other_user_triggers() -> None:
    a, b = lw.build_workload(START, 30, 7), lw.build_workload(START, 30, 7)
    assert a.triggers == b.triggers and a.scheduled_runs() == b.scheduled_runs()
    assert lw.build_workload(START, 30, 8).triggers != a.triggers
    assert all(START <= t.at < START + timedelta(minutes=28) for t in a.triggers)
    # scheduled runs: every 15 min from +1, every 20 from +6, every 30 from +11
    assert [(at - START).seconds // 60 for at, _ in a.scheduled_runs()] == [1, 6, 11, 16, 26]


def test_cron_puts_the_first_run_at_the_offset_from_the_start() -> None:
    dag = lw.DagSpec("x", "live_etl", period_minutes=20, offset_minutes=6)
    assert lw.cron_minutes(dag, START) == "13,33,53 * * * *"
    with pytest.raises(ValueError, match="divide 60"):
        lw.cron_minutes(lw.DagSpec("y", "live_etl", period_minutes=7), START)


def test_static_holds_the_nominal_peak_of_overlapping_runs() -> None:
    short = lw.build_workload(START, 5, 1, short=True)
    assert short.peak_tasks() == 2  # extract alone, then a fan-out of two
    assert lw.static_instances(short, 2) == 1


def test_queue_wait_percentiles_and_lost_tasks() -> None:
    summary = wait_summary([float(s) for s in range(1, 101)])
    assert (summary["p50_s"], summary["p95_s"], summary["max_s"], summary["share_over_30s"]) == (
        50.5,
        95.0,
        100.0,
        0.7,
    )
    tries = [
        {
            "dag_id": "d",
            "dag_run_id": "r",
            "task_id": "a",
            "map_index": -1,
            "try_number": 1,
            "state": "success",
        },
        {
            "dag_id": "d",
            "dag_run_id": "r",
            "task_id": "b",
            "map_index": 0,
            "try_number": 1,
            "state": "failed",
        },
        {
            "dag_id": "d",
            "dag_run_id": "r",
            "task_id": "b",
            "map_index": 0,
            "try_number": 2,
            "state": "success",
        },
        {
            "dag_id": "d",
            "dag_run_id": "r",
            "task_id": "c",
            "map_index": -1,
            "try_number": 1,
            "state": "failed",
        },
    ]
    assert sorted(k[2] for k in lost_tasks(tries)) == ["b", "c"]


def test_the_keda_loop_launches_without_waiting_for_the_boot() -> None:
    """KEDA sets a replica count and keeps polling: the ``queue`` loop's launch returns while the VM
    still boots (the product's adapter would wait for RUNNING, a whole boot)."""
    from airflow_predictive_tools.bench.live import keda_engine
    from airflow_predictive_tools.emulator.server import running_emulator

    from airflow_predictive.contracts.plan import Action, ActionKind

    pool = lp.queue_pool(lp.PoolSettings())
    with running_emulator(config={"boot_seconds": 60.0}) as url:
        engine = keda_engine(pool.project, pool.zone, url)
        launch = Action(
            pool=pool.name,
            kind=ActionKind.LAUNCH_INSTANCES,
            amount=1,
            reason="test",
            request_id="keda-launch-1",
            resource="slots",
            details={"names": ["live-queue-keda-1"]},
        )
        details = engine.apply(launch, pool)
        state = engine.pool_state(pool)
    assert details["requested"] == ["live-queue-keda-1"]
    # still booting (STAGING from 40 % of the boot): the adapter alone would have returned at RUNNING
    assert [i.status for i in state.instances] in (["PROVISIONING"], ["STAGING"])


def test_a_lost_task_says_on_which_vm_and_why() -> None:
    from airflow_predictive_tools.bench.live import lost_details

    base = {"dag_id": "d__queue", "dag_run_id": "r1", "map_index": -1}
    tries = [
        # ran on live-queue-a, whose VM was deleted while it ran; retried elsewhere
        {**base, "task_id": "a", "try_number": 1, "state": "failed", "hostname": "live-queue-a",
         "queued_when": "2026-12-06T15:00:00Z", "start_date": "2026-12-06T15:00:05Z",
         "end_date": "2026-12-06T15:03:00Z"},
        {**base, "task_id": "a", "try_number": 2, "state": "success", "hostname": "live-queue-b",
         "queued_when": "2026-12-06T15:03:10Z", "start_date": "2026-12-06T15:03:15Z",
         "end_date": "2026-12-06T15:04:00Z"},
        # queued, never started, failed by the queued timeout
        {**base, "task_id": "b", "try_number": 1, "state": "failed", "hostname": "",
         "queued_when": "2026-12-06T15:00:00Z", "start_date": None, "end_date": "2026-12-06T15:10:00Z"},
        {**base, "task_id": "c", "try_number": 1, "state": "success", "hostname": "live-queue-b",
         "queued_when": "2026-12-06T15:00:00Z", "start_date": "2026-12-06T15:00:01Z",
         "end_date": "2026-12-06T15:01:00Z"},
    ]  # fmt: skip
    kills = [{"instance": "live-queue-a", "reason": "deleted", "at": "2026-12-06T15:01:00Z"}]
    log = ["... TaskInstance d__queue r1 b ... stuck in queued, marking failed", "unrelated r1 b"]
    lost = {entry["task_id"]: entry for entry in lost_details(tries, kills, [], log)}
    assert sorted(lost) == ["a", "b"]
    assert lost["a"]["final_state"] == "success"
    assert lost["a"]["tries"][0]["vm"] == "live-queue-a"
    assert lost["a"]["tries"][0]["worker"] == "celery@live-queue-a"
    assert "live-queue-a was deleted at 2026-12-06T15:01:00Z while it ran" in lost["a"]["why"][0]
    assert "never started" in lost["b"]["why"][0]
    assert "live-queue-a" in lost["b"]["why"][0]  # a worker killed while it waited
    assert lost["b"]["scheduler_log"] == [log[0]]


def test_the_seeded_past_is_the_same_dags_at_their_cron_times_and_seeded_user_triggers() -> None:
    from airflow_predictive_tools.bench import live_history as lh

    workload = lw.build_workload(START, 25, 7)
    end = START - timedelta(hours=1)
    begin = end - timedelta(days=1)
    runs, dag_runs = lh.history_records(
        workload, {"predictive": "live-predictive"}, start=begin, end=end, triggers_per_hour=6.0
    )
    again, _ = lh.history_records(
        workload, {"predictive": "live-predictive"}, start=begin, end=end, triggers_per_hour=6.0
    )
    assert runs == again  # same seed, same past
    scheduled = [r for r in dag_runs if r["run_type"] == "scheduled"]
    manual = [r for r in dag_runs if r["run_type"] == "manual"]
    # orders_etl at minute 8, 23, 38 and 53 of every hour, as its live cron (START 15:07 + 1 min)
    orders = {r["start_date"].minute for r in scheduled if r["dag_id"] == "orders_etl__predictive"}
    assert orders == {8, 23, 38, 53}
    assert 96 * 0.9 < sum(r["dag_id"] == "orders_etl__predictive" for r in scheduled) <= 96
    assert 6 * 24 * 0.6 < len(manual) < 6 * 24 * 1.4 and all(
        r["triggered_by"].endswith("@predictive") for r in manual
    )
    assert all(r["end_date"] <= end for r in runs)
    one = [r for r in runs if r["run_id"] == scheduled[0]["run_id"] and r["dag_id"] == scheduled[0]["dag_id"]]
    widths = {s.name: s.width for s in lw.TEMPLATES[0].stages}
    assert {t: sum(r["task_id"] == t for r in one) for t in widths} == widths
    transform = next(r for r in one if r["task_id"] == "transform")
    factor = lh.length_factor("orders_etl", transform["run_id"], "transform", transform["map_index"], 7)
    assert transform["duration"] == pytest.approx(90 * factor)
    assert transform["queue"] == "live-predictive" and transform["rss_peak_mb"] == 128.0


def test_the_workload_starts_on_a_bucket_boundary_a_lead_after_the_warm_up() -> None:
    from airflow_predictive_tools.bench.live import workload_start

    pools = lp.PoolSettings(lead_minutes=3.0, cadence_minutes=5.0)
    now = datetime(2026, 12, 6, 17, 31, 10, tzinfo=UTC)
    assert workload_start(now, 3.0, pools) == datetime(2026, 12, 6, 17, 40, tzinfo=UTC)
    assert workload_start(now.replace(minute=34), 3.0, pools) == datetime(2026, 12, 6, 17, 45, tzinfo=UTC)
    odd = workload_start(now, 1.7, lp.PoolSettings(lead_minutes=1.5, cadence_minutes=1.5))
    assert odd.second == 0 and odd >= now + timedelta(minutes=3.2)


def test_the_tries_are_replayed_through_the_worker_slots_the_pool_had() -> None:
    at = [(START + timedelta(seconds=5 * i)).isoformat() for i in range(40)]
    # no slot until 60 s (a VM's boot), then one
    samples = [{"t": t, "predictive": {"slots": 0 if i < 12 else 1}} for i, t in enumerate(at)]

    def tried(queued_s: float, start_s: float, run_s: float) -> dict:
        iso = (START + timedelta(seconds=queued_s)).isoformat()
        begin = START + timedelta(seconds=start_s)
        return {
            "queued_when": iso,
            "start_date": begin.isoformat(),
            "end_date": (begin + timedelta(seconds=run_s)).isoformat(),
        }

    # two tries queued at 10 s, 30 s each: the first waits for the slot, the second for the first
    tries = [tried(10, 62, 30), tried(10, 93, 30), {"queued_when": None, "start_date": None}]
    assert replayed_waits(tries, samples, "predictive") == pytest.approx([50.0, 80.0])
    assert replayed_waits(tries, samples, "queue") == []


def test_the_pickup_learned_on_the_first_half_of_the_tries_is_checked_on_the_second() -> None:
    at = [(START + timedelta(seconds=5 * i)).isoformat() for i in range(1000)]
    samples = [{"t": t, "static": {"slots": 50}} for t in at]  # never short of a slot

    def tried(queued_s: float, waited_s: float) -> dict:
        begin = START + timedelta(seconds=queued_s + waited_s)
        return {
            "queued_when": (START + timedelta(seconds=queued_s)).isoformat(),
            "start_date": begin.isoformat(),
            "end_date": (begin + timedelta(seconds=20)).isoformat(),
        }

    # Airflow took 4 s to pick each try up in the first half and 6 s in the second
    tries = [tried(100 * i, 4.0) for i in range(25)] + [tried(2500 + 100 * i, 6.0) for i in range(25)]
    got = pickup_check(tries, samples, "static")
    assert got == {
        "pickup_s": 4.0,
        "second_half_tries": 25,
        "second_half_measured_p95_s": 6.0,
        "second_half_replayed_p95_s": 0.0,
        "second_half_replayed_plus_pickup_p95_s": 4.0,
    }
    assert pickup_check(tries[:30], samples, "static") == {}  # too few tries to split

"""Pool configuration: the example file loads; each kind of mistake is one error naming file and field."""

from __future__ import annotations

import pytest
import yaml

from airflow_predictive.contracts.pools import EXAMPLE_POOLS, Backend, PoolConfigError, load_pools


def _write(tmp_path, pools: dict) -> str:
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump({"pools": pools}))
    return str(path)


GOOD = {"project": "demo-project", "zone": "us-central1-a", "machine_type": "n2-standard-8"}


def test_example_pools_load_with_machine_specs_and_default_prices():
    pools = load_pools(EXAMPLE_POOLS)
    etl = pools["etl-workers"]
    assert etl.backend is Backend.INSTANCES
    assert (etl.machine.vcpus, etl.machine.memory_gib) == (8.0, 32.0)
    assert 0 < etl.price(spot=True) < etl.price(spot=False)
    assert pools["ml-training"].group == "ml-training-std"
    assert str(etl.mode) == "forecast_and_scale" and str(pools["ml-training"].mode) == "forecast_only"


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"machine_type": "n9-mega-7"}, "pools.etl", "unknown machine_type 'n9-mega-7'"),
        ({"min_instances": 5, "max_instances": 2}, "pools.etl", "min_instances (5) > max_instances (2)"),
        (
            {"lead_time_minutes": {"boot": -1}},
            "pools.etl.lead_time_minutes.boot",
            "greater than or equal to 0",
        ),
        ({"zone": "uscentral1"}, "pools.etl.zone", "not a Compute Engine zone"),
        ({"backend": "managed_instance_group"}, "pools.etl", "needs 'group'"),
        ({"policy": {"quantile": 1.5}}, "pools.etl.policy.quantile", "less than 1"),
        ({"colour": "blue"}, "pools.etl.colour", "Extra inputs are not permitted"),
        ({"storage": {"max_disk_gib": 0.5}}, "pools.etl.storage.max_disk_gib", "greater than or equal to 10"),
    ],
)
def test_invalid_pool_settings_fail_with_one_message_naming_the_field(tmp_path, settings, field, words):
    path = _write(tmp_path, {"etl": {**GOOD, **settings}})
    with pytest.raises(PoolConfigError) as info:
        load_pools(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}")
    assert words in message


def test_custom_machine_types_and_explicit_shapes_are_accepted(tmp_path):
    path = _write(
        tmp_path,
        {
            "a": {**GOOD, "machine_type": "n2-custom-6-24576"},
            "b": {**GOOD, "machine_type": "a3-megagpu-8g", "vcpus": 208, "memory_gib": 1872},
        },
    )
    pools = load_pools(path)
    assert pools["a"].machine.vcpus == 6 and pools["a"].machine.memory_gib == 24
    assert pools["b"].machine.vcpus == 208


def test_missing_file_and_wrong_shape_are_clear(tmp_path):
    with pytest.raises(PoolConfigError, match="pools file not found"):
        load_pools(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(PoolConfigError, match="top-level 'pools:' mapping"):
        load_pools(bad)


def test_a_key_given_twice_is_an_error_naming_file_line_and_key(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(
        "pools:\n"
        "  etl:\n"
        "    project: demo-project\n"
        "    zone: us-central1-a\n"
        "    machine_type: n2-standard-8\n"
        "    mode: forecast_only\n"
        "    mode: forecast_and_scale\n"
    )
    with pytest.raises(PoolConfigError) as info:
        load_pools(path)
    assert str(info.value).startswith(f"{path}:7: duplicate key 'mode' (first given on line 6)")


def test_a_merge_key_may_be_overridden(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(
        "defaults: &defaults {project: demo-project, zone: us-central1-a, machine_type: n2-standard-8}\n"
        "pools:\n"
        "  etl: {<<: *defaults, zone: us-central1-b}\n"
    )
    with pytest.raises(PoolConfigError, match="unknown top-level key"):  # not "duplicate key"
        load_pools(path)


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_bytes("pools:\n  etl:\n    queue: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PoolConfigError) as info:
        load_pools(path)
    assert str(info.value) == f"{path}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"prices": {"standard": float("inf")}}, "pools.etl.prices.standard"),
        ({"budget_per_hour": float("nan")}, "pools.etl.budget_per_hour"),
        ({"thresholds": {"cpu": float("inf")}}, "pools.etl.thresholds.cpu"),
        ({"storage": {"max_total_gib": float("inf")}}, "pools.etl.storage.max_total_gib"),
        (
            {"policy": {"planning_interval_minutes": float("inf")}},
            "pools.etl.policy.planning_interval_minutes",
        ),
        ({"lead_time_minutes": {"boot": float("inf")}}, "pools.etl.lead_time_minutes.boot"),
        ({"vcpus": float("inf"), "memory_gib": 32}, "pools.etl.vcpus"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(tmp_path, settings, field):
    path = _write(tmp_path, {"etl": {**GOOD, **settings}})
    with pytest.raises(PoolConfigError) as info:
        load_pools(path)
    assert str(info.value) == f"{path}: {field}: Input should be a finite number"


@pytest.mark.parametrize("name", ["etl.v2", "9etl", "-etl", "etl-", "Etl", "e" * 64, "etl\n"])
def test_pool_names_compute_engine_would_refuse_fail_at_load_naming_pool_and_rule(tmp_path, name):
    path = _write(tmp_path, {name: GOOD})
    with pytest.raises(PoolConfigError) as info:
        load_pools(path)
    message = str(info.value)
    assert message.startswith(f"{path}: pools.{name}")
    assert f"pool name {name!r} cannot name Compute Engine labels and instances: " in message
    assert "a lowercase letter first, then lowercase letters, digits, '-' or '_'" in message


def test_pool_names_compute_engine_accepts_load_and_name_their_instances_validly(tmp_path):
    import re

    from airflow_predictive.contracts.capacity import PoolState
    from airflow_predictive.planning.planner import plan
    from tests.allocation.conftest import NOW, forecast_frame

    names = ["etl", "etl_v2", "a", "team-a-heavy", "x" + "9" * 62]
    pools = load_pools(_write(tmp_path, {name: {**GOOD, "min_instances": 1} for name in names}))
    for name, pool in pools.items():
        launch = plan(forecast_frame(name, {"cpu": [1]}), PoolState(), pool, NOW).actions[0]
        for instance in launch.details["names"]:
            assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", instance), instance


def test_a_name_prefix_compute_engine_would_refuse_fails_at_load(tmp_path):
    path = _write(tmp_path, {"etl": {**GOOD, "launch": {"name_prefix": "9etl"}}})
    with pytest.raises(PoolConfigError, match=r"pools\.etl\.launch\.name_prefix: name_prefix '9etl' cannot"):
        load_pools(path)

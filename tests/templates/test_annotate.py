"""Binding tasks to stages: Airflow resource hints are set and the binding survives DAG serialization."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from airflow_predictive.plugins.upcoming import task_hints
from airflow_predictive.templates import TemplateLookupError, bound_stage, stage_kwargs
from airflow_predictive.templates.loader import clear_cache

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def roundtrip(dag):
    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def test_stage_kwargs_sets_airflow_resource_hints():
    kwargs = stage_kwargs("etl_batch", "transform", queue="qs_etl")
    assert kwargs["resources"] == {"cpus": 2.0, "ram": 8192, "disk": 51200, "gpus": 0}
    assert kwargs["queue"] == "qs_etl"
    assert kwargs["pool_slots"] == 1
    binding = kwargs["executor_config"]["predictive"]
    assert binding["template"] == "etl_batch" and binding["stage"] == "transform"
    assert binding["parallelism"] == 4 and binding["interruptible"] is True
    assert binding["capacity_pool"] == "qs_etl"  # the queue's pool, unless the pools file maps it
    assert "pool" not in kwargs  # no Airflow pool named by the stage: the task keeps its own


def test_the_author_says_where_a_bound_task_runs_and_it_is_never_default_unasked():
    # Issue #20: stage_kwargs set queue="default", and the operator's own queue= was a TypeError.
    with pytest.raises(TemplateLookupError, match=r"names no queue: .*queue='<queue>'"):
        stage_kwargs("etl_batch", "transform")
    kwargs = stage_kwargs("etl_batch", "transform", queue="qs_etl", pool="etl_slots")
    assert (kwargs["queue"], kwargs["pool"]) == ("qs_etl", "etl_slots")
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG

    with DAG("bound_queue", schedule=None) as dag:
        BashOperator(task_id="t", bash_command="true", **kwargs)
        kept = BashOperator(task_id="mine", bash_command="true", queue="qs_load")
    from airflow_predictive.templates import apply_template

    apply_template(dag, "etl_batch", {"load": "mine"})
    assert dag.get_task("t").queue == "qs_etl" and dag.get_task("t").pool == "etl_slots"
    # a stage without a queue leaves the task on its own queue, and counts it in that queue's pool
    assert kept.queue == "qs_load"
    assert kept.executor_config["predictive"]["capacity_pool"] == "qs_load"


def test_unknown_template_or_stage_names_both():
    with pytest.raises(
        TemplateLookupError, match="unknown workflow template 'etl'; known templates: .*etl_batch"
    ):
        stage_kwargs("etl", "extract")
    with pytest.raises(
        TemplateLookupError, match="template 'etl_batch' has no stage 'extrakt'; its stages are: extract"
    ):
        stage_kwargs("etl_batch", "extrakt")


def test_bound_tasks_survive_dag_serialization():
    bag = DagBag(dag_folder=str(REPO / "tests" / "dags" / "template_etl.py"))
    assert not bag.import_errors
    dag = roundtrip(bag.dags["template_etl"])
    tasks = {t.task_id: t for t in dag.tasks}
    assert bound_stage(tasks["extract"]) == ("etl_batch", "extract")  # classic operator + kwargs
    assert bound_stage(tasks["transform"]) == ("etl_batch", "transform")  # @task + .expand()
    assert bound_stage(tasks["load_marts"]) == ("etl_batch", "load")  # apply_template by pattern
    extract = task_hints(tasks["extract"])
    assert extract["resources"] == {"cpus": 1.0, "ram_mb": 2048.0, "disk_mb": 51200.0, "gpus": 0.0}
    assert (extract["network_mbps"], extract["duration_s"], extract["source"]) == (1000.0, 900.0, "template")
    transform = task_hints(tasks["transform"])
    assert transform["mapped"] and transform["parallelism"] == 4 and transform["upstream"] == ["extract"]
    assert transform["resources"]["ram_mb"] == 8192.0
    load = task_hints(tasks["load_warehouse"])
    assert load["resources"]["ram_mb"] == 4096.0 and load["stage"] == "load"


def test_dag_with_unknown_stage_is_an_import_error_naming_template_and_stage():
    bag = DagBag(dag_folder=str(HERE / "dags" / "template_bad_stage.py"))
    assert "template_bad_stage" not in bag.dags
    (message,) = bag.import_errors.values()
    assert "workflow template 'etl_batch' has no stage 'transfrom'" in message


@pytest.fixture
def policy(monkeypatch):
    """The provider's cluster policy, registered by its ``airflow.policy`` entry point on install."""
    from airflow import settings

    from airflow_predictive.plugins import cluster_policy as policy_module

    manager = settings.get_policy_plugin_manager()
    assert manager.get_plugin("predictive") is policy_module  # what a platform team relies on
    clear_cache()
    yield monkeypatch
    clear_cache()


def test_cluster_policy_binds_tasks_without_touching_the_dag_file(policy):
    policy.setenv("AIRFLOW__PREDICTIVE__TEMPLATES_FOLDER", str(HERE / "policy_templates"))
    bag = DagBag(dag_folder=str(HERE / "policy_dags"))
    assert not bag.import_errors
    dag = roundtrip(bag.dags["nightly_sales"])
    tasks = {t.task_id: t for t in dag.tasks}
    assert bound_stage(tasks["pull_orders"]) == ("platform_etl", "pull")
    assert bound_stage(tasks["crunch"]) == ("platform_etl", "crunch")
    assert bound_stage(tasks["notify"]) is None
    assert task_hints(tasks["crunch"])["resources"]["ram_mb"] == 30 * 1024


def test_cluster_policy_with_broken_templates_logs_and_leaves_tasks_untouched(policy, tmp_path, caplog):
    (tmp_path / "broken.yaml").write_text(
        "name: platform_etl\ndags: ['nightly_*']\nstages:\n  - name: pull\n    cpu: many\n"
    )
    policy.setenv("AIRFLOW__PREDICTIVE__TEMPLATES_FOLDER", str(tmp_path))
    with caplog.at_level(logging.ERROR, logger="airflow_predictive.plugins.cluster_policy"):
        bag = DagBag(dag_folder=str(HERE / "policy_dags"))
    assert not bag.import_errors
    assert all(bound_stage(t) is None for t in bag.dags["nightly_sales"].tasks)
    assert "broken.yaml:5: stages[0].cpu" in caplog.text

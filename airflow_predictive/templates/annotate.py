"""Bind Airflow tasks to workflow-template stages, setting Airflow's own resource hints.

Two ways for DAG authors, one for platform teams:

* ``stage_kwargs("etl_batch", "extract")`` returns task keyword arguments, for classic operators
  (``BashOperator(task_id=..., **stage_kwargs(...))``) and ``@task(**stage_kwargs(...))`` alike;
* ``apply_template(dag, "etl_batch", {"extract": "extract_*", ...})`` binds a whole DAG by task-id
  patterns (default: the patterns in the template's stages);
* the cluster policy (:mod:`airflow_predictive.plugins.cluster_policy`) does the same without touching DAGs.

Binding sets ``resources`` (cpus, ram, disk, gpus), ``queue``, ``pool_slots`` (and ``pool`` when the
stage names one) and, for the Kubernetes executor, ``executor_config["pod_override"]`` requests. The
template and stage names, with the hints Airflow has no field for (network, capacity pool,
interruptible, parallelism, duration), are stored under ``executor_config["predictive"]``:
``executor_config`` round-trips through DAG serialization unchanged and is exposed by the REST API's
task instances, while executors ignore keys they do not know (Celery and Local ignore the whole
dict, Kubernetes reads only ``pod_override``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_predictive.templates.loader import registry
from airflow_predictive.templates.models import Stage, StageQueueError, Template, TemplateLookupError

EXECUTOR_CONFIG_KEY = "predictive"
MB_PER_GIB = 1024


def _lookup(
    template: str | Template, stage: str | Stage, folder: Path | str | None
) -> tuple[Template, Stage]:
    tpl = template if isinstance(template, Template) else registry(folder).get(template)
    stg = stage if isinstance(stage, Stage) else tpl.stage(stage)
    return tpl, stg


def binding(template: Template, stage: Stage, queue: str) -> dict[str, Any]:
    """The ``executor_config["predictive"]`` entry of a task bound to ``stage``.

    :param template: the template.
    :param stage: one of its stages.
    :param queue: the Airflow queue the task runs on.
    """
    return {
        "template": template.name,
        "stage": stage.name,
        "upstream_stages": list(template.upstream(stage.name)),
        "capacity_pool": stage.pool_for(queue),
        "cpu": stage.cpu,
        "memory_gib": stage.memory,
        "storage_gib": stage.storage,
        "network_mbps": stage.network,
        "gpus": stage.gpus,
        "duration_s": stage.duration,
        "interruptible": stage.interruptible,
        "parallelism": stage.parallelism,
        "service": stage.service,
    }


def _pod_override(stage: Stage) -> Any:
    try:
        from kubernetes.client import models as k8s
    except ImportError:
        raise TemplateLookupError(
            "kubernetes=True needs the 'kubernetes' package (installed with the cncf.kubernetes provider)"
        ) from None
    requests = {"cpu": f"{stage.cpu:g}", "memory": f"{round(stage.memory * MB_PER_GIB)}Mi"}
    if stage.storage:
        requests["ephemeral-storage"] = f"{round(stage.storage * MB_PER_GIB)}Mi"
    limits = {"nvidia.com/gpu": str(stage.gpus)} if stage.gpus else None
    return k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="base", resources=k8s.V1ResourceRequirements(requests=requests, limits=limits)
                )
            ]
        )
    )


def stage_kwargs(
    template: str | Template,
    stage: str | Stage,
    *,
    queue: str | None = None,
    pool: str | None = None,
    kubernetes: bool = False,
    executor_config: Mapping[str, Any] | None = None,
    templates_folder: Path | str | None = None,
) -> dict[str, Any]:
    """Task keyword arguments that bind a task to a template stage, and say where it runs.

    Where the task runs is said here, once: ``queue`` and ``pool`` take the place of the operator's
    own arguments (passing them to the operator as well is Python's "multiple values" error). A
    stage that names no queue needs ``queue``: a task is never sent to ``default`` unasked.

    Raises :class:`TemplateLookupError` naming the template and the stage when either is unknown, or
    when no queue is named, so the DAG shows up in the import errors with a message saying what to fix.

    :param template: template name (or a loaded :class:`Template`).
    :param stage: stage name (or a :class:`Stage` of that template).
    :param queue: the Airflow queue the task runs on (overrides the stage's).
    :param pool: the Airflow pool the task runs in (overrides the stage's ``airflow_pool``).
    :param kubernetes: also set ``executor_config["pod_override"]`` resource requests (KubernetesExecutor).
    :param executor_config: an executor_config of your own to merge with.
    :param templates_folder: user templates folder; default ``[predictive] templates_folder``.
    """
    tpl, stg = _lookup(template, stage, templates_folder)
    queue = queue or stg.queue
    if not queue:
        raise StageQueueError(
            f"stage {stg.name!r} of template {tpl.name!r} names no queue: say where the task runs with "
            f"stage_kwargs({tpl.name!r}, {stg.name!r}, queue='<queue>') (the Airflow queue whose "
            "capacity pool runs it; 'default' for the default queue)"
        )
    config = dict(executor_config or {})
    config[EXECUTOR_CONFIG_KEY] = binding(tpl, stg, queue)
    if kubernetes:
        config["pod_override"] = _pod_override(stg)
    kwargs: dict[str, Any] = {
        "resources": {
            "cpus": stg.cpu,
            "ram": round(stg.memory * MB_PER_GIB),
            "disk": round(stg.storage * MB_PER_GIB),
            "gpus": stg.gpus,
        },
        "queue": queue,
        "pool_slots": stg.pool_slots,
        "executor_config": config,
    }
    if pool or stg.airflow_pool:
        kwargs["pool"] = pool or stg.airflow_pool
    return kwargs


def bind_task(task: Any, template: str | Template, stage: str | Stage, *, kubernetes: bool = False) -> None:
    """Bind an existing task (operator or mapped operator) to a template stage, in place.

    A stage that names a queue moves the task there; otherwise the task keeps its own queue.

    :param task: the Airflow task.
    :param template: template name or object.
    :param stage: stage name or object.
    :param kubernetes: also set pod resource requests for the KubernetesExecutor.
    """
    from airflow.sdk.definitions.operator_resources import Resources

    tpl, stg = _lookup(template, stage, None)
    kwargs = stage_kwargs(
        tpl,
        stg,
        queue=stg.queue or _task_queue(task),
        kubernetes=kubernetes,
        executor_config=_executor_config(task),
    )
    resources = Resources(**kwargs.pop("resources"))
    if hasattr(task, "partial_kwargs"):  # a mapped operator keeps its operator arguments here
        task.partial_kwargs.update(kwargs, resources=resources)
        return
    task.resources = resources
    for name, value in kwargs.items():
        setattr(task, name, value)


def _task_queue(task: Any) -> str | None:
    """The queue a stage without one leaves the task on (the stage's own queue wins)."""
    if hasattr(task, "partial_kwargs"):
        return task.partial_kwargs.get("queue") or getattr(task, "queue", None)
    return getattr(task, "queue", None)


def _executor_config(task: Any) -> dict[str, Any]:
    if hasattr(task, "partial_kwargs"):
        return dict(task.partial_kwargs.get("executor_config") or {})
    return dict(getattr(task, "executor_config", None) or {})


def bound_stage(task: Any) -> tuple[str, str] | None:
    """``(template, stage)`` a task is bound to, or None.

    :param task: an operator, mapped operator or serialized operator.
    """
    entry = _executor_config(task).get(EXECUTOR_CONFIG_KEY)
    return (entry["template"], entry["stage"]) if isinstance(entry, Mapping) else None


def apply_template(
    dag: Any,
    template: str | Template,
    stages: Mapping[str, str | Sequence[str]] | None = None,
    *,
    kubernetes: bool = False,
    strict: bool = True,
    templates_folder: Path | str | None = None,
) -> dict[str, str]:
    """Bind the tasks of a DAG to the stages of a template by task-id glob patterns.

    Tasks already bound (e.g. with :func:`stage_kwargs`) keep their binding; tasks matching no
    pattern stay as they are.

    :param dag: the DAG.
    :param template: template name or object.
    :param stages: ``{stage: pattern or [patterns]}``; default: each stage's ``tasks`` patterns.
    :param kubernetes: also set pod resource requests for the KubernetesExecutor.
    :param strict: raise when a stage or pattern is unknown or a pattern matches no task.
    :param templates_folder: user templates folder; default ``[predictive] templates_folder``.
    :return: ``{task_id: stage}`` of the tasks bound by this call.
    """
    tpl = template if isinstance(template, Template) else registry(templates_folder).get(template)
    if stages is None:
        patterns = {s.name: list(s.tasks) for s in tpl.stages if s.tasks}
    else:
        patterns = {name: [p] if isinstance(p, str) else list(p) for name, p in stages.items()}
    for name in patterns:
        tpl.stage(name)  # unknown stage: raise naming the template and its stages
    bound: dict[str, str] = {}
    for stage_name, globs in patterns.items():
        for pattern in globs:
            matched = [t for t in dag.tasks if fnmatch.fnmatchcase(t.task_id, pattern)]
            if strict and not matched:
                raise TemplateLookupError(
                    f"pattern {pattern!r} of stage {stage_name!r} (template {tpl.name!r}) matches no task "
                    f"of DAG {dag.dag_id!r}"
                )
            for task in matched:
                if task.task_id in bound or bound_stage(task) is not None:
                    continue
                bind_task(task, tpl, stage_name, kubernetes=kubernetes)
                bound[task.task_id] = stage_name
    return bound

"""Cluster policy: platform teams bind DAGs to templates without touching DAG files.

Registered through the ``airflow.policy`` entry point. A template that lists ``dags`` patterns is
applied to matching DAGs: each task whose id matches a stage's ``tasks`` patterns is bound to that
stage. Built-in templates list no DAGs, so the policy does nothing until a platform team adds a
template with ``dags`` to ``[predictive] templates_folder``. A broken template folder or binding is
logged and the task is left untouched: a policy must never stop every DAG of a deployment from parsing.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.policies import hookimpl

from airflow_predictive.templates.annotate import bind_task, bound_stage
from airflow_predictive.templates.loader import registry

log = logging.getLogger(__name__)


def bind_by_policy(task: Any) -> tuple[str, str] | None:
    """Bind ``task`` to the first stage of a policy template matching its DAG and task id.

    :param task: the task being parsed.
    :return: ``(template, stage)`` bound, or None.
    """
    if bound_stage(task) is not None:
        return None
    dag_id = getattr(task, "dag_id", None)
    if not dag_id:
        return None
    try:
        templates = [t for t in registry() if t.dags and t.matches_dag(dag_id)]
    except Exception as exc:
        log.error(
            "predictive cluster policy: cannot load workflow templates, task %s untouched: %s",
            task.task_id,
            exc,
        )
        return None
    for template in templates:
        for stage in template.stages:
            if stage.matches(task.task_id):
                try:
                    bind_task(task, template, stage)
                except Exception as exc:
                    log.error(
                        "predictive cluster policy: cannot bind %s.%s to %s/%s, left untouched: %s",
                        dag_id,
                        task.task_id,
                        template.name,
                        stage.name,
                        exc,
                    )
                    return None
                return template.name, stage.name
    return None


@hookimpl
def task_policy(task: Any) -> None:
    """Airflow cluster policy hook: bind tasks of policy-templated DAGs to their stages.

    :param task: the task being parsed.
    """
    bind_by_policy(task)

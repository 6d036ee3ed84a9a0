"""Workflow templates: stages with typical resources, loaded from YAML, bound to Airflow tasks."""

from airflow_predictive.templates.annotate import (
    EXECUTOR_CONFIG_KEY,
    apply_template,
    bind_task,
    bound_stage,
    stage_kwargs,
)
from airflow_predictive.templates.loader import TemplateError, TemplateRegistry, load_file, registry
from airflow_predictive.templates.models import Stage, Template, TemplateLookupError

__all__ = [
    "EXECUTOR_CONFIG_KEY",
    "Stage",
    "Template",
    "TemplateError",
    "TemplateLookupError",
    "TemplateRegistry",
    "apply_template",
    "bind_task",
    "bound_stage",
    "load_file",
    "registry",
    "stage_kwargs",
]

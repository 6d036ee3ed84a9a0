"""Workflow templates: named stages with the resources, duration and placement each stage needs.

A template describes a kind of workflow (ETL batch, ML training, ...) as an ordered list of stages.
Quantities are read from human units (``4GiB``, ``500Mbps``, ``45m``) and kept in the demand
contract's units (vCPU, GiB, Mbit/s, seconds) so the forecaster and the planner never convert.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from airflow_predictive.contracts.demand import validate_pool_name
from airflow_predictive.templates.units import (
    format_duration,
    parse_bytes_gib,
    parse_duration_s,
    parse_rate_mbps,
)

GiB = Annotated[float, BeforeValidator(parse_bytes_gib), Field(ge=0)]
Mbps = Annotated[float, BeforeValidator(parse_rate_mbps), Field(ge=0)]
Seconds = Annotated[float, BeforeValidator(parse_duration_s), Field(gt=0)]
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Stage(BaseModel):
    """One stage of a workflow: what a task bound to it typically needs and where it runs.

    :param name: stage name, unique in its template.
    :param cpu: vCPUs per task instance.
    :param memory: memory per task instance (GiB after parsing).
    :param storage: local/attached storage per task instance (GiB).
    :param network: sustained network rate per task instance (Mbit/s).
    :param gpus: GPUs per task instance.
    :param duration: typical duration (seconds after parsing) used until the task has history.
    :param queue: Airflow queue the tasks go to (Celery queue / worker group); None: the binding names
        it (``stage_kwargs(..., queue=...)``, or the task's own queue for ``apply_template``).
    :param capacity_pool: Compute Engine capacity pool that serves the queue (defaults to the queue).
    :param airflow_pool: Airflow pool to run in (must exist in Airflow); None keeps the task's own.
    :param pool_slots: Airflow pool slots per task instance.
    :param interruptible: the stage tolerates preemption, so it may run on spot capacity.
    :param parallelism: typical number of mapped task instances running at once.
    :param service: a long-running service stage (runs until stopped; duration is its review period).
    :param after: names of the stages that must finish first; None means the previous stage.
    :param tasks: task-id glob patterns bound to this stage by ``apply_template`` and the cluster policy.
    """

    # allow_inf_nan: `cpu: .inf` would validate, then break JSON output and the planner.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=_NAME)
    description: str = ""
    cpu: float = Field(gt=0)
    memory: GiB
    storage: GiB = 0.0
    network: Mbps = 0.0
    gpus: int = Field(0, ge=0)
    duration: Seconds
    # No default queue: a stage that names none must not send tasks to `default` behind the author's back.
    queue: str | None = None
    capacity_pool: str | None = None
    airflow_pool: str | None = None
    pool_slots: int = Field(1, ge=1)
    interruptible: bool = False
    parallelism: int = Field(1, ge=1)
    service: bool = False
    after: tuple[str, ...] | None = None
    tasks: tuple[str, ...] = ()

    @field_validator("capacity_pool")
    @classmethod
    def _pool_name(cls, value: str | None) -> str | None:
        return None if value is None else validate_pool_name(value)

    def pool_for(self, queue: str) -> str:
        """The capacity pool whose demand a task of this stage on ``queue`` adds to.

        :param queue: the Airflow queue the task runs on.
        """
        return self.capacity_pool or validate_pool_name(queue)

    def demand(self) -> dict[str, float]:
        """Demand of the whole stage while it runs, in the demand contract's resources and units."""
        n = self.parallelism
        return {
            "cpu": self.cpu * n,
            "memory": self.memory * n,
            "storage": self.storage * n,
            "network": self.network * n,
        }

    def matches(self, task_id: str) -> bool:
        """True when ``task_id`` matches one of the stage's task patterns.

        :param task_id: the Airflow task id (with its task-group prefix).
        """
        return any(fnmatch.fnmatchcase(task_id, pattern) for pattern in self.tasks)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The stage in the human units a template file uses."""
        data = self.model_dump(exclude_defaults=True)
        data["memory"] = _gib(self.memory)
        if "storage" in data:
            data["storage"] = _gib(self.storage)
        if "network" in data:
            data["network"] = f"{self.network:g}Mbps"
        data["duration"] = format_duration(self.duration)
        for key in ("after", "tasks"):
            if key in data:
                data[key] = list(data[key])
        return data


def _gib(value: float) -> str:
    return f"{value:g}GiB" if value >= 1 else f"{value * 1024:g}MiB"


class Template(BaseModel):
    """A workflow template: ordered stages plus, for platform teams, which DAGs the policy binds.

    :param name: template name used by DAG authors (``stage("etl_batch", "extract")``).
    :param description: what kind of workflow this is.
    :param stages: the stages, in order.
    :param dags: DAG-id glob patterns the cluster policy applies this template to (empty: none).
    """

    # allow_inf_nan: `cpu: .inf` would validate, then break JSON output and the planner.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=_NAME)
    description: str = ""
    stages: tuple[Stage, ...] = Field(min_length=1)
    dags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _stage_names(self) -> Template:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage {stage.name!r} is defined twice")
            seen.add(stage.name)
        for index, stage in enumerate(self.stages):
            for upstream in stage.after or ():
                if upstream not in seen:
                    raise StageReferenceError(index, upstream, sorted(seen))
                if upstream == stage.name:
                    raise StageReferenceError(index, upstream, sorted(seen), itself=True)
        return self

    def stage(self, name: str) -> Stage:
        """Return the stage called ``name`` or raise naming the template and its stages.

        :param name: stage name.
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UnknownStageError(
            f"workflow template {self.name!r} has no stage {name!r}; "
            f"its stages are: {', '.join(s.name for s in self.stages)}"
        )

    def upstream(self, name: str) -> tuple[str, ...]:
        """Stages that must finish before stage ``name`` starts.

        :param name: stage name.
        """
        names = [s.name for s in self.stages]
        stage = self.stage(name)
        if stage.after is not None:
            return stage.after
        index = names.index(name)
        return (names[index - 1],) if index else ()

    def matches_dag(self, dag_id: str) -> bool:
        """True when the cluster policy should apply this template to ``dag_id``.

        :param dag_id: the DAG id.
        """
        return any(fnmatch.fnmatchcase(dag_id, pattern) for pattern in self.dags)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The template as a template file would write it."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        if self.dags:
            data["dags"] = list(self.dags)
        data["stages"] = [s.to_yaml_dict() for s in self.stages]
        return data


class TemplateLookupError(LookupError):
    """A DAG names a template or stage that does not exist; the message names both."""


class StageQueueError(TemplateLookupError):
    """A task was bound to a stage without a queue, and the binding named none either."""


class UnknownStageError(TemplateLookupError):
    """A template has no stage of that name."""


class StageReferenceError(ValueError):
    """A stage's ``after`` names a stage that is not in the template."""

    def __init__(self, index: int, name: str, known: list[str], itself: bool = False) -> None:
        self.index = index
        self.name = name
        reason = "a stage cannot run after itself" if itself else f"known stages: {', '.join(known)}"
        super().__init__(f"unknown stage {name!r} in 'after'; {reason}")

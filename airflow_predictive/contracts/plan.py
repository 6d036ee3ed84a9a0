"""The plan contract: actions the planner proposes, the GCE hook applies and the ledger records."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class ActionKind(StrEnum):
    RESIZE_GROUP = "resize_group"
    LAUNCH_INSTANCES = "launch_instances"
    RESIZE_INSTANCE = "resize_instance"
    ALLOCATE_STORAGE = "allocate_storage"
    RAISE_BANDWIDTH = "raise_bandwidth"
    RELEASE = "release"


class ActionCancelled(RuntimeError):
    """An action deliberately not sent (the VM turned out busy, the lease was lost): recorded, not failed.

    :param reason: why, for the ledger.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ActionStatus(StrEnum):
    PLANNED = "planned"
    APPLIED = "applied"
    FAILED = "failed"
    DRY_RUN = "dry_run"
    CANCELLED = "cancelled"  # not sent: the release protocol found the VM busy, or the lease was lost


class Provisioning(StrEnum):
    STANDARD = "standard"
    SPOT = "spot"


class Mode(StrEnum):
    FORECAST_ONLY = "forecast_only"
    FORECAST_AND_SCALE = "forecast_and_scale"


# A fixed namespace so the same action in the same cycle always gets the same request id, which is
# what makes a retried or re-run task idempotent at Compute Engine (requestId de-duplication).
REQUEST_NAMESPACE = uuid.UUID("6f1c7d2e-4a57-4e4b-9a51-8f3f2d6c0b11")


def request_id_for(*parts: object) -> str:
    return str(uuid.uuid5(REQUEST_NAMESPACE, "|".join(str(p) for p in parts)))


@dataclass
class Action:
    pool: str
    kind: ActionKind
    amount: float
    reason: str
    request_id: str
    resource: str = "cpu"
    provisioning: Provisioning = Provisioning.STANDARD
    target: str = ""  # group, instance or disk name the action touches ("" = chosen at apply time)
    status: ActionStatus = ActionStatus.PLANNED
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("kind", "provisioning", "status"):
            data[key] = str(data[key])
        return data


@dataclass
class Plan:
    plan_id: str
    pool: str
    created_at: datetime
    mode: Mode
    actions: list[Action] = field(default_factory=list)
    capped: list[str] = field(default_factory=list)  # what a cap (max, budget) cut, in words
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "pool": self.pool,
            "created_at": self.created_at.isoformat(),
            "mode": str(self.mode),
            "actions": [a.to_dict() for a in self.actions],
            "capped": list(self.capped),
            "summary": dict(self.summary),
        }

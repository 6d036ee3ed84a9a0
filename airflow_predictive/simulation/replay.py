"""The replay loop: a simulated fleet of identical instances driven by a policy, step by step.

At the start of each step ``t`` the policy sees the demand of steps ``< t`` (never the step being
served) and the fleet, and returns a target size. The fleet then:

- launches the missing instances; each serves from ``t + boot_steps`` (the boot delay), so a
  scale-out decided at ``t`` serves from ``t + boot delay``;
- on a scale-in, cancels booting instances first (newest first), then stops running ones at once;
- serves step ``t`` with its *running* instances only: booting instances are not capacity.

The result holds, per step, the target, the running instances and the served capacity; metrics are
computed on the scored steps (``start`` onward) by :mod:`airflow_predictive.simulation.metrics`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd


@dataclass
class Fleet:
    """Instances of one simulated pool: running now, and booting with the step they start serving.

    :param running: instances serving demand.
    :param booting: ``[ready_step, count]`` pairs, oldest first.
    """

    running: int = 0
    booting: deque = field(default_factory=deque)

    @property
    def booting_count(self) -> int:
        return int(sum(count for _, count in self.booting))

    @property
    def size(self) -> int:
        return self.running + self.booting_count

    def advance(self, step: int) -> None:
        """Booting instances whose boot delay has passed start serving at ``step``.

        :param step: the current step.
        """
        while self.booting and self.booting[0][0] <= step:
            self.running += self.booting.popleft()[1]

    def resize(self, target: int, step: int, boot_steps: int) -> None:
        """Grow (instances serve from ``step + boot_steps``) or shrink (booting ones go first).

        :param target: the wanted number of running plus booting instances.
        :param step: the current step.
        :param boot_steps: boot delay in steps.
        """
        missing = target - self.size
        if missing > 0:
            if boot_steps <= 0:
                self.running += missing
            else:
                self.booting.append([step + boot_steps, missing])
            return
        excess = -missing
        while excess and self.booting:
            ready, count = self.booting[-1]
            cut = min(count, excess)
            excess -= cut
            if cut == count:
                self.booting.pop()
            else:
                self.booting[-1] = [ready, count - cut]
        self.running -= min(excess, self.running)


#: Resources a replay sizes a pool by, as the planner names them (the others are replayed as cpu).
REPLAYED_RESOURCES = ("cpu", "memory", "slots")


@dataclass(frozen=True)
class ReplayContext:
    """Everything a policy may know about the replay before it starts.

    :param demand: the whole trace (a policy must only read ``demand[:t]`` at step ``t``, except the
        oracle, which by definition sees the future).
    :param index: the trace's timestamps (UTC).
    :param interval_s: step length in seconds.
    :param instance_capacity: demand one running instance serves.
    :param boot_steps: boot delay in steps.
    :param max_instances: the pool's maximum size.
    :param start: first scored step (the steps before are history/warm-up).
    :param sizing_defaults: the deployment's sizing defaults (``[predictive]``) the simulated pool
        uses where a policy sets nothing (``None``: the documented defaults).
    :param resource: what the demand is, as the planner names it: ``cpu`` or ``memory`` (planned at
        the rule's utilisation) or ``slots`` (Airflow task slots, planned full); ``instance_capacity``
        is in its unit.
    """

    demand: np.ndarray
    index: pd.DatetimeIndex
    interval_s: int
    instance_capacity: float
    boot_steps: int
    max_instances: int
    start: int
    sizing_defaults: Mapping[str, float] | None = None
    resource: str = "cpu"


class Policy(Protocol):
    """A scaling policy: its name, its settings (for the report) and one target per step."""

    name: str

    def settings(self) -> dict: ...

    def prepare(self, context: ReplayContext) -> None: ...

    def decide(self, step: int, fleet: Fleet) -> int: ...


@dataclass(frozen=True)
class ReplayResult:
    """Per-step outcome of one policy over the scored steps.

    :param policy: policy name.
    :param settings: the policy's settings.
    :param targets: target size decided at each scored step.
    :param running: running instances serving each scored step.
    :param previous_target: the target just before scoring started.
    """

    policy: str
    settings: dict
    targets: np.ndarray
    running: np.ndarray
    previous_target: int


def initial_size(context: ReplayContext) -> int:
    """The fleet every policy starts from: just enough running instances for the last history step.

    :param context: the replay context.
    """
    last = float(context.demand[context.start - 1]) if context.start > 0 else 0.0
    return min(context.max_instances, max(1, math.ceil(last / context.instance_capacity)))


def replay(policy: Policy, context: ReplayContext) -> ReplayResult:
    """Run one policy over the scored steps of a trace and record targets and running instances.

    :param policy: the scaling policy.
    :param context: the trace and the pool's simulation parameters.
    """
    policy.prepare(context)
    size = initial_size(context)
    fleet = Fleet(running=size)
    steps = len(context.demand) - context.start
    targets = np.zeros(steps, dtype=np.int64)
    running = np.zeros(steps, dtype=np.int64)
    for i in range(steps):
        t = context.start + i
        fleet.advance(t)
        target = int(policy.decide(t, fleet))
        target = max(0, min(context.max_instances, target))
        fleet.resize(target, t, context.boot_steps)
        targets[i] = target
        running[i] = fleet.running
    return ReplayResult(
        policy=policy.name,
        settings=policy.settings(),
        targets=targets,
        running=running,
        previous_target=size,
    )

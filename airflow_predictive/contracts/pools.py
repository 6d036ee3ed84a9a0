"""Capacity pools: where each Airflow queue's work runs on Compute Engine, and the policy that sizes it.

A pool file is YAML with one ``pools:`` mapping (name -> settings); see ``example_pools.yaml``.
:func:`load_pools` validates it with pydantic and turns every mistake into one
:class:`PoolConfigError` that names the file and the field (``pools.etl.min_instances``), so nothing
is planned or applied from a half-valid file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from airflow_predictive.contracts import machines, yamlfile
from airflow_predictive.contracts.demand import RESOURCES
from airflow_predictive.contracts.plan import Mode

_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# A pool name is the value of the predictive-pool label (lowercase letters, digits, '-', '_') and, with
# '_' as '-' and cut to 40 characters, the prefix of its instance and disk names (RFC 1035: a letter first).
_POOL_GCE_NAME = re.compile(r"[a-z]([-_a-z0-9]{0,61}[a-z0-9])?")
_POOL_RULE = (
    "Compute Engine needs a lowercase letter first, then lowercase letters, digits, '-' or '_', "
    "ending with a letter or digit, at most 63 characters"
)


class PoolConfigError(ValueError):
    """A pool file or pool setting is invalid; the message names the file and the field."""


class Backend(StrEnum):
    MANAGED_INSTANCE_GROUP = "managed_instance_group"
    INSTANCES = "instances"


class Signal(StrEnum):
    """What the planner sizes the pool for.

    ``forecast``: the forecast quantile at ``now + lead time`` (predictive, seasonal and oracle
    policies differ only in which forecast frame they pass). ``recent_demand``: the Compute Engine
    autoscaler rule, sized from observed demand over the stabilisation window (the reactive baseline).
    """

    FORECAST = "forecast"
    RECENT_DEMAND = "recent_demand"


class ForecastSource(StrEnum):
    """Which forecast a forecast-driven pool plans from.

    ``issued``: the one the forecaster issued for the pool's series (the store's newest).
    ``seasonal_naive``: the demand of the same bucket yesterday, with quantiles from the day-to-day
    changes of the last days (computed from the store's demand, no model): where a pool's demand
    repeats yesterday's more closely than a model forecasts it, the service-level choice follows it.
    """

    ISSUED = "issued"
    SEASONAL_NAIVE = "seasonal_naive"


class SpotMode(StrEnum):
    NONE = "none"  # standard VMs only
    ABOVE_BASELINE = "above_baseline"  # standard carries the predicted baseline, spot the rest
    ALL = "all"  # every instance above min_standard is spot


class _Model(BaseModel):
    # Every number is a quantity, a price or a duration: `.inf` or `.nan` is a typo, never a setting.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: The documented defaults of the sizing options a deployment may override in ``[predictive]``
#: (``airflow_predictive.config`` publishes these as the section's defaults).
SIZING_DEFAULTS: dict[str, float] = {
    "guard_utilization": 0.9,
    "min_daily_cycle": 0.2,
    "cycle_window_days": 7.0,
    "fallback_utilization": 0.6,
}
#: Validation-context key under which :func:`parse_pools` passes a deployment's sizing defaults.
SIZING_CONTEXT = "sizing_defaults"
#: The default service level: no more unmet demand than the reactive rule the product replaces.
MATCH_REACTIVE = "match_reactive"
#: Task slots of a Celery worker when neither the pool nor the deployment says: the default of Airflow's
#: ``[celery] worker_concurrency``.
DEFAULT_WORKER_CONCURRENCY = 16
#: Validation-context key under which :func:`parse_pools` passes the deployment's ``[celery]
#: worker_concurrency`` (the shell reads it; this contract never reads Airflow's configuration).
CONCURRENCY_CONTEXT = "worker_concurrency"


class SizingPolicy(_Model):
    """How much capacity to hold.

    :param signal: ``forecast`` or ``recent_demand`` (reactive autoscaler).
    :param quantile: forecast quantile provisioned for (must be one the forecaster stores).
    :param target_utilization: fraction of each instance's vCPUs/memory the plan may fill (GCE autoscaler
        default for CPU is 0.6; a forecast quantile already carries the safety margin, so 1.0).
    :param planning_interval_minutes: how far past ``now + lead time`` one cycle must cover (the cycle length).
    :param guard_utilization: forecast signal only: never hold less than the newest observed demand / this
        (a forecast undershooting a level shift is corrected next cycle); 0 = no guard.
        Default ``[predictive] guard_utilization``.
    :param min_daily_cycle: forecast signal only: follow the forecast while the lag-one-day
        autocorrelation of recent demand is at least this, else the reactive rule at
        ``fallback_utilization`` (prediction has no cycle to anticipate); -1 = always the forecast.
        Default ``[predictive] min_daily_cycle``.
    :param cycle_window_days: days of recent demand that check reads (``[predictive] cycle_window_days``).
    :param fallback_utilization: target utilisation of the reactive fallback
        (``[predictive] fallback_utilization``, Compute Engine's 0.6).
    :param seasonal_floor_days: forecast signal only: never hold less than the demand observed at the
        same time of day on each of the last this many days (their peak over the window the forecast
        covers, widened by the planner's ``SEASONAL_FLOOR_SPREAD`` buckets each side): demand that
        recurs at a time of day is held before it comes even where the forecast's quantile smooths it
        away. 0: no floor.
    :param forecast: forecast signal only: the forecast the plan reads (:class:`ForecastSource`);
        the service-level choice sets it, like the rest of this policy.
    :param chosen: set by the feedback loop, not by users: the service-level choice this policy
        follows, in words (plan reasons quote it); empty: the pool's own settings.
    """

    signal: Signal = Signal.FORECAST
    quantile: float = Field(0.9, gt=0, lt=1)
    target_utilization: float = Field(1.0, gt=0, le=1)
    planning_interval_minutes: float = Field(5.0, gt=0)
    guard_utilization: float = Field(SIZING_DEFAULTS["guard_utilization"], ge=0, le=1)
    min_daily_cycle: float = Field(SIZING_DEFAULTS["min_daily_cycle"], ge=-1, le=1)
    cycle_window_days: float = Field(SIZING_DEFAULTS["cycle_window_days"], ge=1.5)
    fallback_utilization: float = Field(SIZING_DEFAULTS["fallback_utilization"], gt=0, le=1)
    seasonal_floor_days: int = Field(0, ge=0, le=7)
    forecast: ForecastSource = ForecastSource.ISSUED
    chosen: str = ""

    @model_validator(mode="before")
    @classmethod
    def _deployment_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        # A deployment's [predictive] defaults arrive as validation context (the shell reads them), so
        # this contract never reads Airflow's configuration itself; what the pool sets wins.
        defaults = (info.context or {}).get(SIZING_CONTEXT)
        if defaults and isinstance(data, dict):
            return {**{k: v for k, v in defaults.items() if k in SIZING_DEFAULTS}, **data}
        return data


class LeadTimes(_Model):
    """Minutes from asking Compute Engine to usable capacity, per resource kind.

    :param boot: VM create to ready (cpu, memory and instance network capacity).
    :param disk_attach: disk create/grow and attach to usable (storage).
    :param network: bandwidth reconfiguration to usable (a stop/start of an idle VM).
    """

    boot: float = Field(3.0, ge=0)
    disk_attach: float = Field(1.0, ge=0)
    network: float = Field(5.0, ge=0)

    def for_resource(self, resource: str) -> float:
        return {"storage": self.disk_attach, "network": self.network}.get(resource, self.boot)


class ScaleIn(_Model):
    """When capacity is given back.

    :param stabilization_minutes: capacity is released only if the forecast upper bound stays below it
        over this window (the GCE autoscaler's scale-in stabilisation, default 10 minutes).
    :param quantile: the forecast upper bound used for that check.
    :param max_release_per_cycle: at most this many instances released in one cycle.
    :param drain_timeout_seconds: after a VM's worker stops taking tasks, how long to wait for the
        tasks it holds to finish before the release is cancelled (the VM stays, consuming again).
    """

    stabilization_minutes: float = Field(10.0, ge=0)
    quantile: float = Field(0.95, gt=0, lt=1)
    max_release_per_cycle: int = Field(10, ge=1)
    drain_timeout_seconds: float = Field(60.0, ge=0)


class Thresholds(_Model):
    """Minimum change per resource (the pseudocode's thresholdCPU/Memory/Storage/Network): smaller gaps are ignored.

    :param cpu: vCPUs. :param memory: GiB. :param storage: GiB. :param network: Mbit/s.
    :param slots: task slots (running and queued tasks).
    """

    cpu: float = Field(0.0, ge=0)
    memory: float = Field(0.0, ge=0)
    storage: float = Field(10.0, ge=0)
    network: float = Field(0.0, ge=0)
    slots: float = Field(0.0, ge=0)

    def for_resource(self, resource: str) -> float:
        return float(getattr(self, resource))


class SpotPolicy(_Model):
    """Which capacity runs on spot VMs.

    :param mode: ``none`` (the default: a pool that says nothing gets standard VMs only, which a
        preemption cannot take), ``above_baseline`` or ``all``.
    :param baseline_quantile: the forecast quantile whose demand standard VMs carry.
    :param low_demand_standard_share: in a predicted low-demand period (demand at ``now + lead`` below
        the median over the forecast horizon) standard VMs carry only this share of the baseline.
    :param interruptible: every task of this pool may be retried elsewhere: all capacity above
        ``min_standard`` goes to spot.
    :param min_standard: standard instances kept whatever the policy (the floor a preemption cannot take).
    """

    # Spot is opted into: a preempted VM kills its running tasks, which a pool must say it tolerates.
    mode: SpotMode = SpotMode.NONE
    baseline_quantile: float = Field(0.5, gt=0, lt=1)
    low_demand_standard_share: float = Field(0.5, ge=0, le=1)
    interruptible: bool = False
    min_standard: int = Field(0, ge=0)


class ServiceLevel(_Model):
    """What the pool's users are promised: the feedback loop holds the least capacity that meets it.

    In YAML either the word ``match_reactive`` (the default) or a mapping with the fields below.

    :param unmet_share: the share of demand the pool may leave unmet (``0.005``: 0.5%); unset
        (``match_reactive``): no more than the reactive rule it replaces (Compute Engine's autoscaler
        at 0.6 utilisation; on a pool bound by task slots, tasks / slots per worker) would leave on
        the same demand. The feedback loop replays the last days'
        demand under a few sizing candidates and the pool follows the cheapest one that met it.
    :param queue_wait_p95_seconds: the 95th percentile of the time tasks of the pool's queue wait for a
        worker slot (queued to running); unset: queue wait is measured and shown, not judged.
        Planned for: the daily choice replays the pool's recorded tries through each candidate's
        worker slots (:mod:`airflow_predictive.simulation.task_queue`) and holds the least capacity
        whose replayed p95 met it over the last days and on each of them. On a pool bound by task
        slots, without ``unmet_share``, the wait alone decides; otherwise the unmet rule
        (``unmet_share`` or ``match_reactive``) must hold too. Judged live over the trailing hour: a
        judged hour needs at least 20 tasks, and a missed one raises the ``queue_wait_above_target``
        alert.
    """

    unmet_share: float | None = None
    queue_wait_p95_seconds: float | None = Field(None, gt=0)

    @field_validator("unmet_share")
    @classmethod
    def _share(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ValueError(
                f"unmet_share is a share of demand between 0 and 1 (0.005 = 0.5% unmet), got {value}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data.strip() != MATCH_REACTIVE:
                raise ValueError(
                    f"service_level {data!r} is not a service level: write {MATCH_REACTIVE!r} or a mapping "
                    "such as {unmet_share: 0.005} (0.5% of demand unmet) or {queue_wait_p95_seconds: 120}"
                )
            return {}
        return data

    @property
    def matches_reactive(self) -> bool:
        """True when the pool buys no more unmet demand than the reactive rule would leave."""
        return self.unmet_share is None

    def describe(self) -> str:
        """The level in words, for plan reasons and the UI."""
        unmet = (
            "unmet demand no higher than the reactive rule's"
            if self.matches_reactive
            else f"at most {self.unmet_share * 100:g}% of demand unmet"
        )
        if self.queue_wait_p95_seconds is None:
            return unmet
        wait = f"queue wait p95 at most {self.queue_wait_p95_seconds:g} s"
        return wait if self.matches_reactive else f"{unmet}, {wait}"


class Prices(_Model):
    """Hourly prices in the account's currency (defaults: the machine type's list price).

    :param standard: per standard instance-hour.
    :param spot: per spot instance-hour.
    :param disk_gib_month: per GiB-month of persistent disk.
    """

    standard: float | None = Field(None, ge=0)
    spot: float | None = Field(None, ge=0)
    disk_gib_month: float = Field(0.10, ge=0)


class Storage(_Model):
    """Data disks of the pool.

    :param disk_type: persistent disk type.
    :param max_disk_gib: largest single disk (at least 10); above it a new disk is created.
    :param max_total_gib: storage cap for the pool.
    """

    disk_type: str = "pd-balanced"
    max_disk_gib: float = Field(2048.0, ge=10)  # Compute Engine's smallest persistent disk is 10 GB
    max_total_gib: float = Field(16384.0, gt=0)


class Launch(_Model):
    """How new standalone instances are created (``instances`` backend).

    :param source_instance_template: optional global template URL used for every new VM.
    :param source_image: boot image when no template is set.
    :param network: VPC network.
    :param name_prefix: prefix of generated instance names (default: the pool name).
    """

    source_instance_template: str = ""
    source_image: str = "projects/debian-cloud/global/images/family/debian-12"
    network: str = "global/networks/default"
    name_prefix: str = ""

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not _POOL_GCE_NAME.fullmatch(value):
            raise ValueError(
                f"name_prefix {value!r} cannot start Compute Engine instance names: {_POOL_RULE}"
            )
        return value


class CapacityPool(_Model):
    """One capacity pool: placement, machine, limits, lead times, sizing and cost policy, mode.

    :param name: pool name (the ``pool=`` part of its demand series ids).
    :param queue: Airflow queue whose tasks run here (default: the pool name).
    :param project: Google Cloud project id.
    :param zone: zone, e.g. ``us-central1-a``.
    :param backend: ``managed_instance_group`` or ``instances`` (VMs labelled ``predictive-pool=<name>``).
    :param group: MIG name for standard capacity (MIG backend).
    :param spot_group: optional MIG whose template uses SPOT provisioning.
    :param machine_type: machine type of every instance.
    :param vcpus: override vCPUs (custom types); normally read from the machine type.
    :param memory_gib: override memory in GiB.
    :param slots_per_instance: task slots of each VM's Celery worker (``--concurrency``); unset:
        Airflow's ``[celery] worker_concurrency`` (see :attr:`slots`). Written into new standalone VMs'
        metadata. The planner sizes the pool's ``slots`` demand (running and queued tasks) with it.
    :param min_instances: never fewer live instances.
    :param max_instances: never more live instances.
    :param budget_per_hour: hourly cost cap (instances + disks); None = no cap.
    :param mode: ``forecast_only`` (record plans) or ``forecast_and_scale`` (apply them).
    :param allow_vertical: allow ``resize_instance`` of an idle VM to a larger type when the pool is at max.
    :param allow_tier_1: allow Tier_1 networking for ``raise_bandwidth``.
    :param service_level: what the pool promises its users (:class:`ServiceLevel`).
    """

    name: str
    queue: str = ""
    project: str
    zone: str
    backend: Backend = Backend.INSTANCES
    group: str = ""
    spot_group: str = ""
    machine_type: str
    vcpus: float | None = Field(None, gt=0)
    memory_gib: float | None = Field(None, gt=0)
    slots_per_instance: int | None = Field(None, ge=1)
    min_instances: int = Field(0, ge=0)
    max_instances: int = Field(10, ge=1)
    lead_time_minutes: LeadTimes = LeadTimes()
    policy: SizingPolicy = Field(default_factory=SizingPolicy)
    scale_in: ScaleIn = ScaleIn()
    thresholds: Thresholds = Thresholds()
    spot: SpotPolicy = SpotPolicy()
    prices: Prices = Prices()
    storage: Storage = Storage()
    launch: Launch = Launch()
    budget_per_hour: float | None = Field(None, gt=0)
    service_level: ServiceLevel = ServiceLevel()
    mode: Mode = Mode.FORECAST_ONLY
    allow_vertical: bool = True
    allow_tier_1: bool = True
    # the deployment's [celery] worker_concurrency, passed as validation context (not a pool setting)
    _worker_concurrency: int = PrivateAttr(DEFAULT_WORKER_CONCURRENCY)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # Stricter than the demand contract's validate_pool_name ('.' and a leading digit): the label
        # value and the instance names need it.
        if not _POOL_GCE_NAME.fullmatch(value):
            raise ValueError(
                f"pool name {value!r} cannot name Compute Engine labels and instances: {_POOL_RULE}"
            )
        return value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _ZONE.match(value):
            raise ValueError(f"zone {value!r} is not a Compute Engine zone like 'us-central1-a'")
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not _PROJECT.match(value):
            raise ValueError(
                f"project {value!r} is not a Google Cloud project id (6-30 lowercase letters, digits, '-')"
            )
        return value

    @field_validator("group", "spot_group")
    @classmethod
    def _group(cls, value: str) -> str:
        if value and not _GCE_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid Compute Engine resource name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CapacityPool:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) > max_instances ({self.max_instances})")
        if self.backend is Backend.MANAGED_INSTANCE_GROUP and not self.group:
            raise ValueError("backend managed_instance_group needs 'group' (the MIG name)")
        if machines.lookup(self.machine_type) is None and (self.vcpus is None or self.memory_gib is None):
            raise ValueError(
                f"unknown machine_type {self.machine_type!r}: use a predefined type such as n2-standard-8, "
                "a custom type such as n2-custom-6-24576, or set vcpus and memory_gib"
            )
        if self.spot.min_standard > self.max_instances:
            raise ValueError("spot.min_standard exceeds max_instances")
        return self

    @model_validator(mode="after")
    def _deployment_concurrency(self, info: ValidationInfo) -> CapacityPool:
        concurrency = (info.context or {}).get(CONCURRENCY_CONTEXT)
        if concurrency is not None:
            if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
                raise ValueError(
                    f"[celery] worker_concurrency must be a positive integer, got {concurrency!r}"
                )
            self._worker_concurrency = concurrency
        return self

    # ----------------------------------------------------------------- derived values

    @property
    def queue_name(self) -> str:
        return self.queue or self.name

    @property
    def slots(self) -> int:
        """Task slots of each instance: ``slots_per_instance``, else the deployment's ``[celery]
        worker_concurrency`` (passed when the pools file is loaded), else Airflow's default 16."""
        return self.slots_per_instance or self._worker_concurrency

    @property
    def machine(self) -> machines.MachineType:
        """The machine type spec (catalog or API values, with the pool's overrides applied)."""
        return _machine(self.machine_type, self.vcpus, self.memory_gib)

    def price(self, spot: bool) -> float:
        """Hourly price of one instance (the pool's override, else the machine type's list price)."""
        override = self.prices.spot if spot else self.prices.standard
        return float(override) if override is not None else self.machine.hourly_price(spot=spot)

    @property
    def has_spot(self) -> bool:
        """Whether the backend can hold spot capacity (labelled instances, or a spot MIG)."""
        if self.spot.mode is SpotMode.NONE and not self.spot.interruptible:
            return False
        return self.backend is Backend.INSTANCES or bool(self.spot_group)

    def with_machine(self, vcpus: float, memory_gib: float) -> CapacityPool:
        """This pool with vCPUs and memory read from the Compute Engine API."""
        return self.model_copy(update={"vcpus": float(vcpus), "memory_gib": float(memory_gib)})


@lru_cache(maxsize=256)
def _machine(name: str, vcpus: float | None, memory_gib: float | None) -> machines.MachineType:
    base = machines.lookup(name)
    return machines.MachineType(
        name,
        float(vcpus if vcpus is not None else base.vcpus),  # type: ignore[union-attr]
        float(memory_gib if memory_gib is not None else base.memory_gib),  # type: ignore[union-attr]
        base.family if base else machines.family_of(name),
    )


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_pools(
    data: Any,
    source: str = "<pools>",
    sizing_defaults: Mapping[str, float] | None = None,
    worker_concurrency: int | None = None,
) -> dict[str, CapacityPool]:
    """Validate a parsed pools document (``{"pools": {name: settings}}``) into pools.

    :param data: the parsed YAML/JSON document.
    :param source: file name used in error messages.
    :param sizing_defaults: the deployment's defaults for the sizing options a pool's ``policy:`` omits
        (keys of :data:`SIZING_DEFAULTS`); ``None``: the documented defaults.
    :param worker_concurrency: the deployment's ``[celery] worker_concurrency``: the task slots of a
        pool without ``slots_per_instance``; ``None``: :data:`DEFAULT_WORKER_CONCURRENCY`.
    """
    if not isinstance(data, dict) or not isinstance(data.get("pools"), dict) or not data["pools"]:
        raise PoolConfigError(f"{source}: expected a top-level 'pools:' mapping of pool name -> settings")
    unknown = sorted(set(data) - {"pools"})
    if unknown:
        raise PoolConfigError(
            f"{source}: unknown top-level key(s) {', '.join(unknown)}; only 'pools' is allowed"
        )
    pools: dict[str, CapacityPool] = {}
    for name, settings in data["pools"].items():
        if not isinstance(settings, dict):
            raise PoolConfigError(f"{source}: pools.{name}: expected a mapping of settings")
        if "name" in settings and settings["name"] != name:
            raise PoolConfigError(f"{source}: pools.{name}.name: differs from the key {name!r}")
        try:
            document = {"policy": {}, **settings, "name": str(name)}  # policy validated with the context
            context: dict[str, Any] = {SIZING_CONTEXT: dict(sizing_defaults or {})}
            if worker_concurrency is not None:
                context[CONCURRENCY_CONTEXT] = worker_concurrency
            pools[str(name)] = CapacityPool.model_validate(document, context=context)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = _where(first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            more = f" (and {exc.error_count() - 1} more error(s))" if exc.error_count() > 1 else ""
            where = f"pools.{name}.{field}" if first["loc"] else f"pools.{name}"
            raise PoolConfigError(f"{source}: {where}: {message}{more}") from None
    return pools


def load_pools(
    path: str | Path,
    sizing_defaults: Mapping[str, float] | None = None,
    worker_concurrency: int | None = None,
) -> dict[str, CapacityPool]:
    """Read and validate a pools YAML file.

    :param path: the YAML file (``[predictive] pools_file`` by default in the operator and CLI).
    :param sizing_defaults: see :func:`parse_pools`.
    :param worker_concurrency: see :func:`parse_pools`.
    """
    path = Path(path)
    try:
        data = yamlfile.load(yamlfile.read_text(path), path)
    except FileNotFoundError:
        raise PoolConfigError(f"{path}: pools file not found (set [predictive] pools_file)") from None
    except yamlfile.YamlFileError as exc:
        raise PoolConfigError(str(exc)) from None
    return parse_pools(data, str(path), sizing_defaults, worker_concurrency)


EXAMPLE_POOLS = Path(__file__).with_name("example_pools.yaml")
RESOURCE_NAMES = tuple(RESOURCES)

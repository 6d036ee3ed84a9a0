"""The ``[predictive]`` configuration section: one table of options, read through Airflow's config.

The same table feeds ``get_provider_info()`` (so ``airflow config get-value predictive <key>`` shows the
defaults) and :func:`get`, which refuses unknown keys with a message naming the key, so a typo in
``airflow.cfg`` or an ``AIRFLOW__PREDICTIVE__*`` variable fails loudly instead of being ignored.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow_predictive.contracts.pools import (
    DEFAULT_WORKER_CONCURRENCY,
    SIZING_DEFAULTS,
    CapacityPool,
    load_pools,
)

SECTION = "predictive"


@dataclass(frozen=True)
class Option:
    description: str
    default: str
    type: str = "string"
    example: str | None = None


OPTIONS: dict[str, Option] = {
    "store_conn_id": Option(
        "Airflow connection id of the profile store (any SQLAlchemy URL; PostgreSQL for production). "
        "Empty: a SQLite file at store_path.",
        "",
        example="predictive_store_default",
    ),
    "store_path": Option(
        "SQLite file of the profile store when store_conn_id is empty. Relative paths are under AIRFLOW_HOME.",
        "predictive/profile.db",
    ),
    "pools_file": Option(
        "YAML file with the capacity pools (where each queue's tasks run on Compute Engine). "
        "Relative paths are under AIRFLOW_HOME.",
        "predictive/pools.yaml",
    ),
    "templates_folder": Option(
        "Folder with user workflow templates (*.yaml) added to the built-in ones. Empty: built-ins only.",
        "",
    ),
    "gce_conn_id": Option(
        "Airflow connection id used by GceAllocatorHook (conn type predictive_gce or google_cloud_platform).",
        "predictive_gce_default",
    ),
    "api_conn_id": Option(
        "Airflow connection id of the Airflow REST API the profiler reads (conn type predictive_airflow_api).",
        "predictive_airflow_api_default",
    ),
    "interval_minutes": Option("Bucket width of every demand series, in minutes.", "5", "integer"),
    "horizon_minutes": Option("How far ahead each forecast reaches, in minutes.", "1440", "integer"),
    "quantiles": Option("Forecast quantiles stored per step (comma-separated).", "0.5,0.8,0.9,0.95,0.99"),
    "default_mode": Option(
        "Mode of a pool that does not set one: forecast_only (plan and record) or forecast_and_scale.",
        "forecast_only",
    ),
    "series_per_chunk": Option(
        "Series per mapped forecast task; a chunk should take a few seconds.", "200", "integer"
    ),
    "pools_per_chunk": Option(
        "Pools per mapped allocate task; every cap is a pool's own, so chunks plan independently.",
        "100",
        "integer",
    ),
    "sample_interval_seconds": Option(
        "How often the worker listener samples a running task's process tree.", "5", "float"
    ),
    "forecast_retention_hours": Option(
        "The evaluation's close deletes forecasts issued longer ago than this, after scoring them (each "
        "cycle stores an issue per series, so without this the table grows by that every cycle). Scoring "
        "reads issues up to 48 h old with the default 24 h horizon: keep it above horizon + 24 h.",
        "72",
        "integer",
    ),
    "guard_utilization": Option(
        "Reactive guard of forecast-driven pools: never hold less than the newest observed demand divided by "
        "this utilisation, so a forecast that undershoots a level shift is corrected at the next cycle "
        "instead of leaving demand unmet (looser than the reactive rule's 0.6). 0 turns the guard off. "
        "A pool's policy.guard_utilization overrides it.",
        f"{SIZING_DEFAULTS['guard_utilization']:g}",
        "float",
    ),
    "min_daily_cycle": Option(
        "A forecast-driven pool follows its forecast only while its demand has a daily cycle: the lag-one-day "
        "autocorrelation of its cpu demand (else memory, else network) over the last cycle_window_days is at "
        "least this. Below it (or with less than 1.5 days of demand) prediction has nothing to anticipate "
        "and the pool follows the reactive rule (fallback_utilization, scale-in after the stabilisation "
        "window). -1 always follows the forecast. A pool's policy.min_daily_cycle overrides it.",
        f"{SIZING_DEFAULTS['min_daily_cycle']:g}",
        "float",
    ),
    "cycle_window_days": Option(
        "Days of recent demand the daily-cycle check of min_daily_cycle reads (a week: one outlier day "
        "or a quiet weekend does not flip the rule).",
        f"{SIZING_DEFAULTS['cycle_window_days']:g}",
        "float",
    ),
    "fallback_utilization": Option(
        "Target utilisation of the reactive rule a pool falls back to when its demand has no daily cycle "
        "(Compute Engine's autoscaler default, 0.6).",
        f"{SIZING_DEFAULTS['fallback_utilization']:g}",
        "float",
    ),
    "instance_hostnames": Option(
        "Dotted path of a function (instance) -> iterable of hostnames: the names a worker on that VM reports "
        "as its Airflow hostname when a custom [core] hostname_callable is used. The allocator already knows "
        "a VM by its name, FQDN, celery@name and internal IPs; a running task on a host that matches no VM of "
        "its pool blocks that pool's releases.",
        "",
        example="my_company.airflow.vm_hostnames",
    ),
    "emulator_url": Option(
        "If set, GceAllocatorHook talks to this Compute Engine emulator (http://127.0.0.1:PORT) "
        "instead of Google Cloud.",
        "",
    ),
    "combination": Option(
        "How the forecast uses the work Airflow already knows about (upcoming scheduled runs, remaining "
        "stages of runs in progress, from the provider's upcoming-work endpoint): residual (auto-ARIMA on "
        "demand minus known scheduled work, known work added back) or none (auto-ARIMA alone). If the "
        "endpoint is unreachable a cycle forecasts with none and says so.",
        "residual",
    ),
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed; the message names it."""


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")).expanduser()


def _conf():
    try:
        from airflow.configuration import conf
    except Exception:  # airflow missing or half-configured: defaults still work for the pure core
        return None
    return conf


def get(key: str) -> str:
    """Return the value of ``[predictive] key`` (config, env var, or the documented default)."""
    if key not in OPTIONS:
        raise ConfigError(
            f"unknown config key [predictive] {key!r}; known keys: {', '.join(sorted(OPTIONS))}"
        )
    env = os.environ.get(f"AIRFLOW__PREDICTIVE__{key.upper()}")
    if env is not None:
        return env
    conf = _conf()
    if conf is not None:
        try:
            return str(conf.get(SECTION, key, fallback=OPTIONS[key].default))
        except Exception:
            pass
    return OPTIONS[key].default


def get_int(key: str) -> int:
    value = get(key)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"[predictive] {key} must be an integer, got {value!r}") from None


def get_float(key: str) -> float:
    value = get(key)
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"[predictive] {key} must be a number, got {value!r}") from None


def interval() -> timedelta:
    """``[predictive] interval_minutes`` as a bucket width."""
    minutes = get_int("interval_minutes")
    if minutes <= 0:
        raise ConfigError(f"[predictive] interval_minutes must be positive, got {minutes}")
    return timedelta(minutes=minutes)


def sizing_defaults() -> dict[str, float]:
    """The deployment's defaults for the pools' sizing options (see ``contracts.pools.SIZING_DEFAULTS``)."""
    return {key: get_float(key) for key in SIZING_DEFAULTS}


def worker_concurrency() -> int:
    """Airflow's ``[celery] worker_concurrency``: the task slots of a pool without ``slots_per_instance``.

    Read from ``AIRFLOW__CELERY__WORKER_CONCURRENCY``, else Airflow's configuration, else Airflow's
    default (16, also when the Celery provider is not installed).
    """
    raw = os.environ.get("AIRFLOW__CELERY__WORKER_CONCURRENCY")
    if raw is None:
        conf = _conf()
        try:
            raw = conf.get("celery", "worker_concurrency", fallback=None) if conf is not None else None
        except Exception:
            raw = None
    if raw is None or not str(raw).strip():
        return DEFAULT_WORKER_CONCURRENCY
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"[celery] worker_concurrency must be an integer, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"[celery] worker_concurrency must be at least 1, got {value}")
    return value


def load_configured_pools(path: str | Path) -> dict[str, CapacityPool]:
    """The pools file at ``path`` with the deployment's defaults: ``[predictive]`` sizing options and
    ``[celery] worker_concurrency`` (the task slots of a pool without ``slots_per_instance``)."""
    return load_pools(path, sizing_defaults(), worker_concurrency())


def instance_hostnames() -> Callable[[Any], Iterable[str]] | None:
    """The ``[predictive] instance_hostnames`` function, or None when unset."""
    path = get("instance_hostnames").strip()
    if not path:
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"[predictive] instance_hostnames {path!r} cannot be imported ({exc}): give module.function"
        ) from None


def configured_pools() -> dict[str, CapacityPool]:
    """The capacity pools file (``[predictive] pools_file``) with the deployment's defaults; ``{}``
    when there is none (profiling and scoring then run without pool settings)."""
    path = get_path("pools_file")
    return load_configured_pools(path) if path.is_file() else {}


def configured_queue_pools() -> dict[str, str] | None:
    """``{queue: pool}`` from the capacity pools file (``[predictive] pools_file``), if it exists."""
    path = get_path("pools_file")
    if not path.is_file():
        return None
    return {pool.queue_name: name for name, pool in load_configured_pools(path).items()}


def get_path(key: str) -> Path:
    path = Path(get(key)).expanduser()
    return path if path.is_absolute() else airflow_home() / path


def quantiles() -> tuple[float, ...]:
    raw = get("quantiles")
    try:
        levels = tuple(sorted(float(q) for q in raw.split(",") if q.strip()))
    except ValueError:
        raise ConfigError(f"[predictive] quantiles must be comma-separated numbers, got {raw!r}") from None
    if not levels or any(not 0 < q < 1 for q in levels):
        raise ConfigError(f"[predictive] quantiles must lie strictly between 0 and 1, got {raw!r}")
    return levels


def validate() -> None:
    """Fail with one clear message if airflow.cfg or the environment sets an unknown [predictive] key."""
    unknown = sorted(
        k[len("AIRFLOW__PREDICTIVE__") :].lower()
        for k in os.environ
        if k.startswith("AIRFLOW__PREDICTIVE__") and k[len("AIRFLOW__PREDICTIVE__") :].lower() not in OPTIONS
    )
    conf = _conf()
    if conf is not None and conf.has_section(SECTION):
        unknown += [k for k in conf.getsection(SECTION) or {} if k not in OPTIONS and k not in unknown]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) in [predictive]: {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(OPTIONS))}"
        )

"""GceAllocatorHook: Compute Engine access for the allocator, configured by an Airflow connection."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import BaseHook

from airflow_predictive import config
from airflow_predictive.gce.compute import ComputeEngine, ComputeEngineError

COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"
_PREFIXES = ("", "extra__predictive_gce__", "extra__google_cloud_platform__")


class GceAllocatorHook(BaseHook):
    """Build a :class:`~airflow_predictive.gce.compute.ComputeEngine` from an Airflow connection.

    Conn type ``predictive_gce``; extras: ``project``, ``zone``, ``key_path`` (service-account JSON file),
    ``keyfile_dict`` (its content), ``emulator_url`` (local emulator). A ``google_cloud_platform``
    connection works too (same keys, with or without the ``extra__google_cloud_platform__`` prefix).
    Without a key, Application Default Credentials are used. With an emulator URL (argument, extra, or
    ``[predictive] emulator_url``) no credentials are needed. Credentials are never logged.

    :param predictive_gce_conn_id: the Airflow connection id (a missing connection means defaults + ADC).
    :param emulator_url: talk to this Compute Engine emulator instead of Google Cloud.
    """

    conn_name_attr = "predictive_gce_conn_id"
    default_conn_name = "predictive_gce_default"
    conn_type = "predictive_gce"
    hook_name = "Predictive Compute Engine allocator"

    def __init__(
        self, predictive_gce_conn_id: str = default_conn_name, emulator_url: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.predictive_gce_conn_id = predictive_gce_conn_id
        self.emulator_url = emulator_url
        self._engines: dict[tuple[str, str], ComputeEngine] = {}

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["host", "schema", "login", "password", "port"],
            "relabeling": {},
            "placeholders": {
                "extra": '{"project": "my-project", "zone": "us-central1-a", "key_path": "/secrets/sa.json"} '
                'or {"emulator_url": "http://127.0.0.1:8085"}'
            },
        }

    def _extras(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.predictive_gce_conn_id)
        except Exception:  # no connection: defaults, ADC or the configured emulator
            return {}
        raw = conn.extra_dejson or {}
        extras: dict[str, Any] = {}
        for key in ("project", "zone", "key_path", "keyfile_dict", "emulator_url", "scopes"):
            for prefix in _PREFIXES:
                if raw.get(prefix + key) not in (None, ""):
                    extras[key] = raw[prefix + key]
                    break
        if "project" not in extras and raw.get("project_id"):
            extras["project"] = raw["project_id"]
        return extras

    def endpoint(self) -> str:
        """The emulator URL in force ("" for Google Cloud)."""
        return (
            self.emulator_url or str(self._extras().get("emulator_url") or "") or config.get("emulator_url")
        )

    def _credentials(self, extras: dict[str, Any]) -> Any:
        scopes = extras.get("scopes") or [COMPUTE_SCOPE]
        if isinstance(scopes, str):
            scopes = [s.strip() for s in scopes.split(",") if s.strip()]
        try:
            if extras.get("keyfile_dict"):
                from google.oauth2 import service_account

                info = extras["keyfile_dict"]
                info = json.loads(info) if isinstance(info, str) else info
                return service_account.Credentials.from_service_account_info(info, scopes=scopes)
            if extras.get("key_path"):
                from google.oauth2 import service_account

                return service_account.Credentials.from_service_account_file(
                    extras["key_path"], scopes=scopes
                )
            import google.auth

            credentials, _project = google.auth.default(scopes=scopes)
            return credentials
        except Exception as exc:  # the message names the source, never the secret
            source = "keyfile_dict" if extras.get("keyfile_dict") else extras.get("key_path") or "ADC"
            raise ComputeEngineError(
                f"connection {self.predictive_gce_conn_id!r}: cannot load Google credentials from {source} "
                f"({exc.__class__.__name__}); set key_path/keyfile_dict or run `gcloud auth application-default login`"
            ) from None

    def get_engine(self, project: str | None = None, zone: str | None = None, **kwargs: Any) -> ComputeEngine:
        """A ComputeEngine for ``project``/``zone`` (defaults from the connection), cached per hook.

        :param project: project id (default: the connection's).
        :param zone: zone (default: the connection's).
        :param kwargs: passed to ComputeEngine (operation_timeout, retry, sleep, seed).
        """
        extras = self._extras()
        project = project or extras.get("project")
        zone = zone or extras.get("zone")
        if not project or not zone:
            raise ComputeEngineError(
                f"connection {self.predictive_gce_conn_id!r}: no project/zone; set them in the pool or the "
                "connection extras"
            )
        key = (project, zone)
        if key not in self._engines:
            endpoint = self.endpoint()
            credentials = None if endpoint else self._credentials(extras)
            self._engines[key] = ComputeEngine(
                project, zone, credentials=credentials, endpoint=endpoint or None, **kwargs
            )
        return self._engines[key]

    def test_connection(self) -> tuple[bool, str]:
        try:
            extras = self._extras()
            engine = self.get_engine(extras.get("project"), extras.get("zone"))
            engine.machine_type("e2-medium")
        except Exception as exc:
            return False, str(exc)
        return True, "Compute Engine reachable and credentials accepted"

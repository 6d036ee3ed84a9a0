"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from airflow_predictive import __version__, config


def get_provider_info() -> dict:
    return {
        # MUST equal the distribution name, or every airflow command fails while loading config.
        "package-name": "airflow-predictive",
        "name": "Predictive capacity",
        "description": "Profiles Airflow workloads, forecasts their CPU, memory, storage and network demand "
        "per capacity pool (auto-ARIMA plus known future work), and pre-provisions Google Compute Engine "
        "capacity before the demand arrives.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Predictive capacity",
                "external-doc-url": "https://pypi.org/project/airflow-predictive/",
                "tags": ["gcp"],
            }
        ],
        "operators": [
            {
                "integration-name": "Predictive capacity",
                "python-modules": [
                    "airflow_predictive.operators.demand_forecast",
                    "airflow_predictive.operators.preemptive_allocate",
                    "airflow_predictive.operators.forecast_evaluation",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Predictive capacity",
                "python-modules": ["airflow_predictive.sensors.behavior_profiler"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Predictive capacity",
                "python-modules": [
                    "airflow_predictive.hooks.profile_store",
                    "airflow_predictive.hooks.gce_allocator",
                    "airflow_predictive.hooks.airflow_api",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "Predictive capacity",
                "python-modules": ["airflow_predictive.triggers.behavior_profiler"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "predictive_store",
                "hook-class-name": "airflow_predictive.hooks.profile_store.ProfileStoreHook",
                "hook-name": "Predictive profile store",
            },
            {
                "connection-type": "predictive_gce",
                "hook-class-name": "airflow_predictive.hooks.gce_allocator.GceAllocatorHook",
                "hook-name": "Predictive Compute Engine allocator",
            },
            {
                "connection-type": "predictive_airflow_api",
                "hook-class-name": "airflow_predictive.hooks.airflow_api.AirflowApiHook",
                "hook-name": "Predictive Airflow REST API",
            },
        ],
        "extra-links": ["airflow_predictive.links.ForecastPageLink"],
        "plugins": [
            {
                "name": "predictive",
                "plugin-class": "airflow_predictive.plugins.predictive_plugin.PredictivePlugin",
            }
        ],
        "config": {
            config.SECTION: {
                "description": "airflow-predictive: profile store, capacity pools, forecasting and allocation.",
                "options": {
                    key: {
                        "description": option.description,
                        "version_added": "0.1.0",
                        "type": option.type,
                        "example": option.example,
                        "default": option.default,
                    }
                    for key, option in config.OPTIONS.items()
                },
            }
        },
    }

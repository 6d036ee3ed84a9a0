"""Drop-in plugin file: copy into $AIRFLOW_HOME/plugins to load the provider's plugin without the
``airflow.plugins`` entry point (e.g. on a deployment that installs providers but disables entry points).
"""

from airflow_predictive.plugins.predictive_plugin import PredictivePlugin

__all__ = ["PredictivePlugin"]

"""The ``airflow-predictive`` command's sub-commands, one module per concern (see ``airflow_predictive.cli``)."""

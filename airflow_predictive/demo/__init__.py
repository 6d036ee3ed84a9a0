"""The main job on embedded defaults: `airflow-predictive demo` (what `make demo` runs)."""

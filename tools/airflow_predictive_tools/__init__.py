"""Tooling of airflow-predictive that users do not install: the local Compute Engine emulator, the demo,
the generated organisation history and the benchmarks."""

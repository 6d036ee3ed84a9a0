"""Compute Engine adapter: ``compute.py`` is the only module of the provider that knows Compute Engine."""

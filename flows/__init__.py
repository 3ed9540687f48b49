"""Prefect flows: thin wiring around the tunelab library."""

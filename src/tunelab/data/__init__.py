"""The data stage: sources, canonical schema, splits, checks, versions and reports."""

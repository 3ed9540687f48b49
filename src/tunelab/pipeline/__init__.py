"""The pipeline: the plan of methods per dataset, one method's way from data to registry,
the step cache keys, and the verdict of a pipeline run. Plain Python: flows call it."""

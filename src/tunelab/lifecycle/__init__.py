"""The model lifecycle in MLflow, one module per verb.

- ``tracking``: set up the tracking target, log a run (params, metrics, artifacts, data
  inputs, lineage tags), parent runs, and ``call`` (retries, then a clear TrackingError).
- ``packaging``: which run is servable and why not, what gets logged as its model, size
  on disk and per-example latency (``measure_serving_costs``), loading a registered model.
- ``safe_load``: load model files as data: skops with an allow-list of types, weights
  from safetensors only, no remote code. Everything tunelab loads goes through it.
- ``pyfunc``: the TF-IDF pyfunc, logged as code (MLflow copies the file; never import it).
- ``registry``: register a run's model, read and move aliases, list versions, promote,
  roll back, apply the gate's decision.
- ``gate``: the pure promotion decision (no MLflow).
- ``evidence``: gather the gate's evidence (the champion, re-scored when the data changed,
  or the baselines) and ``judge`` a challenger.
- ``predict``: batch prediction from a registered model (`tunelab predict`).
- ``model_card``: the model card of a registered version.

Dependencies point one way: gate and model_card know no MLflow; packaging builds on
model_card; tracking on packaging; registry on tracking and gate; evidence and predict
on registry and packaging.
"""

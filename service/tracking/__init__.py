"""Tracking: MLflow runs, the model registry, and what layerpilot records in them.

Owns: URIs and the `mlflow ui` command (`uris`), retries (`retries`), the ledger of what did not
reach MLflow (`ledger`), the client (`client`), runs that never raise for a tracking failure
(`runs`), what a probe, training, evaluation or adapt logs (`records`), the registry (`registry`)
and a version's review and promotion gate (`review`). The only package in `service` that imports
mlflow (checked by import-linter); it builds on probe and training results, never the reverse.
"""

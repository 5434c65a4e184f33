"""Tracking: the work directory's record projected onto MLflow, and the model registry.

Owns: where a job publishes (`uris`), MLflow's request bounds (`retries`), the client (`client`),
the idempotent publish of a work directory (`publish`) and its running in the background while a
job runs (`publishing`), registering a layer patch as a model version (`registration`, with the
flavor's saved form in `flavor`), the registry as a reviewer uses it (`registry`), a version's
review and the promotion gate (`review`), the operator's stage runs (`stages`), and the probe reports
that `probe.reuse: mlflow` finds by their base's fingerprint (`profiles`).

The only package in `service` that imports mlflow (checked by import-linter). It knows records
(`service.record`) and layer patches, never probes or trainings: those write their records, and a
publish shows whatever a record holds.
"""

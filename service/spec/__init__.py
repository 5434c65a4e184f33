"""The `LayerAdaptation` spec: the single source of truth for the CLI file, the CRD and the operator.

Owns: the pydantic models (`models`, their base `section`, and the Kubernetes `resources`),
reading and validating documents into one-line errors (`loading`), layer index lists (`indices`),
the spec's hashes (`fingerprint`) and the shipped demo spec (`demo`). Imports nothing of
layerpilot but `service.errors`: every other package may depend on it.
"""

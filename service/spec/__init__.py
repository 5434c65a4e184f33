"""The `LayerAdaptation` spec: the single source of truth for the CLI file, the CRD and the operator.

Owns: the pydantic models (`models`), reading and validating documents into one-line errors
(`loading`), layer index lists (`indices`) and the spec's hashes (`fingerprint`).
Imports nothing of layerpilot but `service.errors`: every other package may depend on it.
"""

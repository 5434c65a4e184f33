"""Kubernetes operator for LayerAdaptation resources (kopf)."""

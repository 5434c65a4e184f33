"""The Kubernetes operator: a `LayerAdaptation` resource becomes probe, training and registration Jobs.

Owns: the CRD, RBAC and Deployment manifests generated from `service.spec`, the pure functions
that build the Jobs a resource needs, and the kopf handlers that create and watch them. The only
package that imports kopf and kubernetes (checked by import-linter); it imports `service`, never
the CLI.
"""

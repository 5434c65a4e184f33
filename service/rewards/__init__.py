"""Rewards: TRL-shaped reward callables and the registry that builds them from the spec.

Owns: what every reward shares (`base`), the answer-comparing rewards (`answers`), `code_tests`
and its sandbox (`code`, with the child program `sandbox_child`), and the name registry
(`registry`). Imports only `service.spec` and `service.errors` of layerpilot.
"""

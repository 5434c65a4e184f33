"""layerpilot's engine: spec, layers, rewards, training, evaluation, layer patches.

Nothing here imports typer, kopf or kubernetes (checked by import-linter).
"""

__version__ = "0.1.0"

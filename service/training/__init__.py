"""Training: layer-selective GRPO on TRL, and the run directory it writes.

Owns: the `GRPOConfig` arguments and precision (`config`), TRL's trainer as we build it (`grpo`),
what a training records (`metrics`), the run directory and its resume rules (`rundir`), and the
training itself (`trainer`). Builds on models, rewards, data, the patch and the record; knows
nothing of probing or MLflow (a training writes its record; a publish shows it).
"""

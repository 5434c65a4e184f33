"""Training: layer-selective GRPO on TRL, and the run directory it writes.

Owns: the `GRPOConfig` arguments and precision (`config`), the run directory and its resume rules
(`rundir`), and the training itself (`trainer`). Builds on models, rewards, data and the patch;
knows nothing of probing or tracking (callers pass step hooks).
"""

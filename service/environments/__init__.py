"""Multi-turn environments: the protocol an agent's world speaks, the built-in worlds, and episodes.

An environment is any object with

    reset(seed: int, row: dict | None = None) -> str            # the first observation
    step(action: str) -> (observation: str, reward: float, done: bool[, info: dict])
    state_key() -> str                                         # optional: identifies the state

`seed` fixes the initial state: every episode of a GRPO group starts from the same seed. `row` is a
dataset row when the spec has both a dataset and an environment. `info` may say `success` (else an
episode succeeds when its return is positive) and `invalid` (the action could not be parsed; the
observation is the environment's own feedback). See `examples/my_env.py` for one to copy.
"""

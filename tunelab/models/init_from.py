"""Start a run from another finished run's weights (`model.init_from`): how stage chains hand over.

By the kind of the earlier run's artifact:
- adapters on a pretrained base: the same base is loaded and the saved adapters are injected with their
  weights (`load_adapter`), then trained further ("adapters carried over"); the new run's adapter
  settings must equal the saved ones, since a LoRA of rank 8 cannot continue as one of rank 16;
- a full fine-tune: the saved model folder becomes this run's model (`model_source_for` resolves it),
  with fresh adapters when this run uses them;
- a from-scratch model: its safetensors are loaded into the freshly built architecture.
Every handover is exact: the first forward pass of the new run equals the last one of the earlier run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from tunelab.adapters.spec import AdapterConfig
from tunelab.errors import TunelabError

ADAPTER_META = "tunelab_adapter.json"


def init_artifact(init_from: str | Path) -> Path:
    """The artifact folder of the finished run `init_from` (one-line error otherwise)."""
    run_dir = Path(init_from).expanduser()
    artifact = run_dir / "artifact"
    if not (run_dir / "config.yaml").is_file() or not artifact.is_dir():
        raise TunelabError(f"model.init_from: {run_dir} is not a finished tunelab run (config.yaml and artifact/ "
                           "expected)")
    return artifact


def artifact_kind(artifact: Path) -> str:
    """'adapter', 'full' or 'scratch'."""
    if (artifact / ADAPTER_META).is_file():
        return "adapter"
    if (artifact / "config.json").is_file():
        return "full"
    if (artifact / "tunelab_model.json").is_file():
        return "scratch"
    raise TunelabError(f"model.init_from: {artifact} holds no tunelab artifact")


def comparable(cfg: AdapterConfig) -> dict:
    """Adapter settings that decide the shapes and meaning of the weights (the init of weights about to be
    overwritten, the budget and the head patterns filled in from the model do not)."""
    return cfg.model_dump(mode="json", exclude={"trainable_extra", "init", "max_trainable"})


def carry_adapters(model: nn.Module, init_from: str | Path, base_fingerprint: str,
                   wanted: AdapterConfig) -> AdapterConfig:
    """Inject the earlier run's adapters with their trained weights; refuse different adapter settings."""
    from tunelab.adapters.artifact import load_adapter, read_adapter_meta

    artifact = init_artifact(init_from)
    saved = AdapterConfig.model_validate(read_adapter_meta(artifact)["config"])
    if comparable(saved) != comparable(wanted):
        changed = sorted(k for k, v in comparable(wanted).items() if comparable(saved).get(k) != v)
        raise TunelabError(f"adapter.{changed[0]}: a run started from {init_from} continues its adapters, so "
                           f"the adapter settings must stay as saved ({changed[0]}="
                           f"{comparable(saved)[changed[0]]!r})")
    return load_adapter(model, artifact, base_fingerprint)


def load_scratch_weights(model: nn.Module, init_from: str | Path) -> None:
    from safetensors.torch import load_file

    artifact = init_artifact(init_from)
    if artifact_kind(artifact) != "scratch":
        raise TunelabError(f"model.init_from: {init_from} did not train a from-scratch model")
    missing, unexpected = model.load_state_dict(load_file(str(artifact / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise TunelabError(f"model.init_from: {init_from}'s weights do not fit model.arch "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def weights_fingerprint(init_from: str | Path) -> str:
    """A short hash of the earlier run's weight files: part of every cache key computed from them."""
    artifact = init_artifact(init_from)
    digest = hashlib.sha256()
    for path in sorted(artifact.glob("*.safetensors")):
        digest.update(path.name.encode())
        stat = path.stat()  # small (adapter) files by content, a big full model by size and time
        digest.update(path.read_bytes() if stat.st_size < 2**28 else f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]

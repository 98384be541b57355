"""Where a task's model comes from: pretrained weights + their tokenizer, or a from-scratch architecture.

`model.name` (default) resolves to a folder of pretrained weights (packaged alias, local directory or hub
id) with its tokenizer; `model.arch` describes a from-scratch network instead: no weights, no hub, and
the task builds a char/byte tokenizer from its own training data. Tasks receive a source in
`build_model` and never branch on where the weights live.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import ModelConfig
from tunelab.errors import TunelabError


@dataclass
class PretrainedSource:
    """A resolved pretrained model folder and its tokenizer."""

    name: str
    revision: str | None
    path: Path
    fingerprint: str  # of config.json + weight files
    tokenizer: Any
    tokenizer_id: str  # of the tokenizer's vocabulary, special tokens and chat template
    kind: str = "pretrained"

    @property
    def base(self) -> dict[str, Any]:
        """What an adapter artifact records about the weights it sits on."""
        return {"name": self.name, "revision": self.revision, "fingerprint": self.fingerprint}


@dataclass
class ScratchSource:
    """A from-scratch architecture: `arch` is the recipe's model.arch section ({type: NAME, ...})."""

    arch: dict[str, Any]
    tokenizer: Any = None  # built by the task from its data
    tokenizer_id: str = ""
    kind: str = "scratch"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return "scratch-" + hashlib.sha256(json.dumps(self.arch, sort_keys=True).encode()).hexdigest()[:16]


ModelSource = PretrainedSource | ScratchSource


def model_source_for(cfg: ModelConfig) -> ModelSource:
    """Resolve model.name (loading its tokenizer), or take model.arch as it is; a model.init_from that
    holds a full fine-tune replaces model.name by its saved folder."""
    if cfg.arch is not None:
        from tunelab.models.scratch import parse_arch

        parse_arch(cfg.arch)  # a typo in model.arch fails before any data is read
        return ScratchSource(dict(cfg.arch))
    from tunelab.assets.models import load_tokenizer, resolve_model
    from tunelab.train.tokenize_cache import tokenizer_fingerprint

    if cfg.init_from is not None:
        from tunelab.models.init_from import artifact_kind, init_artifact

        artifact = init_artifact(cfg.init_from)
        if artifact_kind(artifact) == "full":  # a full fine-tune is continued from its saved folder
            cfg = cfg.model_copy(update={"name": str(artifact), "revision": None})
    try:
        resolved = resolve_model(cfg.name, cfg.revision)
    except TunelabError as error:  # name the recipe key: the same model may come from several places
        raise TunelabError(f"model.name: {error}") from None
    tokenizer = load_tokenizer(resolved, cfg.trust_remote_code)
    return PretrainedSource(cfg.name, cfg.revision, resolved.path, resolved.fingerprint, tokenizer,
                            tokenizer_fingerprint(tokenizer))

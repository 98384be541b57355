"""Convert a packaged GGUF into a plain safetensors folder once, then load that folder forever after.

Why: transformers can read a GGUF directly, but it dequantises every tensor in numpy on each load
(about 15 s for SmolLM2-135M on 2 cores), and the result cannot be `save_pretrained`-ed or wrapped
by PEFT while it still carries the GGUF quantizer. Converting once into
`<cache>/models/<alias>-<key>/` (fp32 safetensors + config + generation config + tokenizer with its
chat template) makes later loads a sub-second `from_pretrained(dir)`.

Crash safety: everything is written into `.tmp-<final name>-<pid>-<rand>/` beside the final folder
and renamed into place only after the chat template was re-read from disk and `tunelab-model.json`
(written last) records each file's size. A killed conversion leaves at most a hidden tmp folder,
which is never read as a cache and is swept by the next conversion once its pid is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from tunelab.assets.fingerprint import dir_fingerprint
from tunelab.errors import TunelabError
from tunelab.progress import Bar, progress_bar
from tunelab.rundir import atomic_replace_dir, atomic_write_json
from tunelab.write_errors import explained_write_errors

CACHE_FORMAT = 1  # bump when the folder layout or conversion changes: old caches are then ignored
META_NAME = "tunelab-model.json"
TMP_PREFIX = ".tmp-"
MIB = 1 << 20
STAGES = 3  # read gguf, dequantise, save


def gguf_key(gguf_path: Path) -> str:
    """12 hex chars from the file size and its first and last MiB: cheap, and any re-quantisation
    or different release changes the header or the tail. Includes CACHE_FORMAT."""
    size = gguf_path.stat().st_size
    digest = hashlib.sha256(f"tunelab-gguf-v{CACHE_FORMAT}:{size}:".encode())
    with open(gguf_path, "rb") as handle:
        digest.update(handle.read(MIB))
        if size > MIB:
            handle.seek(max(size - MIB, MIB))
            digest.update(handle.read(MIB))
    return digest.hexdigest()[:12]


def cache_dir_for(models_dir: Path, name: str, gguf_path: Path) -> Path:
    return models_dir / f"{name}-{gguf_key(gguf_path)}"


def read_cache_meta(cache_dir: Path) -> dict[str, Any] | None:
    """The metadata of a complete cache, or None when the folder is missing, partial or truncated."""
    try:
        meta = json.loads((cache_dir / META_NAME).read_text(encoding="utf-8"))
        sizes = {name: (cache_dir / name).stat().st_size for name in meta["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if sizes != meta["files"] or not meta.get("fingerprint"):
        return None  # e.g. a file truncated by a power cut after the rename
    return meta


def ensure_converted(name: str, gguf_path: Path, models_dir: Path) -> tuple[Path, str]:
    """(safetensors folder, fingerprint) for `gguf_path`, converting on the first call only."""
    final_dir = cache_dir_for(models_dir, name, gguf_path)
    meta = read_cache_meta(final_dir)
    if meta is None:
        if final_dir.exists():  # incomplete or corrupt: rebuild rather than trust it
            shutil.rmtree(final_dir, ignore_errors=True)
        meta = convert(name, gguf_path, final_dir)
    return final_dir, meta["fingerprint"]


def convert(name: str, gguf_path: Path, final_dir: Path) -> dict[str, Any]:
    """Read, dequantise and save into a tmp folder, then rename it to `final_dir` atomically."""
    sweep_stale_tmp(final_dir)
    tmp_dir = final_dir.parent / f"{TMP_PREFIX}{final_dir.name}-{os.getpid()}-{secrets.token_hex(3)}"
    with explained_write_errors(final_dir):  # a full or read-only cache disk: one line naming the cache folder
        tmp_dir.mkdir(parents=True)
        try:
            with progress_bar(f"caching {name} as safetensors", total=STAGES) as bar, _quiet_transformers(bar):
                model, tokenizer = load_gguf(gguf_path, bar)
                save_converted(model, tokenizer, tmp_dir, {"alias": name, "gguf_file": gguf_path.name,
                                                            "gguf_key": final_dir.name.rsplit("-", 1)[-1]})
                bar.advance(1, status="saved")
            atomic_replace_dir(tmp_dir, final_dir)
        except BaseException:  # KeyboardInterrupt too: never leave a tmp folder behind
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    meta = read_cache_meta(final_dir)  # another process may have won the rename race: use theirs
    if meta is None:
        raise TunelabError(f"model cache {final_dir} is incomplete after conversion; delete it and retry")
    return meta


def load_gguf(gguf_path: Path, bar: Bar | None = None) -> tuple[Any, Any]:
    """(fp32 causal LM, tokenizer) read from a GGUF with every weight dequantised to a dense tensor."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, file_name = str(gguf_path.parent), gguf_path.name
    if bar is not None:
        bar.advance(0, status="reading gguf")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    if bar is not None:
        bar.advance(1, status="read gguf")
    # dequantize=True: without it a GGUF model keeps its quantizer and refuses save_pretrained
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file_name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        raise TunelabError(f"{gguf_path.name} loaded with packed GGUF weights; cannot cache as safetensors")
    if bar is not None:
        bar.advance(1, status="dequantised")
    return model, tokenizer


def save_converted(model: Any, tokenizer: Any, out_dir: Path, meta: dict[str, Any]) -> str:
    """Save model + tokenizer, check the chat template survived the round trip, then write the
    metadata file last (its presence marks the folder complete). Returns the fingerprint."""
    from transformers import AutoTokenizer

    fix_generation_tokens(model, tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    reloaded = AutoTokenizer.from_pretrained(out_dir)
    if reloaded.chat_template is None:
        raise TunelabError(f"the chat template of {meta.get('gguf_file')} was lost while caching it")
    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}
    fingerprint = dir_fingerprint(out_dir)
    atomic_write_json(out_dir / META_NAME, {**meta, "cache_format": CACHE_FORMAT, "files": files,
                                            "fingerprint": fingerprint, "transformers": _version()})
    return fingerprint


def fix_generation_tokens(model: Any, tokenizer: Any) -> None:
    """Make sure generation stops on the tokenizer's eos (for SmolLM2 <|im_end|>, id 2) and that
    batching has a pad token; a chat model without its template cannot be used for SFT/DPO."""
    if tokenizer.chat_template is None:
        raise TunelabError("the GGUF tokenizer has no chat template; not caching a chat model without it")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TunelabError("the GGUF tokenizer has no eos token; generation would never stop")
    config = model.generation_config
    eos_ids = config.eos_token_id
    eos_list = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
    if eos not in eos_list:
        config.eos_token_id = [eos, *eos_list] if eos_list else eos
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id


def sweep_stale_tmp(final_dir: Path) -> None:
    """Delete tmp folders of `final_dir` left by conversions whose process is gone (killed -9)."""
    if not final_dir.parent.is_dir():
        return
    for tmp_dir in final_dir.parent.glob(f"{TMP_PREFIX}{final_dir.name}-*"):
        pid_text = tmp_dir.name[len(f"{TMP_PREFIX}{final_dir.name}-"):].split("-", 1)[0]
        if not pid_text.isdigit() or not _pid_alive(int(pid_text)):
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def _quiet_transformers(bar: Bar) -> Iterator[None]:
    """Silence transformers' own tqdm bars for the conversion (they would tear through the rich bar)
    and feed the per-tensor dequantise count into our bar's status instead."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    original = getattr(gguf_utils, "tqdm", None)  # a module global in transformers 5.x; guard for later
    if original is not None:
        gguf_utils.tqdm = partial(_tensor_ticker, bar=bar)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()


def _tensor_ticker(items: Iterable[Any], *args: Any, bar: Bar, **kwargs: Any) -> Iterator[Any]:
    """Stand-in for tqdm(items, desc=...): yields items, reporting every 16th to `bar`."""
    total = len(items) if hasattr(items, "__len__") else "?"  # type: ignore[arg-type]
    for index, item in enumerate(items, start=1):
        if index % 16 == 0 or index == total:
            bar.advance(0, status=f"dequantise {index}/{total}")
        yield item


def _version() -> str:
    import transformers

    return transformers.__version__

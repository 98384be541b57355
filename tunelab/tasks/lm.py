"""Causal language modelling from scratch (task: lm): a char/byte-level GPT on plain text.

Data: one text (data.train or a registered dataset, gzip allowed), or data.train + data.eval. Without an
eval file the split is by position: a contiguous block of data.eval_fraction of the characters is held
out, at the end when data.split_seed is 0 (nanoGPT's shakespeare_char split: the last 10%), else at an
offset drawn from split_seed. The tokenizer (lm.tokenizer: chars or bytes) is built from the text read.

Training batches: a step reads batch_size windows of block_size + 1 tokens at random start offsets;
inputs are the first block_size tokens, targets the same shifted by one. An "epoch" is as many windows
as it takes to cover the training tokens once (⌊N / block_size⌋), drawn from the epoch's generator only,
so batch order is a pure function of (seed, epoch) and a resumed run replays it. Recipes set
train.max_steps.

Evaluation: mean next-token cross-entropy L over lm.eval_windows fixed, evenly spaced validation windows
(every position of every window, like nanoGPT's estimate_loss, but the same windows every time), bits
per character L / ln 2 and perplexity e^L. The final evaluation also measures the training loss on as
many fixed training windows and writes seeded samples (temperature, top-k) to samples.txt.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import tunelab.models.gpt  # noqa: F401  (registers model.arch type "gpt")
from tunelab.data.char_tokenizer import CharTokenizer
from tunelab.errors import TunelabError
from tunelab.rundir import atomic_write_text
from tunelab.tasks.base import Task

SAMPLES_FILE = "samples.txt"


class LMTask(Task):
    name = "lm"

    def __init__(self, config):
        super().__init__(config)
        self.tokenizer: CharTokenizer | None = None
        self.train_ids = np.zeros(0, dtype=np.int64)
        self.eval_ids = np.zeros(0, dtype=np.int64)

    # ----- model -----
    @property
    def block_size(self) -> int:
        from tunelab.models.scratch import parse_arch

        if self.config.model.arch is None:
            raise TunelabError("model.arch: the lm task trains from scratch; give model.arch: {type: gpt, ...}")
        return parse_arch(self.config.model.arch)[1].block_size

    def build_model(self, source) -> nn.Module:
        from tunelab.models.scratch import build_scratch_model

        if source.kind != "scratch":
            raise TunelabError("model.arch: the lm task trains from scratch; give model.arch: {type: gpt, ...}")
        tokenizer = source.tokenizer or self.tokenizer
        if tokenizer is None:
            raise TunelabError("lm: no tokenizer (prepare_data builds it from the text)")
        return build_scratch_model(source.arch, tokenizer.vocab_size)

    def artifact_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict() if self.tokenizer else None}

    def load_artifact_state(self, state: dict[str, Any]) -> None:
        if state.get("tokenizer"):
            self.tokenizer = CharTokenizer.from_dict(state["tokenizer"])

    # ----- data -----
    def texts(self) -> tuple[str, str]:
        """(train text, eval text): an eval file, or a held-out block of the one text by position."""
        from tunelab.data.loaders import read_text

        cfg = self.config.data
        if cfg.dataset is not None:
            from tunelab.assets.datasets import locate, resolve_dataset

            spec = resolve_dataset(cfg.dataset)
            if spec.task != "lm":
                raise TunelabError(f"data.dataset: '{cfg.dataset}' is a {spec.task} dataset, not text for lm")
            text = read_text(locate(spec.train, spec.name), "data.dataset")
        else:
            text = read_text(cfg.train, "data.train")
        if cfg.eval is not None:
            return text, read_text(cfg.eval, "data.eval")
        held = int(len(text) * cfg.eval_fraction)
        start = len(text) - held
        if cfg.split_seed:
            start = int(np.random.default_rng(cfg.split_seed).integers(0, len(text) - held + 1))
        return text[:start] + text[start + held:], text[start:start + held]

    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        train_text, eval_text = self.texts()
        block = self.block_size
        if len(train_text) < block + 2 or len(eval_text) < block + 2:
            raise TunelabError(f"data: train ({len(train_text)} chars) and eval ({len(eval_text)} chars) need "
                               f"more than model.arch.block_size + 1 = {block + 1} characters each")
        if self.tokenizer is None:  # the vocabulary of all the text read, as nanoGPT's prepare.py builds it
            self.tokenizer = CharTokenizer.from_text(train_text + eval_text, self.config.lm.tokenizer)
        self.train_ids = self.tokenizer.encode(train_text)
        self.eval_ids = self.tokenizer.encode(eval_text)

    def preflight(self):
        """The vocabulary built from the data, the split sizes, and one training window as the model reads it."""
        from rich.markup import escape

        from tunelab.data.preflight import Preflight

        vocab = self.tokenizer.vocab_size
        report = Preflight(f"lm, {len(self.train_ids):,} train / {len(self.eval_ids):,} val tokens, "
                           f"vocabulary {vocab} ({self.config.lm.tokenizer})")
        window = self.tokenizer.decode(self.train_ids[:self.block_size].tolist())
        report.add(f"first training window ({self.block_size} tokens; every position predicts the next)",
                   [escape(window)])
        steps = self.config.train.batch_size * self.block_size
        report.add("budget", [f"{steps:,} tokens per micro-batch; an epoch is {self.windows_per_epoch:,} windows"])
        unseen = set(self.eval_ids.tolist()) - set(self.train_ids.tolist())
        if unseen:
            report.warnings.append(f"{len(unseen)} symbols occur only in the val text: the model never trains on them")
        return report

    @property
    def windows_per_epoch(self) -> int:
        return max(1, len(self.train_ids) // self.block_size)

    @property
    def train_size(self) -> int:
        return self.windows_per_epoch

    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Random window starts, batch_size per batch, covering about N training tokens per epoch."""
        batch = self.config.train.batch_size
        starts = rng.integers(0, len(self.train_ids) - self.block_size, size=self.windows_per_epoch)
        return [starts[i:i + batch] for i in range(0, len(starts) - batch + 1, batch)] or [starts]

    def windows(self, ids: np.ndarray, starts: np.ndarray) -> dict[str, torch.Tensor]:
        rows = np.stack([ids[s:s + self.block_size + 1] for s in starts])
        tensor = torch.from_numpy(rows)
        return {"input_ids": tensor[:, :-1].contiguous(), "targets": tensor[:, 1:].contiguous()}

    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        return self.windows(self.train_ids if split == "train" else self.eval_ids, index)

    def fixed_starts(self, ids: np.ndarray) -> np.ndarray:
        """lm.eval_windows evenly spaced window starts over `ids`: the same windows at every evaluation."""
        last = len(ids) - self.block_size - 1
        count = min(self.config.lm.eval_windows, last + 1)
        return np.linspace(0, last, count).round().astype(np.int64)

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].numel())

    # ----- loss -----
    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return model(batch["input_ids"], batch["targets"])[1], {}

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> float:
        return float(batch["targets"].numel())

    # ----- evaluation -----
    def periodic_metrics(self) -> tuple[str, ...]:
        return ("eval_loss", "bits_per_char", "perplexity")

    @torch.no_grad()
    def mean_loss(self, model: nn.Module, ids: np.ndarray, autocast=None) -> float:
        device = next(model.parameters()).device
        starts = self.fixed_starts(ids)
        total, size = 0.0, self.config.eval.batch_size
        for i in range(0, len(starts), size):
            batch = {k: v.to(device) for k, v in self.windows(ids, starts[i:i + size]).items()}
            with autocast() if autocast else torch.autocast(device.type, enabled=False):
                loss = model(batch["input_ids"], batch["targets"])[1]
            total += float(loss) * len(starts[i:i + size])
        return total / len(starts)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast=None, prefix=None) -> dict[str, Any]:
        model.eval()
        loss = self.mean_loss(model, self.eval_ids, autocast)
        metrics: dict[str, Any] = {"eval_loss": loss, "bits_per_char": loss / math.log(2),
                                   "perplexity": math.exp(min(loss, 50.0))}
        if out_dir is not None:
            metrics["train_loss"] = self.mean_loss(model, self.train_ids, autocast)
            write_samples(model, self.tokenizer, self.config.lm, Path(out_dir) / SAMPLES_FILE)
        return metrics


def sample_text(model: nn.Module, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int,
                temperature: float, top_k: int | None, seed: int) -> str:
    """The prompt and its continuation, drawn from a torch.Generator seeded with `seed` (same seed, same
    text on the same machine)."""
    if not prompt:
        raise TunelabError("prompt: give at least one character to start from")
    device = next(model.parameters()).device
    idx = torch.from_numpy(tokenizer.encode(prompt)).to(device)[None, :]
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = model.generate(idx, max_new_tokens, temperature, top_k, generator)
    model.train(was_training)
    return tokenizer.decode(out[0].tolist())


def write_samples(model: nn.Module, tokenizer: CharTokenizer, cfg, path: Path) -> None:
    """lm.samples samples of lm.sample_tokens characters, sample i seeded with lm.sample_seed + i."""
    if not cfg.samples:
        return
    header = (f"# {cfg.samples} samples, {cfg.sample_tokens} tokens each, temperature {cfg.temperature}, "
              f"top_k {cfg.top_k}, seeds {cfg.sample_seed}..{cfg.sample_seed + cfg.samples - 1}\n")
    texts = [sample_text(model, tokenizer, cfg.prompt, cfg.sample_tokens, cfg.temperature, cfg.top_k,
                         cfg.sample_seed + i) for i in range(cfg.samples)]
    atomic_write_text(path, header + "".join(f"\n--- sample {i} ---\n{t}\n" for i, t in enumerate(texts)))


__all__ = ["LMTask", "sample_text"]

"""Supervised fine-tuning of a causal (chat) LM.

Algorithm: each row becomes a conversation (tunelab.data.conversations), rendered with the
tokenizer's chat template (fallback template when it has none) and tokenised; the loss is the mean
next-token NLL over assistant tokens only, the end-of-turn/EOS token included so the model learns to
stop. Optional packing puts several examples in one row with restarting position ids (no
cross-example attention). Evaluation: eval loss, perplexity = exp(eval loss), next-token accuracy on
assistant tokens; with `eval.generate: N`, greedy generations for N eval prompts with BLEU and chrF;
with `eval.code`, pass@1 of the base and the tuned model on code problems (tasks/sft_code_eval.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.data.bad_rows import BadRows, bad_row_counts, enforce, write_bad_rows
from tunelab.data.chat_tokens import encode_conversations
from tunelab.data.conversations import FORMAT_COLUMNS, column, detect_format, read_conversations
from tunelab.data.tables import load_frames
from tunelab.errors import TunelabError
from tunelab.progress import progress_bar
from tunelab.tasks.base import Task
from tunelab.train.batching import bucketed_batches, sorted_batches
from tunelab.train.lm_loss import IGNORE, mean_nll, summed_nll
from tunelab.train.packing import collate_packed, collate_padded, pack_examples


class SFTTask(Task):
    name = "sft"
    default_metric = "eval_loss"

    def __init__(self, config):
        super().__init__(config)
        self.train_ids: list[np.ndarray] = []
        self.train_targets: list[np.ndarray] = []
        self.eval_ids: list[np.ndarray] = []
        self.eval_targets: list[np.ndarray] = []
        self.eval_conversations: list[list[dict[str, str]]] = []
        self.rows: list[list[int]] | None = None  # packed rows of example indices
        self.pad_id = 0
        self.tokenizer = None
        self.source = "data"
        self.row_numbers: dict[str, list[int]] = {"train": [], "eval": []}  # conversation -> row of the table
        self.bad: dict[str, BadRows] = {"train": BadRows(), "eval": BadRows()}

    # ----- data -----
    def conversations(self) -> tuple[list, list]:
        """Train and eval conversations; bad rows counted in self.bad (row numbers of the table as read)."""
        cfg = self.config.data
        frames = load_frames(cfg)
        defaults = dict(frames.spec.columns) if frames.spec else {}
        fmt = detect_format(frames.train, cfg.model_copy(update={"format": frames.spec.sft_format})
                            if frames.spec and cfg.format == "auto" else cfg, defaults)
        train, evaluation = frames.train, frames.eval
        if frames.spec is not None:  # registered sets: drop the few rows with a missing field
            needed = [column(cfg, role, defaults) for role in FORMAT_COLUMNS[fmt]]
            train, evaluation = train.dropna(subset=needed), evaluation.dropna(subset=needed)
        self.source = frames.source
        self.bad["train"].merge(frames.bad_train)  # rows the reader could not read (JSON, bytes)
        self.bad["eval"].merge(frames.bad_eval)
        out = {}
        for split, frame in (("train", train), ("eval", evaluation)):
            conversations, self.row_numbers[split], bad = read_conversations(
                frame, cfg, fmt, defaults, f"{frames.source} {split}")
            self.bad[split].merge(bad)
            out[split] = conversations
        return out["train"], out["eval"]

    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        if self.config.eval.code:  # a missing problem file fails now, not after training
            from tunelab.eval.code_problems import load_problems

            try:
                load_problems(self.config.eval.code, self.config.eval.code_limit)
            except TunelabError as error:
                raise TunelabError(f"eval.code: {error}") from error
        self.bad = {"train": BadRows(), "eval": BadRows()}
        train, evaluation = self.conversations()
        max_length = self.config.model.max_length
        with progress_bar("tokenising conversations", total=2) as bar:
            self.train_ids, self.train_targets, dropped = encode_conversations(
                tokenizer, train, max_length, cache_dir, tokenizer_id)
            bar.advance()
            self.eval_ids, self.eval_targets, eval_dropped = encode_conversations(
                tokenizer, evaluation, max_length, cache_dir, tokenizer_id)
            bar.advance()
        for split, positions in (("train", dropped), ("eval", eval_dropped)):
            for position in positions:
                self.bad[split].add("prompt_too_long", self.row_numbers[split][position])
            enforce(self.bad[split], self.config.data.on_error, f"the {split} data of {self.source}", warn=False)
        if not self.train_ids or not self.eval_ids:
            raise TunelabError(f"data: no conversation fits model.max_length={max_length}"
                               + "".join(f"; {split}: {b.describe()}" for split, b in self.bad.items() if b.total))
        gone = set(eval_dropped)
        self.eval_conversations = [c for i, c in enumerate(evaluation) if i not in gone]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.tokenizer = tokenizer
        if self.config.train.packing:
            self.rows = pack_examples(self.lengths(self.train_ids), max_length)

    def preflight(self):
        """The first conversation with its trained (assistant) tokens highlighted, whether the end-of-turn
        token is among them, lengths and truncation, train/eval overlap, packing fill."""
        from tunelab.data.preflight import Preflight, highlighted, length_lines, overlap_warning

        report = Preflight(f"sft, {len(self.train_ids)} train / {len(self.eval_ids)} eval conversations")
        ids, targets = self.train_ids[0], self.train_targets[0]
        trained = [False, *(targets[:-1] != IGNORE)]
        report.add("first training example (green: tokens with a loss)", [highlighted(self.tokenizer, ids, trained)])
        eos = self.tokenizer.eos_token_id
        ends = np.asarray([bool((t == eos).any()) for t in self.train_targets])
        lengths = self.lengths(self.train_ids)
        whole = lengths < self.config.model.max_length  # a cut example cannot end with its end-of-turn token
        ends_whole = float(ends[whole].mean()) if whole.any() else 1.0
        lines, _ = length_lines(lengths, self.config.model.max_length)
        report.add("lengths (train)", lines)
        notes = [f"{ends.mean():.0%} of the training examples train the end-of-turn token "
                 f"{self.tokenizer.convert_ids_to_tokens(int(eos))!r} ({ends_whole:.0%} of those not cut at "
                 "model.max_length)"]
        if self.pad_id == eos:
            notes.append("pad id = eos id: padding is excluded by the attention mask and the labels come from "
                         "the assistant mask, so the end-of-turn token is still trained")
        if self.rows is not None:
            used = int(self.lengths(self.train_ids).sum())
            notes.append(f"packing: {len(self.train_ids)} examples in {len(self.rows)} rows, "
                         f"{used / (len(self.rows) * self.config.model.max_length):.0%} of the row tokens used; "
                         "position ids restart per example, and transformers builds a block-diagonal causal "
                         "mask from them (sdpa, eager, flash attention), so examples never see each other")
        report.add("labels", notes)
        report.warn_bad_rows(self.bad)
        if ends_whole < 0.9:
            report.warnings.append(f"only {ends_whole:.0%} of the uncut training examples train the end-of-turn "
                                   "token: the model may not learn to stop (check the chat template)")
        overlap = overlap_warning([x.tobytes() for x in self.train_ids], [x.tobytes() for x in self.eval_ids])
        if overlap:
            report.warnings.append(overlap)
        return report

    @staticmethod
    def lengths(ids: list[np.ndarray]) -> np.ndarray:
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    @property
    def train_size(self) -> int:
        return len(self.train_ids)

    def train_lengths(self) -> np.ndarray | None:
        return None if self.rows is not None else self.lengths(self.train_ids)

    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg = self.config.train
        if self.rows is not None:  # batches of packed rows, in a seeded random order
            order = rng.permutation(len(self.rows))
            return [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        return bucketed_batches(self.lengths(self.train_ids), cfg.batch_size, cfg.bucket_pool, rng)

    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        if split == "train" and self.rows is not None:
            return collate_packed([self.rows[i] for i in index], self.train_ids, self.train_targets, self.pad_id)
        ids, targets = (self.train_ids, self.train_targets) if split == "train" else (self.eval_ids, self.eval_targets)
        return collate_padded(index, ids, targets, self.pad_id)

    def batch_samples(self, index: np.ndarray) -> int:
        return sum(len(self.rows[i]) for i in index) if self.rows is not None else len(index)

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Every non-padding token the model processed (prompt and answer)."""
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        return int((batch["input_ids"] != self.pad_id).sum())

    # ----- model and loss -----
    def build_model(self, source) -> nn.Module:
        from tunelab.models.causal_lm import load_causal_lm

        if source.kind != "pretrained":
            raise TunelabError("task sft fine-tunes a pretrained causal LM: set model.name, not model.arch")
        return load_causal_lm(source.path, self.config.model, self.config.train.gradient_checkpointing)

    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean NLL over the batch's target (assistant) tokens; the loop weights it by `loss_weight`."""
        return mean_nll(model, batch, self.config.train.loss_chunk), {}

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> float:
        """Target tokens: a step's loss is the mean over all its answer tokens, not a mean of row means."""
        return float((batch["targets"] != IGNORE).sum())

    def periodic_metrics(self) -> tuple[str, ...]:
        return ("eval_loss", "perplexity", "token_accuracy")

    # ----- evaluation -----
    @torch.no_grad()
    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast=None, prefix=None) -> dict[str, Any]:
        """`prefix` is never given: SFT has no frozen-prefix inputs (the LM input carries position ids)."""
        model.eval()
        device = next(model.parameters()).device
        batches = sorted_batches(self.lengths(self.eval_ids), self.config.eval.batch_size)
        total, count, correct = 0.0, 0, 0
        with progress_bar("evaluating", total=len(self.eval_ids)) as bar:
            for index in batches:
                batch = {k: v.to(device) for k, v in self.collate(index, split="eval").items()}
                with autocast() if autocast else torch.autocast(device.type, enabled=False):
                    nll, n, right = summed_nll(model, batch, self.config.train.loss_chunk)
                total, count, correct = total + float(nll), count + n, correct + right
                bar.advance(len(index))
        loss = total / max(count, 1)
        metrics: dict[str, Any] = {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                                   "token_accuracy": correct / max(count, 1), "eval_tokens": count}
        if out_dir is not None:
            metrics.update(bad_row_counts(self.bad))
            write_bad_rows(Path(out_dir), self.bad)
        if out_dir is not None and self.config.eval.generate:
            from tunelab.tasks.sft_generation import generate_eval_samples

            metrics.update(generate_eval_samples(model, self.tokenizer, self.eval_conversations,
                                                 self.config.eval, Path(out_dir)))
        if out_dir is not None and self.config.eval.code:
            from tunelab.tasks.sft_code_eval import code_eval_metrics

            metrics.update(code_eval_metrics(model, self.tokenizer, self.config.eval, Path(out_dir)))
        return metrics


__all__ = ["SFTTask", "IGNORE"]

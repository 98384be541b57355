"""Direct Preference Optimization (and IPO, hinge, SimPO) of a causal (chat) LM with adapters.

Algorithm (Rafailov et al. 2023). For a prompt x with a preferred reply y_c and a dispreferred y_r:
    logp(y|x) = Σ over the completion tokens of log π(y_t | x, y_<t)        (prompt tokens excluded)
    ρ = log πθ(y|x) − log π_ref(y|x),  m = ρ_c − ρ_r
    sigmoid loss  −(1−ε)·logσ(β m) − ε·logσ(−β m)        (ipo, hinge, simpo: tunelab.train.preference_loss)
The reference π_ref is the policy as training starts, and never a second copy of the weights:
- adapters trained from zero: the frozen base, i.e. the same network with every adapter switched off
  (`tunelab.adapters.switch.disabled`);
- a later stage of a chain (`model.init_from`: SFT adapters carried over) or full fine-tuning: the model
  before its first update.
Its log-probs never change, so they are computed once per example, in eval mode under no_grad, and cached
in memory and on disk keyed by (base fingerprint, quantisation, token cache key, starting weights). The
frozen base can be asked at any time, so its log-probs are taken as the pairs are first needed: a training
batch's pairs just before its step, the eval split at the first evaluation; a run shorter than an epoch
never pays for the pairs it does not train on. The starting policy must be asked before it moves, so a
chain stage or a full fine-tune takes every pair's at the first batch.

Batches: with `preference.share_prompt` (default) each pair's prompt runs once and both replies continue
its KV cache (`tunelab.train.shared_prompt`); otherwise P pairs become 2P right-padded rows, [prompt,
chosen] then [prompt, rejected]. `loss_fn` returns the mean over pairs and `loss_weight` is P, so gradient
accumulation averages over every pair of the optimizer step.

Evaluation on the held-out pairs: eval_loss (the training loss), reward_accuracy = mean[β ρ_c > β ρ_r]
(a tie, as at the start of LoRA training where ρ = 0, is not a win), reward_margin = mean β m,
chosen_reward = mean β ρ_c, rejected_reward = mean β ρ_r (simpo: β times the mean token log-prob), and
the bad-row counts of both splits (bad_rows.json in the run folder lists reasons and first rows).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.adapters.inject import adapter_modules
from tunelab.adapters.switch import disabled
from tunelab.data.bad_rows import BadRows, bad_row_counts, write_bad_rows
from tunelab.data.pairs import PairTokens, collate_pairs, encode_pairs, frame_pairs
from tunelab.data.tables import load_frames
from tunelab.errors import TunelabError
from tunelab.progress import progress_bar
from tunelab.rundir import atomic_write_text, atomic_write_with
from tunelab.tasks.base import Task
from tunelab.train.batching import bucketed_batches, sorted_batches
from tunelab.train.preference_loss import PairLogps, pair_logps, preference_loss
from tunelab.train.shared_prompt import collate_shared

SPLITS = ("train", "eval")


def save_array(path: Path, values: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, values)


class DPOTask(Task):
    name = "dpo"

    def __init__(self, config):
        super().__init__(config)
        if config.model.arch is not None:
            raise TunelabError("model.arch: task dpo fine-tunes a pretrained causal LM; set model.name "
                               "(a from-scratch model.arch is for tasks lm and image_classification)")
        self.tokens: dict[str, PairTokens] = {}
        self.bad: dict[str, BadRows] = {}
        self.reference: dict[str, np.ndarray] = {}  # split -> (N, 2) reference logps of chosen, rejected
        self.cache_dir: Path | None = None
        self.base_fingerprint: str | None = None
        self.pad_id = 0
        self.tokenizer = None

    @property
    def needs_reference(self) -> bool:
        return self.config.preference.loss != "simpo"

    @property
    def reference_is_base(self) -> bool:
        """True: the reference is the frozen base under `disabled()` (adapters trained from zero). False
        (a stage chain's later stage, or full fine-tuning): it is the policy as training starts, whose
        log-probs are taken before the first update."""
        return self.config.model.init_from is None and self.config.adapter.variant != "none"

    @property
    def share_prompt(self) -> bool:
        return self.config.preference.share_prompt and not self.config.train.gradient_checkpointing

    # ----- data -----
    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        cfg = self.config.data
        frames = load_frames(cfg)
        fmt = cfg.format
        if fmt == "auto" and frames.spec is not None and frames.spec.sft_format == "hh":
            fmt = "hh"
        if fmt not in ("auto", "hh"):
            raise TunelabError(f"data.format: task dpo reads prompt/chosen/rejected rows (auto) or HH-RLHF "
                               f"transcripts (hh), not {fmt!r}")
        max_length = self.config.model.max_length
        with progress_bar("tokenising preference pairs", total=2) as bar:
            for split, frame in zip(SPLITS, (frames.train, frames.eval), strict=True):
                pairs, bad = frame_pairs(frame, fmt, cfg.system, f"{frames.source} {split}", cfg.columns)
                self.tokens[split] = encode_pairs(tokenizer, pairs, max_length, bad, cache_dir, tokenizer_id)
                self.bad[split] = bad
                bar.advance()
        if not len(self.tokens["train"]) or not len(self.tokens["eval"]):
            raise TunelabError(f"data: no usable preference pair (train {len(self.tokens['train'])}, eval "
                               f"{len(self.tokens['eval'])}) within model.max_length={max_length}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.tokenizer = tokenizer

    def preflight(self):
        """The first pair (prompt dim, the two scored replies in green), lengths, bad rows."""
        from tunelab.data.preflight import Preflight, highlighted, length_lines

        tokens = self.tokens["train"]
        report = Preflight(f"dpo, {len(tokens)} train / {len(self.tokens['eval'])} eval pairs")
        prompt = tokens.prompt[0].tolist()
        for name, reply in (("chosen", tokens.chosen[0]), ("rejected", tokens.rejected[0])):
            reply = reply.tolist()
            report.add(f"first pair, {name} (green: the tokens whose log-probs are compared)",
                       [highlighted(self.tokenizer, prompt + reply, [False] * len(prompt) + [True] * len(reply))])
        lines, truncated = length_lines(tokens.lengths(), self.config.model.max_length)
        report.add("lengths (prompt + longer reply)", lines)
        if truncated > 0.25:
            report.warnings.append(f"{truncated:.0%} of the pairs are cut at model.max_length: their replies are "
                                   "compared on a prefix only")
        report.warn_bad_rows(self.bad, "bad pairs")
        return report

    @property
    def train_size(self) -> int:
        return len(self.tokens["train"])

    def train_lengths(self) -> np.ndarray | None:
        return self.tokens["train"].lengths()

    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg = self.config.train
        return bucketed_batches(self.tokens["train"].lengths(), cfg.batch_size, cfg.bucket_pool, rng)

    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        """The pairs' model inputs plus their cached reference log-probs when the loss needs them."""
        batch = self.collate_policy(index, split)
        if self.needs_reference:
            if split not in self.reference or np.isnan(self.reference[split][index]).any():
                raise RuntimeError("reference log-probs are computed by ensure_reference before collate")
            ref = torch.from_numpy(self.reference[split][index]).float()  # (P, 2)
            batch["ref_chosen"], batch["ref_rejected"] = ref[:, 0], ref[:, 1]
        return batch

    def collate_policy(self, index: np.ndarray, split: str) -> dict[str, torch.Tensor]:
        """The model inputs of P pairs: shared-prompt layout (`tunelab.train.shared_prompt`) or 2P rows."""
        tokens = self.tokens[split]
        if self.share_prompt:
            batch = collate_shared([tokens.prompt[i] for i in index], [tokens.chosen[i] for i in index],
                                   [tokens.rejected[i] for i in index], self.pad_id)
        else:
            batch = collate_pairs(tokens, index, self.pad_id)
        return batch

    def make_batch(self, model: nn.Module, index: np.ndarray, step: int) -> dict[str, torch.Tensor]:
        self.ensure_reference(model, step, "train", index)
        return self.collate(index)

    def batch_samples(self, index: np.ndarray) -> int:
        return len(index)  # pairs

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the forward pass processes: a shared prompt counts once."""
        if "prompt_mask" in batch:
            return int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())
        return int(batch["attention_mask"].sum())

    # ----- reference log-probs -----
    def reference_path(self, split: str) -> Path | None:
        if self.cache_dir is None or self.base_fingerprint is None or not self.persist_model_outputs:
            return None
        start = "base" if self.reference_is_base else self.start_fingerprint()
        key = json.dumps([self.base_fingerprint, self.config.model.quantize, self.tokens[split].key, start])
        return self.cache_dir / f"dpo-ref-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"

    def start_fingerprint(self) -> str:
        """Which weights the policy starts from, when that is not the plain base."""
        if self.config.model.init_from is None:
            return "initial-full"
        from tunelab.models.init_from import weights_fingerprint

        return "init-" + weights_fingerprint(self.config.model.init_from)

    def ensure_reference(self, model: nn.Module, step: int = 0, split: str | None = None,
                         index: np.ndarray | None = None) -> None:
        """Reference log-probs of the pairs `index` of `split` (default: every pair of both splits), from
        memory, disk, or a pass of the frozen base over the missing ones. For the starting policy (not the
        base) every pair of both splits, before the first update."""
        if not self.needs_reference:
            return
        wanted: dict[str, np.ndarray | None] = {split: index} if split is not None else dict.fromkeys(SPLITS)
        if not self.reference_is_base:
            wanted = dict.fromkeys(SPLITS)
            if step > 0 and any(s not in self.reference for s in SPLITS) and not all(
                    (path := self.reference_path(s)) is not None and path.is_file() for s in SPLITS):
                raise TunelabError("task dpo: the reference log-probs of the starting policy are gone from the "
                                   "token cache, and the weights have moved since; restart this run (or stage) "
                                   "from its start")
        for name, rows in wanted.items():
            values = self.stored_reference(name)
            rows = np.arange(len(values)) if rows is None else np.asarray(rows)
            missing = rows[np.isnan(values[rows, 0])]
            if not len(missing):
                continue
            values[missing] = self.reference_logps(model, name, missing)
            if (path := self.reference_path(name)) is not None:
                atomic_write_with(path, lambda tmp, values=values: save_array(tmp, values))

    def stored_reference(self, split: str) -> np.ndarray:
        """The split's (N, 2) reference array: in memory, else the token cache's file, else all NaN."""
        if split not in self.reference:
            size = len(self.tokens[split])
            path = self.reference_path(split)
            stored = np.load(path, allow_pickle=False) if path is not None and path.is_file() else None
            fits = stored is not None and stored.shape == (size, 2)
            self.reference[split] = np.array(stored) if fits else np.full((size, 2), np.nan)
        return self.reference[split]

    def reference_logps(self, model: nn.Module, split: str, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 2) summed completion log-probs of the pairs `rows` under the reference, in eval mode,
        no_grad, fp32: the frozen base (adapters off), or the model as it stands (the starting policy).
        A progress bar only for a pass larger than one eval batch (not for a training batch's pairs)."""
        if self.reference_is_base and not adapter_modules(model):
            raise TunelabError("task dpo: the model has no adapters, so there is no frozen base to use as "
                               "the reference")
        out = np.zeros((len(rows), 2), dtype=np.float64)
        device = next(model.parameters()).device
        size = self.config.eval.batch_size
        lengths = self.tokens[split].lengths()[rows]
        was_training = model.training
        model.eval()
        try:
            reference = disabled(model) if self.reference_is_base else nullcontext()
            bar = progress_bar(f"reference log-probs ({split})", total=len(rows)) if len(rows) > size else nullcontext()
            with torch.no_grad(), torch.autocast(device.type, enabled=False), reference, bar as shown:
                for batch_rows in sorted_batches(lengths, size):
                    batch = {k: v.to(device) for k, v in self.collate_policy(rows[batch_rows], split).items()}
                    logps = pair_logps(model, batch, self.config.train.loss_chunk)
                    out[batch_rows, 0] = logps.chosen.double().cpu().numpy()
                    out[batch_rows, 1] = logps.rejected.double().cpu().numpy()
                    if shown is not None:
                        shown.advance(len(batch_rows))
        finally:
            model.train(was_training)
        return out

    # ----- model and loss -----
    def build_model(self, source) -> nn.Module:
        from tunelab.models.causal_lm import load_causal_lm

        if source.kind != "pretrained":
            raise TunelabError("task dpo fine-tunes a pretrained causal LM: set model.name, not model.arch")
        self.base_fingerprint = source.fingerprint
        return load_causal_lm(source.path, self.config.model, self.config.train.gradient_checkpointing)

    def pair_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        pref = self.config.preference
        logps: PairLogps = pair_logps(model, batch, self.config.train.loss_chunk)
        return preference_loss(logps, pref.loss, pref.beta, pref.label_smoothing, pref.simpo_gamma)

    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss over the batch's pairs, and the pair means of rewards, margin and accuracy."""
        per_pair, rewards = self.pair_losses(model, batch)
        return per_pair.mean(), {name: float(value.mean()) for name, value in rewards.items()}

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> float:
        """Pairs."""
        if "prompt_ids" in batch:
            return float(batch["prompt_ids"].shape[0])
        return float(batch["input_ids"].shape[0] // 2)

    def periodic_metrics(self) -> tuple[str, ...]:
        return ("eval_loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")

    # ----- evaluation -----
    def write_pairs(self, out_dir: Path, values: dict[str, np.ndarray]) -> None:
        """pairs.jsonl: each eval pair's row and its loss, rewards, margin and win, for paired tests
        between runs (tunelab.report.per_example) and for reading which pairs a run gets wrong."""
        rows = self.tokens["eval"].rows
        lines = [json.dumps({"row": int(rows[i]), **{k: float(v[i]) for k, v in values.items()}}) + "\n"
                 for i in range(len(rows))]
        atomic_write_text(out_dir / "pairs.jsonl", "".join(lines))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast=None, prefix=None) -> dict[str, Any]:
        """Pair means over the eval split; `prefix` is never given (no frozen-prefix inputs)."""
        self.ensure_reference(model, split="eval")
        model.eval()
        device = next(model.parameters()).device
        tokens = self.tokens["eval"]
        sums = dict.fromkeys(("eval_loss", *self.periodic_metrics()[1:]), 0.0)
        per_pair_values = {name: np.zeros(len(tokens)) for name in sums}
        with progress_bar("evaluating", total=len(tokens)) as bar:
            for index in sorted_batches(tokens.lengths(), self.config.eval.batch_size):
                batch = {k: v.to(device) for k, v in self.collate(index, split="eval").items()}
                with autocast() if autocast else torch.autocast(device.type, enabled=False):
                    per_pair, rewards = self.pair_losses(model, batch)
                for name, value in {"eval_loss": per_pair, **rewards}.items():
                    values = value.detach().float().cpu().numpy()
                    sums[name] += float(values.sum())
                    per_pair_values[name][index] = values
                bar.advance(len(index))
        metrics: dict[str, Any] = {name: total / len(tokens) for name, total in sums.items()}
        metrics.update(eval_pairs=len(tokens), **bad_row_counts(self.bad))
        if out_dir is not None:
            write_bad_rows(Path(out_dir), self.bad)
            self.write_pairs(Path(out_dir), per_pair_values)
        return metrics

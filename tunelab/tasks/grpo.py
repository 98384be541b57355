"""Group Relative Policy Optimization of a causal (chat) LM with user rewards (Shao et al. 2024).

Each optimizer step, for the prompts of each micro-batch:
1. rollouts: G completions per prompt from the current policy (eval mode, no_grad), the prompt's KV
   cache computed once and shared by its G completions (`tunelab.train.rollout`), sampled with a
   generator seeded by (run seed, rollout round, prompts): fresh noise every round, and a resumed run
   draws what the uninterrupted one drew;
2. rewards: r = Σ_k w_k · reward_k (built-ins or user functions, `tunelab.rewards`), advantages
   normalised within each prompt's group (`tunelab.train.grpo_loss`);
3. loss: the clipped-ratio objective on the completion tokens, the prompt again computed once per group
   (`tunelab.train.shared_prompt.continue_prompts`), plus β·KL to the reference when grpo.beta > 0. The
   reference is the same network with its adapters switched off (`disabled`), never a second copy.
With grpo.iterations μ > 1 a set of rollouts serves μ optimizer steps (`train_batches` repeats each
step's prompt group μ times); π_old's log-probs are taken when the rollouts are made, and checkpoints
must fall on rollout boundaries so a resumed run never needs rollouts it did not keep.

Evaluation (held-out prompts, greedy, one completion each): eval_reward (the weighted total),
accuracy against the answer column (grpo.answer: exact, yes_no, numeric), completion_length; the final
evaluation adds the yes/no confusion matrix, the same figures for the model before training
(accuracy_before — adapters switched off, when they were trained from zero), and completions.jsonl.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.adapters.inject import adapter_modules
from tunelab.adapters.switch import disabled
from tunelab.data.bad_rows import BadRows, bad_row_counts, write_bad_rows
from tunelab.data.prompt_rows import PromptRows, load_prompt_rows
from tunelab.errors import TunelabError
from tunelab.eval.generation import stop_token_ids
from tunelab.progress import progress_bar
from tunelab.rewards.builtin import final_number, first_yes_no, normalize
from tunelab.rewards.loading import Reward, load_rewards, score
from tunelab.rundir import atomic_write_text
from tunelab.tasks.base import Task
from tunelab.train.grpo_loss import aggregate, group_advantages, token_losses
from tunelab.train.precision import Precision, choose_precision
from tunelab.train.rollout import Rollouts, right_padded, sample_completions
from tunelab.train.shared_prompt import continue_prompts, target_logps


def completion_tensors(completions: list[np.ndarray], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(1, max(len(c) for c in completions))
    ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(completions), width), dtype=torch.long)
    for row, tokens in enumerate(completions):
        ids[row, :len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
        mask[row, :len(tokens)] = 1
    return {"completion_ids": ids.to(device), "completion_mask": mask.to(device)}


def completion_logps(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int, chunk: int) -> torch.Tensor:
    """log π(o_t) of every completion token (R, Lc), 0 at padding; the prompt runs once per group."""
    last, hidden = continue_prompts(model, batch, repeats)
    predictors = torch.cat([last.repeat_interleave(repeats, dim=0)[:, None], hidden[:, :-1]], dim=1)  # (R, Lc, H)
    mask = batch["completion_mask"].bool()
    values = target_logps(model, predictors[mask], batch["completion_ids"][mask], chunk)
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


class GRPOTask(Task):
    name = "grpo"
    batches_need_model = True

    def __init__(self, config):
        super().__init__(config)
        if config.model.arch is not None:
            raise TunelabError("model.arch: task grpo fine-tunes a pretrained causal LM; set model.name "
                               "(a from-scratch model.arch is for tasks lm and image_classification)")
        self.rows: dict[str, PromptRows] = {}
        self.bad: dict[str, BadRows] = {}
        self.rewards: list[Reward] = load_rewards(config.grpo.rewards)
        self.tokenizer = None
        self.pad_id = 0
        self.precision: Precision | None = None
        self.rollout_round: int | None = None
        self.kept: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}  # this round's batches by prompt index
        self.clock = {"generation": 0.0, "steps": 0.0, "generation_in_steps": 0.0, "tokens": 0.0}
        self.step_started: tuple[int, float, float] | None = None  # (step, time, generation seconds so far)
        self.check_settings()

    def check_settings(self) -> None:
        g, train = self.config.grpo, self.config.train
        every = train.checkpoint_every or train.eval_every
        if g.iterations > 1 and every and every % g.iterations:
            raise TunelabError(f"grpo.iterations={g.iterations}: train.checkpoint_every (or eval_every) = {every} "
                               "must be a multiple of it, so checkpoints fall between rollout sets")
        if g.beta > 0 and not self.reference_is_base:
            raise TunelabError("grpo.beta > 0 needs the frozen base as the reference (adapters trained from "
                               "zero); with model.init_from or adapter.variant none set grpo.beta: 0")
        if self.config.train.gradient_checkpointing:
            raise TunelabError("task grpo shares each prompt's KV cache across its completions, which gradient "
                               "checkpointing turns off; set train.gradient_checkpointing: false")

    @property
    def reference_is_base(self) -> bool:
        return self.config.model.init_from is None and self.config.adapter.variant != "none"

    @property
    def group(self) -> int:
        return self.config.grpo.num_generations

    # ----- data -----
    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        g = self.config.grpo
        max_prompt = self.config.model.max_length - g.max_new_tokens
        if max_prompt < 1:
            raise TunelabError(f"model.max_length={self.config.model.max_length} leaves no room for a prompt "
                               f"with grpo.max_new_tokens={g.max_new_tokens}")
        need_answer = g.answer != "none" or any(r.label in ("exact_answer", "yes_no", "numeric_answer")
                                                for r in self.rewards)
        self.rows, self.bad = load_prompt_rows(self.config.data, tokenizer, max_prompt, need_answer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.tokenizer = tokenizer

    def preflight(self):
        """The first prompt exactly as the policy sees it, the gold answer, prompt lengths, bad rows."""
        from tunelab.data.preflight import Preflight, highlighted, length_lines

        rows = self.rows["train"]
        report = Preflight(f"grpo, {len(rows)} train / {len(self.rows['eval'])} eval prompts, "
                           f"{self.group} completions each")
        answer = rows.columns["answer"][0] if "answer" in rows.columns else None
        report.add(f"first prompt (completions are sampled after it; answer {answer!r})",
                   [highlighted(self.tokenizer, rows.ids[0].tolist(), [False] * len(rows.ids[0]))])
        room = self.config.model.max_length - self.config.grpo.max_new_tokens
        lines, _ = length_lines(rows.lengths(), room, "prompt tokens", "model.max_length - grpo.max_new_tokens")
        report.add("prompt lengths (the rest of model.max_length is kept for the completion)", lines)
        report.add("rewards", [f"{r.weight:g} x {r.label} {r.args or ''}".rstrip() for r in self.rewards])
        report.warn_bad_rows(self.bad, "bad prompt rows")
        return report

    @property
    def train_size(self) -> int:
        return len(self.rows["train"])

    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Prompt batches of train.batch_size, whole optimizer steps of train.grad_accum of them, each
        step's group repeated grpo.iterations times in a row (one rollout set, μ updates)."""
        cfg = self.config.train
        order = rng.permutation(self.train_size)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        steps = max(1, len(batches) // cfg.grad_accum)  # a ragged last step would break the repetition
        out: list[np.ndarray] = []
        for s in range(steps):
            out += batches[s * cfg.grad_accum:(s + 1) * cfg.grad_accum] * self.config.grpo.iterations
        return out

    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        """The prompts of `index`, right-padded (rollouts and loss add the completions)."""
        return right_padded([self.rows[split].ids[i] for i in index], self.pad_id, torch.device("cpu"))

    def batch_samples(self, index: np.ndarray) -> int:
        return len(index) * self.group  # completions

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())

    # ----- rollouts -----
    def rollout_generator(self, round_: int, index: np.ndarray) -> torch.Generator:
        seed = np.random.SeedSequence([self.config.train.seed, round_, *map(int, index)]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    def sample(self, model: nn.Module, split: str, index: np.ndarray, repeats: int, temperature: float,
               generator: torch.Generator | None) -> Rollouts:
        g = self.config.grpo
        precision = self.precision_for(model)
        with precision.autocast():
            return sample_completions(model, [self.rows[split].ids[i] for i in index], repeats, g.max_new_tokens,
                                      temperature, g.top_p, stop_token_ids(model, self.tokenizer), self.pad_id,
                                      generator)

    def precision_for(self, model: nn.Module) -> Precision:
        if self.precision is None:
            self.precision = choose_precision(self.config.train.precision, next(model.parameters()).device)
        return self.precision

    def texts(self, completions: list[np.ndarray]) -> list[str]:
        return self.tokenizer.batch_decode([c.tolist() for c in completions], skip_special_tokens=True)

    def make_batch(self, model: nn.Module, index: np.ndarray, step: int) -> dict[str, torch.Tensor]:
        """The rollouts of this round for `index` (made now, or kept from the round's first step)."""
        self.time_steps(step)
        round_ = step // self.config.grpo.iterations
        if round_ != self.rollout_round:
            self.rollout_round, self.kept = round_, {}
        key = tuple(int(i) for i in index)
        if key not in self.kept:
            self.kept[key] = self.rollout_batch(model, index, round_)
        return self.kept[key]

    def time_steps(self, step: int) -> None:
        """Generation's share of step time: each step runs from its first make_batch to the next step's."""
        now = time.perf_counter()
        if self.step_started is not None and self.step_started[0] == step:
            return
        if self.step_started is not None and self.step_started[0] == step - 1:
            self.clock["steps"] += now - self.step_started[1]
            self.clock["generation_in_steps"] += self.clock["generation"] - self.step_started[2]
        self.step_started = (step, now, self.clock["generation"])

    def rollout_batch(self, model: nn.Module, index: np.ndarray, round_: int) -> dict[str, torch.Tensor]:
        g, rows = self.config.grpo, self.rows["train"]
        device = next(model.parameters()).device
        rollouts = self.sample(model, "train", index, self.group, g.temperature, self.rollout_generator(round_, index))
        self.clock["generation"] += rollouts.seconds
        self.clock["tokens"] += rollouts.tokens
        texts = self.texts(rollouts.completions)
        prompts = [rows.prompts[i] for i in index for _ in range(self.group)]
        example_rows = [int(rows.rows[i]) for i in index for _ in range(self.group)]
        total, means = score(self.rewards, prompts, texts, rows.columns_for(index, self.group), example_rows)
        rewards = torch.as_tensor(total, dtype=torch.float32)
        grouped = rewards.view(-1, self.group)
        batch = {**{k: v.to(device) for k, v in self.collate(index).items()},
                 **completion_tensors(rollouts.completions, self.pad_id, device),
                 "advantages": group_advantages(rewards, self.group, g.scale_rewards).to(device)}
        if g.iterations > 1:
            with self.precision_for(model).autocast():
                batch["old_logps"] = completion_logps(model, batch, self.group, self.config.train.loss_chunk).float()
        if g.beta > 0:
            with disabled(model), self.precision_for(model).autocast():
                batch["ref_logps"] = completion_logps(model, batch, self.group, self.config.train.loss_chunk).float()
        stats = {"reward": float(rewards.mean()), "reward_std": float(grouped.std(dim=1).mean()),
                 "completion_length": float(np.mean([len(c) for c in rollouts.completions])),
                 "stopped": float(rollouts.stopped.mean()), "gen_seconds": rollouts.seconds,
                 "gen_tokens_per_s": rollouts.tokens / rollouts.seconds if rollouts.seconds else 0.0, **means}
        batch.update({f"stat:{name}": torch.tensor(value, dtype=torch.float64) for name, value in stats.items()})
        return batch

    # ----- model and loss -----
    def build_model(self, source) -> nn.Module:
        from tunelab.models.causal_lm import load_causal_lm

        if source.kind != "pretrained":
            raise TunelabError("task grpo fine-tunes a pretrained causal LM: set model.name, not model.arch")
        return load_causal_lm(source.path, self.config.model, False)

    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        g = self.config.grpo
        logps = completion_logps(model, batch, self.group, self.config.train.loss_chunk)
        old = batch["old_logps"] if "old_logps" in batch else logps.detach()
        eps_high = g.epsilon_high if g.epsilon_high is not None else g.epsilon
        per_token, parts = token_losses(logps, old, batch["advantages"], g.epsilon, eps_high, g.beta,
                                        batch.get("ref_logps"))
        mask = batch["completion_mask"]
        loss = aggregate(per_token, mask, g.loss_aggregation)
        logged = {name.removeprefix("stat:"): float(value) for name, value in batch.items() if name.startswith("stat:")}
        for name, value in parts.items():  # clipped share, KL: averaged like the loss
            logged[name] = float(aggregate(value.detach(), mask, g.loss_aggregation))
        return loss, logged

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> float:
        """Completions (sequence aggregation) or completion tokens (token aggregation)."""
        if self.config.grpo.loss_aggregation == "token":
            return float(batch["completion_mask"].sum())
        return float(batch["completion_mask"].shape[0])

    # ----- evaluation -----
    def periodic_metrics(self) -> tuple[str, ...]:
        names = ("eval_reward", "completion_length")
        return (*names, "accuracy") if self.config.grpo.answer != "none" else names

    def judge(self, completion: str, answer: Any) -> bool:
        kind = self.config.grpo.answer
        if kind == "yes_no":
            return first_yes_no(completion) == str(answer).strip().lower()
        if kind == "numeric":
            predicted, gold = final_number(completion), final_number(str(answer))
            return predicted is not None and gold is not None and abs(predicted - gold) <= 1e-6
        return normalize(completion) == normalize(answer)

    @torch.no_grad()
    def greedy_eval(self, model: nn.Module, autocast) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = self.rows["eval"]
        texts: list[str] = [""] * len(rows)
        lengths = np.zeros(len(rows))
        order = np.argsort(rows.lengths(), kind="stable")
        size = self.config.eval.batch_size
        with progress_bar("evaluating (greedy answers)", total=len(rows)) as bar:
            for start in range(0, len(rows), size):
                index = order[start:start + size]
                with autocast() if autocast else nullcontext():
                    out = sample_completions(model, [rows.ids[i] for i in index], 1, self.config.grpo.max_new_tokens,
                                             0.0, 1.0, stop_token_ids(model, self.tokenizer), self.pad_id)
                for i, text, tokens in zip(index, self.texts(out.completions), out.completions, strict=True):
                    texts[i], lengths[i] = text, len(tokens)
                bar.advance(len(index))
        total, means = score(self.rewards, rows.prompts, texts, rows.columns_for(np.arange(len(rows)), 1),
                             rows.rows.tolist())
        metrics: dict[str, Any] = {"eval_reward": float(total.mean()), "completion_length": float(lengths.mean()),
                                   **{f"eval_{k}": v for k, v in means.items()}}
        records = [{"row": int(r), "prompt": p, "completion": t, "reward": float(s)}
                   for r, p, t, s in zip(rows.rows, rows.prompts, texts, total, strict=True)]
        if self.config.grpo.answer != "none":
            correct = [self.judge(t, a) for t, a in zip(texts, rows.columns["answer"], strict=True)]
            metrics["accuracy"] = float(np.mean(correct))
            for record, ok, answer in zip(records, correct, rows.columns["answer"], strict=True):
                record.update(answer=str(answer), correct=bool(ok))
            if self.config.grpo.answer == "yes_no":
                metrics["confusion"] = yes_no_confusion(texts, rows.columns["answer"])
        return metrics, records

    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast=None, prefix=None) -> dict[str, Any]:
        model.eval()
        metrics, records = self.greedy_eval(model, autocast)
        if out_dir is None:
            return metrics
        if self.reference_is_base and adapter_modules(model):
            with disabled(model):
                before, _ = self.greedy_eval(model, autocast)
            metrics.update({f"{name}_before": value for name, value in before.items()})
            if "accuracy" in metrics:
                metrics["accuracy_after"] = metrics["accuracy"]
        metrics.update(self.timing_metrics(), eval_prompts=len(self.rows["eval"]), **bad_row_counts(self.bad))
        out = Path(out_dir)
        atomic_write_text(out / "completions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        write_bad_rows(out, self.bad)
        return metrics

    def timing_metrics(self) -> dict[str, float]:
        """Generation time, its share of the training steps timed in this process, and its token rate."""
        c = self.clock
        return {"generation_seconds": c["generation"],
                "generation_share": c["generation_in_steps"] / c["steps"] if c["steps"] else 0.0,
                "generation_tokens_per_s": c["tokens"] / c["generation"] if c["generation"] else 0.0}


def yes_no_confusion(texts: list[str], answers: list[Any]) -> dict[str, int]:
    """Counts with "Yes" as the positive class; an answer with neither word counts as unparsed (and as
    wrong in the accuracy), not as a guess."""
    counts: Counter[str] = Counter({"TP": 0, "TN": 0, "FP": 0, "FN": 0, "unparsed": 0})
    for text, answer in zip(texts, answers, strict=True):
        predicted, gold = first_yes_no(text), str(answer).strip().lower()
        if predicted is None:
            counts["unparsed"] += 1
        elif predicted == "yes":
            counts["TP" if gold == "yes" else "FP"] += 1
        else:
            counts["TN" if gold == "no" else "FN"] += 1
    return dict(counts)

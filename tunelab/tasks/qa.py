"""Extractive question answering (SQuAD v1.1, SQuAD 2.0 with unanswerable questions) on any encoder.

Algorithm: (question, context) -> windows of model.max_length tokens, consecutive windows of a long
context sharing qa.doc_stride tokens (tunelab.data.qa_windows) -> encoder -> qa_outputs, a linear layer
giving start and end logits per token -> loss = (CE(start logits, start label) + CE(end logits, end
label)) / 2 per window, label 0 ([CLS]) when the window holds no answer. Evaluation picks the best span
across a question's windows, compares it with the [CLS] null score, tunes the no-answer threshold on the
eval split (tunelab.eval.qa_postprocess) and scores with the official SQuAD v2 definitions
(tunelab.eval.squad_metrics, 0-100 scale). The threshold is stored in task_state.json for `tunelab predict`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForQuestionAnswering

from tunelab.data.bad_rows import BadRows, bad_row_counts, write_bad_rows
from tunelab.data.qa_rows import QARows, frame_rows, load_qa_frames
from tunelab.data.qa_windows import QAWindows, encode_windows, max_question_tokens, question_lengths
from tunelab.errors import TunelabError
from tunelab.eval.qa_postprocess import Answer, best_answers, tune_threshold
from tunelab.eval.squad_metrics import squad_v2_metrics
from tunelab.models.remote_code import from_pretrained
from tunelab.progress import progress_bar
from tunelab.rundir import atomic_write_json, atomic_write_text
from tunelab.tasks.base import Task
from tunelab.train.batching import bucketed_batches, pad_batch, sorted_batches

SPLITS = ("train", "eval")


def drop_long_questions(rows: QARows, tokenizer: Any, limit: int, bad: BadRows) -> QARows:
    """Questions too long to leave a context window are bad rows (the tokenizer cannot window them)."""
    lengths = question_lengths(tokenizer, rows.questions)
    keep = [i for i, n in enumerate(lengths) if n <= limit]
    for i in np.flatnonzero(lengths > limit):
        bad.add("question_too_long", int(i))
    return QARows(*([column[i] for i in keep] for column in
                    (rows.ids, rows.questions, rows.contexts, rows.answers, rows.titles)))


class QATask(Task):
    name = "qa"

    def __init__(self, config):
        super().__init__(config)
        self.rows: dict[str, QARows] = {}
        self.windows: dict[str, QAWindows] = {}
        self.bad: dict[str, BadRows] = {}
        self.pad_id = 0
        self.tokenizer: Any = None
        self.with_types = True
        self.no_answer = config.qa.no_answer if config.qa.no_answer is not None else True
        self.threshold = 0.0
        self.last_answers: list[Answer] = []

    # ----- data -----
    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        if tokenizer is None or not getattr(tokenizer, "is_fast", False):
            raise TunelabError("model.name: task qa needs a fast tokenizer (character offsets); "
                               f"{self.config.model.name} has none")
        cfg, qa = self.config.data, self.config.qa
        max_length = self.config.model.max_length
        if qa.doc_stride >= max_length // 2:
            raise TunelabError(f"qa.doc_stride: {qa.doc_stride} must be below half of model.max_length={max_length}")
        train, evaluation, source = load_qa_frames(cfg)
        limit = max_question_tokens(tokenizer, max_length, qa.doc_stride)
        for split, frame in zip(SPLITS, (train, evaluation), strict=True):
            bad = BadRows()
            rows = frame_rows(frame, cfg.columns, f"the {split} data of {source}", bad)
            self.rows[split] = drop_long_questions(rows, tokenizer, limit, bad)
            self.bad[split] = bad  # listed by the pre-flight report
            if not len(self.rows[split]):
                raise TunelabError(f"data: no usable {split} question in {source} ({bad.describe() or 'empty'})")
            self.windows[split] = encode_windows(tokenizer, self.rows[split].questions, self.rows[split].contexts,
                                                 self.rows[split].answers, max_length, qa.doc_stride, cache_dir,
                                                 tokenizer_id, f"tokenising {split}")
        if qa.no_answer is None:
            self.no_answer = any(not a for split in SPLITS for a in self.rows[split].answers)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.with_types = self.windows["train"].type_ids is not None
        self.tokenizer = tokenizer

    def preflight(self):
        """The first window that holds an answer, with the labelled span in green; windows per question,
        the unanswerable share, and answers the windowing cut off."""
        from tunelab.data.preflight import Preflight, highlighted

        rows, windows = self.rows["train"], self.windows["train"]
        report = Preflight(f"qa, {len(rows)} train / {len(self.rows['eval'])} eval questions in {len(windows)} train "
                           f"windows (max_length {self.config.model.max_length}, stride {self.config.qa.doc_stride})")
        labelled = np.flatnonzero(windows.start > 0)
        if labelled.size:
            w = int(labelled[0])
            ids = windows.ids[w].tolist()
            span = [windows.start[w] <= i <= windows.end[w] for i in range(len(ids))]
            gold = rows.answers[int(windows.example[w])][0][0]
            report.add(f"first window with an answer (green: the labelled span; gold {gold!r})",
                       [highlighted(self.tokenizer, ids, span)])
        unanswerable = sum(1 for a in rows.answers if not a)
        answered = {int(windows.example[i]) for i in labelled}
        lost = sum(1 for q, a in enumerate(rows.answers) if a and q not in answered)
        report.add("windows", [f"{len(windows) / max(1, len(rows)):.2f} windows per question; "
                               f"{unanswerable / max(1, len(rows)):.0%} of the questions have no answer"])
        if lost:
            report.warnings.append(f"{lost} answerable training questions have their answer in no window (cut by "
                                   "model.max_length / qa.doc_stride): they train as no-answer")
        report.warn_bad_rows(self.bad, "bad QA rows")
        return report

    @property
    def train_size(self) -> int:
        return len(self.windows["train"]) if "train" in self.windows else 0

    def train_lengths(self) -> np.ndarray | None:
        return self.windows["train"].lengths

    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg = self.config.train
        return bucketed_batches(self.windows["train"].lengths, cfg.batch_size, cfg.bucket_pool, rng)

    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        return collate_windows(self.windows[split], index, self.pad_id)

    # ----- model and loss -----
    def build_model(self, source) -> nn.Module:
        if source.kind != "pretrained":
            raise TunelabError("task qa fine-tunes a pretrained encoder: set model.name, not model.arch")
        return from_pretrained(AutoModelForQuestionAnswering, source.path, self.config.model.trust_remote_code)

    def artifact_state(self) -> dict[str, Any]:
        return {"null_threshold": self.threshold, "no_answer": self.no_answer}

    def load_artifact_state(self, state: dict[str, Any]) -> None:
        self.threshold = float(state.get("null_threshold", 0.0))
        self.no_answer = bool(state.get("no_answer", True))

    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(**model_inputs(batch))
        start = F.cross_entropy(out.start_logits.float(), batch["start_positions"])
        end = F.cross_entropy(out.end_logits.float(), batch["end_positions"])
        return (start + end) / 2, {}

    # ----- evaluation -----
    @torch.no_grad()
    def window_logits(self, model: nn.Module, windows: QAWindows, autocast=None,
                      description: str = "evaluating") -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Start/end logits of every window (unpadded), in window order."""
        model.eval()
        device = next(model.parameters()).device
        starts: list[np.ndarray] = [np.zeros(0)] * len(windows)
        ends: list[np.ndarray] = [np.zeros(0)] * len(windows)
        with progress_bar(description, total=len(windows)) as bar:
            for index in sorted_batches(windows.lengths, self.config.eval.batch_size):
                batch = {k: v.to(device) for k, v in collate_windows(windows, index, self.pad_id).items()}
                with autocast() if autocast else contextlib.nullcontext():
                    out = model(**model_inputs(batch))
                s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
                for row, w in enumerate(index):
                    n = len(windows.ids[w])
                    starts[w], ends[w] = s[row, :n], e[row, :n]
                bar.advance(len(index))
        return starts, ends

    def answers_for(self, model: nn.Module, windows: QAWindows, contexts: list[str], autocast=None) -> list[Answer]:
        starts, ends = self.window_logits(model, windows, autocast)
        qa = self.config.qa
        return best_answers(windows, starts, ends, contexts, qa.n_best, qa.max_answer_length)

    def answer(self, answer: Answer) -> str:
        """The prediction after the no-answer rule ("" = no answer)."""
        if not self.no_answer:
            return answer.text
        return answer.text if answer.answered(self.threshold) else ""

    def periodic_metrics(self) -> tuple[str, ...]:
        return ("exact", "f1", "best_f1")

    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast=None, prefix=None) -> dict[str, Any]:
        """Official SQuAD v2 scores at the threshold tuned here on the eval split; `prefix` is never given
        (qa does not offer frozen-prefix inputs)."""
        rows = self.rows["eval"]
        answers = self.answers_for(model, self.windows["eval"], rows.contexts, autocast)
        gold = [[text for text, _ in a] for a in rows.answers]
        self.threshold = tune_threshold(answers, gold) if self.no_answer else float("inf")
        predictions = {qid: self.answer(a) for qid, a in zip(rows.ids, answers, strict=True)}
        na_probs = {qid: a.no_answer_score for qid, a in zip(rows.ids, answers, strict=True)}
        # predictions already apply our threshold: the official --na-prob-thresh rule (made for probabilities
        # in [0, 1]) is switched off, na_probs only drive best_exact / best_f1
        metrics: dict[str, Any] = squad_v2_metrics(rows.gold(), predictions, na_probs, float("inf"))
        metrics = {k: float(v) if isinstance(v, float) else v for k, v in metrics.items()}
        metrics.update(null_threshold=self.threshold if self.no_answer else None,
                       eval_windows=len(self.windows["eval"]), **bad_row_counts(self.bad))
        self.last_answers = answers
        if out_dir is not None:
            self.write_eval_files(Path(out_dir), answers, predictions, na_probs)
        return metrics

    def write_eval_files(self, out_dir: Path, answers: list[Answer], predictions: dict[str, str],
                         na_probs: dict[str, float]) -> None:
        """predictions.json and na_probs.json in the official evaluation's formats, a readable
        predictions.jsonl, and bad_rows.json."""
        import json

        rows = self.rows["eval"]
        atomic_write_json(out_dir / "predictions.json", predictions)
        atomic_write_json(out_dir / "na_probs.json", na_probs)
        lines = [json.dumps({"id": qid, "question": q, "prediction": predictions[qid],
                             "start": a.start if predictions[qid] else -1, "end": a.end if predictions[qid] else -1,
                             "score": a.score if a.start >= 0 else None, "no_answer_score": a.no_answer_score,
                             "best_span": a.text, "gold": [t for t, _ in gold]}, ensure_ascii=False)
                 for qid, q, a, gold in zip(rows.ids, rows.questions, answers, rows.answers, strict=True)]
        atomic_write_text(out_dir / "predictions.jsonl", "\n".join(lines) + "\n")
        write_bad_rows(out_dir, self.bad)

    # ----- prediction on new inputs (tunelab predict) -----
    def predict_rows(self, model: nn.Module, tokenizer: Any, questions: list[str], contexts: list[str]
                     ) -> list[dict[str, Any]]:
        """Answer text, character span and score per (question, context); "" below the stored threshold."""
        qa, max_length = self.config.qa, self.config.model.max_length
        limit = max_question_tokens(tokenizer, max_length, qa.doc_stride)
        for row, n in enumerate(question_lengths(tokenizer, questions)):
            if n > limit:
                raise TunelabError(f"row {row}: the question has {n} tokens; at most {limit} fit "
                                   f"model.max_length={max_length} with qa.doc_stride={qa.doc_stride}")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        windows = encode_windows(tokenizer, questions, contexts, [[] for _ in questions], max_length, qa.doc_stride)
        out = []
        for answer in self.answers_for(model, windows, contexts):
            text = self.answer(answer)
            out.append({"answer": text, "start": answer.start if text else None, "end": answer.end if text else None,
                        "score": answer.score if answer.start >= 0 else None,
                        "no_answer_score": answer.no_answer_score, "best_span": answer.text,
                        "threshold": self.threshold if self.no_answer else None})
        return out


def collate_windows(windows: QAWindows, index: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    input_ids, attention_mask = pad_batch([windows.ids[i] for i in index], pad_id)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "start_positions": torch.from_numpy(windows.start[index]),
             "end_positions": torch.from_numpy(windows.end[index])}
    if windows.type_ids is not None:
        batch["token_type_ids"], _ = pad_batch([windows.type_ids[i] for i in index], 0)
    return batch


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the encoder takes (token_type_ids only for models that have segment embeddings)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}

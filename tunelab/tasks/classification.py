"""Sequence classification (AG News, IMDb, CoLA, SST-2).

Algorithm: text -> tokenizer (truncate to model.max_length) -> encoder -> pooled [CLS] ->
linear head -> logits (B, num_labels); loss = mean cross-entropy. Evaluation predicts argmax on the
eval split and scores accuracy, macro/weighted F1, MCC and the confusion matrix with scikit-learn.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSequenceClassification

from tunelab.data.bad_rows import BadRows, bad_row_counts, enforce, write_bad_rows
from tunelab.data.label_rows import clean_split
from tunelab.data.tables import join_text, load_tables
from tunelab.errors import TunelabError
from tunelab.eval.classification_metrics import classification_metrics, confusion_table
from tunelab.models.remote_code import from_pretrained
from tunelab.progress import progress_bar
from tunelab.rundir import atomic_write_text
from tunelab.tasks.base import Task
from tunelab.train.batching import TokenizedSet, bucketed_batches, pad_batch, sorted_batches
from tunelab.train.tokenize_cache import tokenize_texts


def encode_labels(values: pd.Series, names: tuple[str, ...], column: str, classes: list[str] | None = None,
                  where: str = "data.train") -> tuple[np.ndarray, list[str]]:
    """Integer labels stay as they are (0..K-1); strings map to sorted class names (or to `classes`, the
    training set's, when encoding the eval split)."""
    if pd.api.types.is_integer_dtype(values):
        labels = values.to_numpy(dtype=np.int64)
        if labels.min() < 0:
            row = int(np.argmin(labels))
            raise TunelabError(f"data.columns.label: negative label {labels[row]} in row {row} of column '{column}'")
        count = max(int(labels.max()) + 1, len(names))
        return labels, list(names) if len(names) == count else [str(i) for i in range(count)]
    text = values.astype(str)
    classes = classes if classes is not None else sorted(text.unique())
    unknown = sorted(set(text) - set(classes))
    if unknown:
        raise TunelabError(f"{where}: label '{unknown[0]}' does not occur in the training data")
    mapping = {name: i for i, name in enumerate(classes)}
    return text.map(mapping).to_numpy(dtype=np.int64), classes


class ClassificationTask(Task):
    name = "classification"

    def __init__(self, config):
        super().__init__(config)
        self.label_names: list[str] = []
        self.train_set: TokenizedSet | None = None
        self.eval_set: TokenizedSet | None = None
        self.eval_texts: list[str] = []
        self.pad_id = 0
        self.bad: dict[str, BadRows] = {"train": BadRows(), "eval": BadRows()}
        self.tokenizer: Any = None
        self.train_texts: list[str] = []

    # ----- data -----
    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        tables = load_tables(self.config.data)
        train, self.bad["train"] = clean_split(tables.train, tables.text_fields, tables.label)
        known = set(train[tables.label].astype(str))
        evaluation, self.bad["eval"] = clean_split(tables.eval, tables.text_fields, tables.label, known)
        for split, bad in self.bad.items():
            enforce(bad, self.config.data.on_error, f"the {split} data of {tables.source}", warn=False)
        if not len(train) or not len(evaluation):
            raise TunelabError(f"data: {tables.source} has no usable {'training' if not len(train) else 'eval'} "
                               f"row left ({'; '.join(b.describe() for b in self.bad.values() if b.total)})")
        tables = replace(tables, train=train, eval=evaluation)
        train_labels, names = encode_labels(tables.train[tables.label], tables.label_names, tables.label)
        string_classes = None if pd.api.types.is_integer_dtype(tables.train[tables.label]) else names
        eval_labels, _ = encode_labels(tables.eval[tables.label], tables.label_names, tables.label,
                                       string_classes, where="data.eval")
        if len(names) <= int(eval_labels.max()):
            names = [str(i) for i in range(int(eval_labels.max()) + 1)]
        self.label_names = names
        max_length = self.config.model.max_length
        train_texts = join_text(tables.train, tables.text_fields)
        self.eval_texts = join_text(tables.eval, tables.text_fields)
        self.train_set = TokenizedSet(tokenize_texts(tokenizer, train_texts, max_length, cache_dir, tokenizer_id,
                                                     "tokenising train"), train_labels)
        self.eval_set = TokenizedSet(tokenize_texts(tokenizer, self.eval_texts, max_length, cache_dir, tokenizer_id,
                                                    "tokenising eval"), eval_labels)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.tokenizer, self.train_texts = tokenizer, train_texts

    def preflight(self):
        """The first example as the encoder sees it, class balance, lengths and truncation, overlap, bad rows."""
        from tunelab.data.preflight import Preflight, balance_lines, highlighted, length_lines, overlap_warning

        report = Preflight(f"classification, {self.train_size} train / {len(self.eval_set)} eval rows, "
                           f"{self.num_labels} classes")
        ids = self.train_set.ids[0]
        report.add(f"first training example (label {self.label_names[int(self.train_set.targets[0])]!r})",
                   [highlighted(self.tokenizer, ids, [True] * len(ids))])
        lines, warnings = balance_lines(self.train_set.targets.tolist(), self.eval_set.targets.tolist(),
                                        self.label_names)
        report.add("classes", lines)
        report.warnings += warnings
        lines, truncated = length_lines(self.train_set.lengths, self.config.model.max_length)
        report.add("lengths (train)", lines)
        if truncated > 0.25:
            report.warnings.append(f"{truncated:.0%} of the training texts are cut at model.max_length="
                                   f"{self.config.model.max_length}")
        overlap = overlap_warning(self.train_texts, self.eval_texts)
        if overlap:
            report.warnings.append(overlap)
        report.warn_bad_rows(self.bad, "bad rows")
        return report

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def train_size(self) -> int:
        return len(self.train_set) if self.train_set is not None else 0

    def train_lengths(self) -> np.ndarray | None:
        return self.train_set.lengths

    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg = self.config.train
        return bucketed_batches(self.train_set.lengths, cfg.batch_size, cfg.bucket_pool, rng)

    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        data = self.train_set if split == "train" else self.eval_set
        input_ids, attention_mask = pad_batch([data.ids[i] for i in index], self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": torch.from_numpy(data.targets[index])}

    def prefix_inputs(self, split: str = "train"):
        data = self.train_set if split == "train" else self.eval_set
        lengths = data.lengths
        return sorted_batches(lengths, self.config.eval.batch_size), lambda index: self.collate(index, split), lengths

    # ----- model and loss -----
    def build_model(self, source) -> nn.Module:
        if source.kind != "pretrained":
            raise TunelabError("task classification fine-tunes a pretrained encoder: set model.name, not model.arch")
        names = self.label_names
        return from_pretrained(
            AutoModelForSequenceClassification, source.path, self.config.model.trust_remote_code,
            num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})

    def artifact_state(self) -> dict[str, Any]:
        return {"label_names": self.label_names}

    def load_artifact_state(self, state: dict[str, Any]) -> None:
        self.label_names = list(state.get("label_names", []))

    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, K)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        return loss, {}

    # ----- evaluation -----
    @torch.no_grad()
    def predict(self, model: nn.Module, autocast=None, prefix=None) -> np.ndarray:
        model.eval()
        device = next(model.parameters()).device
        batches = sorted_batches(self.eval_set.lengths, self.config.eval.batch_size)
        predictions = np.zeros(len(self.eval_set), dtype=np.int64)
        with progress_bar("evaluating", total=len(self.eval_set)) as bar:
            for index in batches:
                batch = self.collate(index, split="eval")
                cached = prefix(index) if prefix else contextlib.nullcontext()
                with cached, autocast() if autocast else contextlib.nullcontext():
                    logits = model(input_ids=batch["input_ids"].to(device),
                                   attention_mask=batch["attention_mask"].to(device)).logits
                predictions[index] = logits.argmax(dim=-1).cpu().numpy()
                bar.advance(len(index))
        return predictions

    def periodic_metrics(self) -> tuple[str, ...]:
        return ("accuracy", "macro_f1", "weighted_f1", "mcc")

    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast=None, prefix=None) -> dict[str, Any]:
        predictions = self.predict(model, autocast, prefix)
        metrics = classification_metrics(self.eval_set.targets, predictions, self.num_labels)
        if out_dir is not None:
            self.write_eval_files(out_dir, predictions, metrics)
            metrics.update(bad_row_counts(self.bad))
            write_bad_rows(Path(out_dir), self.bad)
        return metrics

    def write_eval_files(self, out_dir: Path, predictions: np.ndarray, metrics: dict[str, Any]) -> None:
        from tunelab.report.plots import plot_confusion_matrix

        names = self.label_names
        frame = pd.DataFrame({"text": self.eval_texts, "label": [names[i] for i in self.eval_set.targets],
                              "prediction": [names[i] for i in predictions]})
        atomic_write_text(Path(out_dir) / "predictions.csv", frame.to_csv(index=False))
        atomic_write_text(Path(out_dir) / "confusion_matrix.md", confusion_table(metrics["confusion_matrix"], names))
        plot_confusion_matrix(metrics["confusion_matrix"], names, Path(out_dir) / "confusion_matrix.png")

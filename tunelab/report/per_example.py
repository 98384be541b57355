"""Per-example scores read back from a run folder, for the paired tests of `tunelab.report.significance`.

What each task leaves in its run folder decides what can be tested:
- classification / image_classification: predictions.csv (label, prediction; images also a per-example
  cross-entropy `loss`) -> accuracy (right/wrong, McNemar), macro_f1, weighted_f1, mcc (recomputed on
  each bootstrap resample from the resampled confusion matrix) and eval_loss (mean loss);
- qa: predictions.jsonl (id, prediction, gold answers) -> exact, f1 per question (× 100, as the table);
- sft: generations.jsonl rows with per-sentence bleu / chrf -> the mean sentence score (the table's corpus
  BLEU/chrF is not a mean of sentences, so the test is on the sentence-level mean);
- dpo: pairs.jsonl (loss, rewards, margin, win per eval pair) -> every DPO metric (mean per pair);
- grpo: completions.jsonl (reward, right/wrong per eval prompt) -> eval_reward, accuracy (McNemar);
- lm, and sft's eval_loss / perplexity: no per-example file, so no paired test.
Two runs are paired only when `examples` (a sha256 over the example ids/texts and gold) is equal; a file
whose scores do not reproduce the summary's metric (a stale or edited file) is not used.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tunelab.eval.squad_metrics import raw_scores
from tunelab.report.runs import RunRecord
from tunelab.report.significance import Statistic, mean_statistic
from tunelab.rundir import read_jsonl

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "weighted_f1", "mcc")
PREDICTION_COLUMNS = {"prediction", "confidence", "loss"}  # the rest of predictions.csv names the example


@dataclass
class ExampleScores:
    """One run's eval set, seen example by example."""

    source: str  # the file the scores come from
    examples: str  # sha256 of the examples and their gold: equal <=> the same eval set in the same order
    predictions: str  # sha256 of the predictions: equal on equal examples <=> identical predictions
    n: int
    statistics: dict[str, Statistic] = field(default_factory=dict)  # metric -> statistic over (B, n) indices
    correct: np.ndarray | None = None  # right/wrong per example, for McNemar on accuracy


def digest(values) -> str:
    return hashlib.sha256(json.dumps(values, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def confusion_batches(labels: np.ndarray, predictions: np.ndarray, k: int, index: np.ndarray) -> np.ndarray:
    """(B, k, k) confusion counts (rows true, columns predicted) of each resample of example indices."""
    cells = labels[index] * k + predictions[index] + (np.arange(len(index)) * k * k)[:, None]
    return np.bincount(cells.ravel(), minlength=len(index) * k * k).reshape(len(index), k, k).astype(np.float64)


def f1_per_class(counts: np.ndarray) -> np.ndarray:
    """(B, k) F1 = 2TP / (2TP + FP + FN), 0 where a class is neither true nor predicted (zero_division=0)."""
    tp = np.diagonal(counts, axis1=1, axis2=2)
    denominator = counts.sum(2) + counts.sum(1)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def mcc_of(counts: np.ndarray) -> np.ndarray:
    """Multi-class MCC (Gorodkin 2004) as sklearn computes it: (c·s − Σ p_k t_k) / √((s² − Σp²)(s² − Σt²))."""
    t, p = counts.sum(2), counts.sum(1)
    c, s = np.trace(counts, axis1=1, axis2=2), counts.sum((1, 2))
    numerator = c * s - (p * t).sum(1)
    denominator = np.sqrt((s**2 - (p**2).sum(1)) * (s**2 - (t**2).sum(1)))
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def classification_statistics(labels: np.ndarray, predictions: np.ndarray, k: int) -> dict[str, Statistic]:
    def counts(index: np.ndarray) -> np.ndarray:
        return confusion_batches(labels, predictions, k, index)

    def weighted(index: np.ndarray) -> np.ndarray:
        c = counts(index)
        support = c.sum(2)
        return (f1_per_class(c) * support).sum(1) / np.maximum(support.sum(1), 1)

    return {"accuracy": mean_statistic(labels == predictions),
            "macro_f1": lambda index: f1_per_class(counts(index)).mean(1),
            "weighted_f1": weighted, "mcc": lambda index: mcc_of(counts(index))}


def label_names(record: RunRecord) -> list[str]:
    path = record.path / "task_state.json"
    if not path.is_file():
        return []
    state = json.loads(path.read_text(encoding="utf-8"))
    return [str(name) for name in state.get("label_names") or []]


def from_predictions_csv(record: RunRecord) -> ExampleScores:
    """classification (text, label, prediction) and image_classification (index, label, prediction, loss)."""
    path = record.path / "predictions.csv"
    import pandas as pd  # here: a run that prints its own summary need not load pandas

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"label", "prediction"} <= set(frame.columns):
        raise ValueError(f"{path.name} has no label/prediction columns")
    names = label_names(record)
    classes = list(dict.fromkeys(names + sorted(set(frame["label"]) | set(frame["prediction"]))))
    position = {name: i for i, name in enumerate(classes)}
    labels = frame["label"].map(position).to_numpy(dtype=np.int64)
    predictions = frame["prediction"].map(position).to_numpy(dtype=np.int64)
    example_columns = [c for c in frame.columns if c not in PREDICTION_COLUMNS]
    scores = ExampleScores(path.name, digest(frame[example_columns].to_numpy().tolist()),
                           digest(frame["prediction"].tolist()), len(frame),
                           classification_statistics(labels, predictions, len(classes)), labels == predictions)
    if "loss" in frame.columns:
        scores.statistics["eval_loss"] = mean_statistic(frame["loss"].astype(float).to_numpy())
    return scores


def from_qa_predictions(record: RunRecord) -> ExampleScores:
    """Per-question EM and F1 (the official SQuAD scoring, × 100 like the table's exact / f1)."""
    rows = read_jsonl(record.path / "predictions.jsonl")
    gold = {str(r["id"]): list(r.get("gold") or []) for r in rows}
    predictions = {str(r["id"]): str(r.get("prediction") or "") for r in rows}
    exact, f1 = raw_scores(gold, predictions)
    ids = list(gold)
    return ExampleScores("predictions.jsonl", digest([[q, gold[q]] for q in ids]),
                         digest([predictions[q] for q in ids]), len(ids),
                         {"exact": mean_statistic(np.array([100.0 * exact[q] for q in ids])),
                          "f1": mean_statistic(np.array([100.0 * f1[q] for q in ids]))})


def from_generations(record: RunRecord) -> ExampleScores:
    """SFT's generations.jsonl: the per-sentence bleu / chrf each row carries."""
    rows = read_jsonl(record.path / "generations.jsonl")
    scores = ExampleScores("generations.jsonl", digest([[r.get("prompt"), r.get("reference")] for r in rows]),
                           digest([r.get("generation") for r in rows]), len(rows))
    for metric in ("bleu", "chrf"):
        values = [r.get(metric) for r in rows]
        if rows and all(isinstance(v, int | float) for v in values):
            scores.statistics[metric] = mean_statistic(np.array(values, dtype=np.float64))
    return scores


def from_dpo_pairs(record: RunRecord) -> ExampleScores:
    """DPO's pairs.jsonl: per eval pair the loss, the implicit rewards, the margin and the win (0/1)."""
    rows = read_jsonl(record.path / "pairs.jsonl")
    scores = ExampleScores("pairs.jsonl", digest([r["row"] for r in rows]),
                           digest([round(float(r["reward_margin"]), 6) for r in rows]), len(rows))
    for metric in ("eval_loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"):
        scores.statistics[metric] = mean_statistic(np.array([r[metric] for r in rows], dtype=np.float64))
    return scores


def from_grpo_completions(record: RunRecord) -> ExampleScores:
    """GRPO's completions.jsonl: each eval prompt's greedy answer, its reward and (with an answer) right/wrong."""
    rows = read_jsonl(record.path / "completions.jsonl")
    scores = ExampleScores("completions.jsonl", digest([[r["row"], r["prompt"], r.get("answer")] for r in rows]),
                           digest([r["completion"] for r in rows]), len(rows))
    scores.statistics["eval_reward"] = mean_statistic(np.array([r["reward"] for r in rows], dtype=np.float64))
    if rows and all("correct" in r for r in rows):
        correct = np.array([bool(r["correct"]) for r in rows])
        scores.statistics["accuracy"] = mean_statistic(correct.astype(np.float64))
        scores.correct = correct
    return scores


LOADERS: dict[str, tuple[str, Callable[[RunRecord], ExampleScores]]] = {
    "dpo": ("pairs.jsonl", from_dpo_pairs),
    "grpo": ("completions.jsonl", from_grpo_completions),
    "classification": ("predictions.csv", from_predictions_csv),
    "image_classification": ("predictions.csv", from_predictions_csv),
    "qa": ("predictions.jsonl", from_qa_predictions),
    "sft": ("generations.jsonl", from_generations),
}
TASK_METRICS: dict[str, tuple[str, ...]] = {  # what each loader can score per example
    "classification": CLASSIFICATION_METRICS, "image_classification": (*CLASSIFICATION_METRICS, "eval_loss"),
    "qa": ("exact", "f1"), "sft": ("bleu", "chrf"),
    "dpo": ("eval_loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"),
    "grpo": ("eval_reward", "accuracy")}
SENTENCE_LEVEL = {"bleu", "chrf"}  # tested on the mean sentence score, not the corpus score in the table


def task_of(record: RunRecord) -> str:
    return str(record.summary.get("task") or record.config.get("task") or "")


def read_example_scores(record: RunRecord) -> ExampleScores | str:
    """The run's per-example file, read once for every metric; or a short reason why there is none."""
    task = task_of(record)
    if task not in LOADERS:
        return f"{task or 'this task'} writes no per-example scores"
    name, loader = LOADERS[task]
    if not (record.path / name).is_file():
        return f"no {name} in {record.label}"
    try:
        scores = loader(record)
    except (ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        return f"{name} of {record.label} unreadable ({error})"
    return scores if scores.n else f"{name} of {record.label} is empty"


def scores_for_metric(record: RunRecord, scores: ExampleScores | str, metric: str) -> ExampleScores | str:
    task = task_of(record)
    if metric not in TASK_METRICS.get(task, ()):
        return f"{task or 'this task'} writes no per-example {metric}"
    if isinstance(scores, str):
        return scores
    if metric not in scores.statistics:
        return f"{scores.source} of {record.label} has no per-example {metric}"
    return check_against_summary(record, metric, scores)


def check_against_summary(record: RunRecord, metric: str, scores: ExampleScores) -> ExampleScores | str:
    """A file that does not reproduce summary.json's value is from another evaluation: not used."""
    reported = record.metrics.get(metric)
    if reported is None or metric in SENTENCE_LEVEL:
        return scores
    recomputed = float(scores.statistics[metric](np.arange(scores.n)[None, :])[0])
    if not math.isclose(recomputed, reported, rel_tol=1e-3, abs_tol=1e-4):
        return (f"{scores.source} of {record.label} gives {metric} {recomputed:.4f}, "
                f"summary.json {reported:.4f}")
    return scores

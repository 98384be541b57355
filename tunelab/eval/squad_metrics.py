"""SQuAD v1.1 / v2.0 scores as the official v2.0 evaluation defines them.

Per question, with gold answer texts g_1..g_k (an empty list = unanswerable, scored against "") and a
predicted text p (an empty string = "no answer"):
    normalise(s) = whitespace-join(tokens of s lower-cased, punctuation removed, articles a/an/the removed)
    EM(p) = max_i [normalise(p) == normalise(g_i)]
    F1(p) = max_i 2·P·R / (P + R), P = |common| / |tokens(p)|, R = |common| / |tokens(g_i)|
            (common = multiset intersection of normalised tokens; if either side has no tokens,
             F1 = [both have none])
exact / f1 are 100 × means over all questions; HasAns_* and NoAns_* over the answerable and unanswerable
ones. With no-answer probabilities q (any score where larger means "more likely no answer"), a question is
answered iff q <= t; best_exact / best_f1 are the scores at the best t over the observed q (the official
`find_best_thresh`, whose starting point is "answer nothing" with t = 0.0), and best_*_thresh that t.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace (the official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_score(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(gold: str, prediction: str) -> float:
    gold_tokens, pred_tokens = answer_tokens(gold), answer_tokens(prediction)
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    common = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[str]) -> list[str]:
    """Gold answers that normalise to something; none left = unanswerable, scored against ""."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def raw_scores(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
               ) -> tuple[dict[str, int], dict[str, float]]:
    """Per-question EM and F1, max over gold answers; a question with no prediction is skipped."""
    exact, f1 = {}, {}
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        texts, prediction = gold_texts(answers), predictions[qid]
        exact[qid] = max(exact_score(a, prediction) for a in texts)
        f1[qid] = max(f1_score(a, prediction) for a in texts)
    return exact, f1


def best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                   has_answer: Mapping[str, bool]) -> tuple[float, float]:
    """(100 × best mean score, its threshold) sweeping t over the observed no-answer scores."""
    current = best = sum(1 for qid in has_answer if not has_answer[qid])
    threshold = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        else:
            current += -1 if predictions[qid] else 0
        if current > best:
            best, threshold = current, na_probs[qid]
    return 100.0 * best / len(scores), threshold


def squad_v2_metrics(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                     na_probs: Mapping[str, float] | None = None, na_prob_threshold: float = 1.0) -> dict[str, Any]:
    """The official evaluation's output dict: exact, f1, total, HasAns_*, NoAns_* and, given no-answer
    scores, best_exact(_thresh) and best_f1(_thresh). With `na_probs`, a question whose score exceeds
    `na_prob_threshold` counts as answered "" for exact/f1 (the official --na-prob-thresh)."""
    if not gold:
        return {"exact": 0.0, "f1": 0.0, "total": 0}
    has_answer = {qid: len(answers) > 0 for qid, answers in gold.items()}  # the official bool(qa["answers"])
    na = dict(na_probs) if na_probs is not None else dict.fromkeys(gold, 0.0)
    exact_raw, f1_raw = raw_scores(gold, predictions)

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        return {qid: (float(not has_answer[qid]) if na[qid] > na_prob_threshold else s) for qid, s in raw.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    qids = [q for q in gold if q in exact]

    def mean(values: dict[str, float], subset: list[str]) -> float:
        return 100.0 * sum(values[q] for q in subset) / len(subset) if subset else 0.0

    metrics: dict[str, Any] = {"exact": mean(exact, qids), "f1": mean(f1, qids), "total": len(qids)}
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        subset = [q for q in qids if has_answer[q] is wanted]
        if subset:
            metrics.update({f"{prefix}_exact": mean(exact, subset), f"{prefix}_f1": mean(f1, subset),
                            f"{prefix}_total": len(subset)})
    if na_probs is not None:
        metrics["best_exact"], metrics["best_exact_thresh"] = best_threshold(predictions, exact_raw, na, has_answer)
        metrics["best_f1"], metrics["best_f1_thresh"] = best_threshold(predictions, f1_raw, na, has_answer)
    return metrics

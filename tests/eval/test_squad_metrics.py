"""SQuAD v2 scores against hand-worked cases and against an independent implementation of the official
evaluation's published definition (normalise, token F1, max over gold answers, no-answer = "")."""

import re
import string
from collections import Counter

import pytest

from tunelab.eval.squad_metrics import exact_score, f1_score, normalize_answer, squad_v2_metrics


def reference_normalise(s):
    s = s.lower()
    s = "".join(c for c in s if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def reference_f1(gold, pred):
    g, p = reference_normalise(gold).split(), reference_normalise(pred).split()
    if not g or not p:
        return float(g == p)
    same = sum((Counter(g) & Counter(p)).values())
    if not same:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def reference_scores(dataset, preds):
    """The official script's main loop, written here from its definition."""
    em, f1, has = {}, {}, {}
    for qid, answers in dataset.items():
        has[qid] = bool(answers)
        golds = [a for a in answers if reference_normalise(a)] or [""]
        em[qid] = max(int(reference_normalise(a) == reference_normalise(preds[qid])) for a in golds)
        f1[qid] = max(reference_f1(a, preds[qid]) for a in golds)
    n = len(dataset)
    out = {"exact": 100 * sum(em.values()) / n, "f1": 100 * sum(f1.values()) / n}
    for name, flag in (("HasAns", True), ("NoAns", False)):
        ids = [q for q in dataset if has[q] == flag]
        out[f"{name}_exact"] = 100 * sum(em[q] for q in ids) / len(ids)
        out[f"{name}_f1"] = 100 * sum(f1[q] for q in ids) / len(ids)
    return out, em, f1, has


DATASET = {
    "q1": ["Denver Broncos", "the Denver Broncos"],
    "q2": ["Santa Clara, California"],
    "q3": [],  # unanswerable
    "q4": [],
    "q5": ["an apple a day", "apples"],
    "q6": ["1876"],
}
PREDICTIONS = {"q1": "The Denver Broncos!", "q2": "Santa Clara", "q3": "", "q4": "Levi's Stadium",
               "q5": "Apple.", "q6": "in 1876 AD"}


def test_hand_worked_cases():
    assert normalize_answer("  The Denver   Broncos! ") == "denver broncos"
    assert exact_score("Denver Broncos", "the denver broncos.") == 1
    assert f1_score("Santa Clara, California", "Santa Clara") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))  # 0.8
    assert f1_score("", "") == 1.0 and f1_score("", "something") == 0.0 and f1_score("a the", "") == 1.0
    metrics = squad_v2_metrics(DATASET, PREDICTIONS)
    # EM: q1 yes, q3 yes (no answer, predicted ""), others no -> 2 / 6
    assert metrics["exact"] == pytest.approx(100 * 2 / 6)
    assert metrics["NoAns_exact"] == pytest.approx(50.0) and metrics["NoAns_total"] == 2
    assert metrics["HasAns_total"] == 4
    # q5 "Apple." vs "an apple a day" -> "apple" vs "apple day": P = 1, R = 1/2 -> 2/3 (beats "apples": 0);
    # q6 "in 1876 AD" vs "1876": P = 1/3, R = 1 -> F1 = 0.5
    assert metrics["HasAns_f1"] == pytest.approx(100 * (1 + 0.8 + 2 / 3 + 0.5) / 4)


def test_equals_the_official_definition():
    expected, *_ = reference_scores(DATASET, PREDICTIONS)
    metrics = squad_v2_metrics(DATASET, PREDICTIONS)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_best_threshold_matches_a_brute_force_sweep():
    na_probs = {"q1": 0.1, "q2": 0.4, "q3": 0.9, "q4": 0.7, "q5": 0.3, "q6": 0.2}
    metrics = squad_v2_metrics(DATASET, PREDICTIONS, na_probs)
    _, em, f1, has = reference_scores(DATASET, PREDICTIONS)

    def score_at(t, raw):  # answer iff na <= t, else the "" prediction scores 1 on unanswerable questions
        return 100 * sum(raw[q] if na_probs[q] <= t else float(not has[q]) for q in DATASET) / len(DATASET)

    candidates = [0.0, *na_probs.values()]
    assert metrics["best_f1"] == pytest.approx(max(score_at(t, f1) for t in candidates))
    assert metrics["best_exact"] == pytest.approx(max(score_at(t, em) for t in candidates))
    assert score_at(metrics["best_f1_thresh"], f1) == pytest.approx(metrics["best_f1"])
    # the official rule also scores unthresholded questions above --na-prob-thresh as no-answer
    thresholded = squad_v2_metrics(DATASET, PREDICTIONS, na_probs, na_prob_threshold=0.5)
    assert thresholded["exact"] == pytest.approx(score_at(0.5, em))

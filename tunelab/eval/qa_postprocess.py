"""Start/end logits of every window -> one answer per question, and the SQuAD 2.0 no-answer threshold.

For a question with windows w, start logits s_w, end logits e_w:
    span score(w, i, j) = s_w[i] + e_w[j] over the n_best largest s_w[i] and n_best largest e_w[j] with
        i, j context tokens of w, i <= j, j - i + 1 <= max_answer_length
    best span = argmax over all windows and (i, j); its text is context[offset_w[i].start : offset_w[j].end]
    null score = min_w (s_w[0] + e_w[0])  (the [CLS] "no answer" score, lowest over windows, as in BERT's
        SQuAD 2.0 recipe)
    no-answer score q = null score - best span score
The question is answered with the best span iff q <= t, else with "" (no answer). t is tuned on the eval
split to maximise F1 (`tune_threshold`) and stored with the run, so predict applies the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunelab.data.qa_windows import QAWindows
from tunelab.eval.squad_metrics import f1_score, gold_texts

NO_SPAN = 1e9  # q when no window has a valid span: never answered


@dataclass(frozen=True)
class Answer:
    text: str  # best span text ("" when no window had a valid span)
    start: int  # character span in the context, [start, end); -1 when there is no span
    end: int
    score: float  # s[i] + e[j] of the best span
    null_score: float
    no_answer_score: float  # q = null_score - score

    def answered(self, threshold: float) -> bool:
        return self.start >= 0 and self.no_answer_score <= threshold


def best_answers(windows: QAWindows, start_logits: list[np.ndarray], end_logits: list[np.ndarray],
                 contexts: list[str], n_best: int, max_answer_length: int) -> list[Answer]:
    """The best span and the null score of each question from its windows' logits."""
    best: list[tuple[float, int, int, int] | None] = [None] * len(contexts)  # (score, window, i, j)
    null = np.full(len(contexts), np.inf)
    for w, (s, e) in enumerate(zip(start_logits, end_logits, strict=True)):
        q = int(windows.example[w])
        null[q] = min(null[q], float(s[0] + e[0]))
        valid = windows.offsets[w][:, 0] >= 0
        starts = [i for i in np.argsort(-s, kind="stable")[:n_best] if valid[i]]
        ends = [j for j in np.argsort(-e, kind="stable")[:n_best] if valid[j]]
        for i in starts:
            for j in ends:
                if j < i or j - i + 1 > max_answer_length:
                    continue
                score = float(s[i] + e[j])
                if best[q] is None or score > best[q][0]:
                    best[q] = (score, w, int(i), int(j))
    answers = []
    for q, context in enumerate(contexts):
        if best[q] is None:
            answers.append(Answer("", -1, -1, float("-inf"), float(null[q]), NO_SPAN))
            continue
        score, w, i, j = best[q]
        char_start, char_end = int(windows.offsets[w][i, 0]), int(windows.offsets[w][j, 1])
        answers.append(Answer(context[char_start:char_end], char_start, char_end, score, float(null[q]),
                              float(null[q]) - score))
    return answers


def tune_threshold(answers: list[Answer], gold: list[list[str]]) -> float:
    """The t maximising mean F1 when answering iff q <= t: start from "answer nothing" (t below every q),
    then admit questions in increasing q; an answerable question adds its F1, an unanswerable one loses 1."""
    order = np.argsort([a.no_answer_score for a in answers], kind="stable")
    answerable = [bool(g) for g in gold]
    current = best = float(sum(not has for has in answerable))
    threshold = min((a.no_answer_score for a in answers), default=0.0) - 1.0
    for q in order:
        answer = answers[q]
        if answer.start < 0:
            continue
        if answerable[q]:
            current += max(f1_score(g, answer.text) for g in gold_texts(gold[q]))
        else:
            current -= 1.0
        if current > best:
            best, threshold = current, answer.no_answer_score
    return float(threshold)

"""BLEU / chrF are sacrebleu's own numbers; refusal phrases and rates on known strings."""

from __future__ import annotations

import pytest
import sacrebleu

from tunelab.eval.text_metrics import REFUSAL_PHRASES, is_refusal, overlap_scores, refusal_rates

HYPS = ["The cat sat on the mat.", "El conocimiento es poder.", "Rainbows form when light bends in rain.",
        "no reference here"]
REFS = ["The cat is sitting on the mat.", "El conocimiento es poder.",
        "Rainbows form when sunlight enters water droplets and refracts.", None]


def test_corpus_and_sentence_scores_equal_sacrebleu() -> None:
    scores = overlap_scores(HYPS, REFS)
    hyps, refs = HYPS[:3], [REFS[:3]]
    assert scores.corpus_bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score)
    assert scores.corpus_chrf == pytest.approx(sacrebleu.corpus_chrf(hyps, refs).score)
    for i in range(3):
        assert scores.bleu[i] == pytest.approx(sacrebleu.sentence_bleu(HYPS[i], [REFS[i]]).score)
        assert scores.chrf[i] == pytest.approx(sacrebleu.sentence_chrf(HYPS[i], [REFS[i]]).score)
    assert scores.bleu[1] == pytest.approx(100.0) and scores.bleu[3] is None and scores.chrf[3] is None


def test_no_references_at_all() -> None:
    scores = overlap_scores(["a"], [None])
    assert scores.corpus_bleu is None and scores.corpus_chrf is None


@pytest.mark.parametrize("text,refused", [
    ("I'm sorry, but I can't help with that request.", True),
    ("I\u2019M SORRY, I cannot do that.", True),  # curly apostrophe, upper case
    ("As an AI language model, I must decline.", True),
    ("I won't provide instructions for that.", True),
    ("Rainbows form when sunlight refracts in water droplets.", False),
    ("El conocimiento es poder.", False),
    ("Once upon a time two farmers quarrelled over a stream. " * 5 + "'I can't believe it,' he said.", False),
])
def test_is_refusal(text: str, refused: bool) -> None:
    assert is_refusal(text) is refused


def test_window_none_searches_the_whole_text() -> None:
    late = "A long story. " * 20 + "I cannot go on."
    assert not is_refusal(late) and is_refusal(late, window=None)
    assert all(p == p.lower() for p in REFUSAL_PHRASES)


def test_refusal_and_over_refusal_rates() -> None:
    refused = [True, False, True, False, True]
    should = [True, True, False, False, False]
    assert refusal_rates(refused, should) == (0.5, pytest.approx(2 / 3))
    assert refusal_rates([True], [False]) == (None, 1.0)
    assert refusal_rates([False], [True]) == (0.0, None)

"""The one list of task-head module names: the new, randomly initialised layers a task puts on a base.

Used by the runner (heads stay trainable next to adapters), the budget report (head vs adapter
parameters) and the optimizer (a head may get its own learning rate), so the three always agree.
"""

from __future__ import annotations

import re

#: classifier / pre_classifier (BERT, DistilBERT), score (causal-LM sequence classifiers), qa_outputs
#: (extractive QA). The LM head is not among them: it is pretrained, usually tied to the embeddings.
HEAD_MODULES = ("classifier", "pre_classifier", "score", "qa_outputs")
HEAD_PATTERNS = [rf"(^|\.){name}(\.|$)" for name in HEAD_MODULES]
_ANY_HEAD = re.compile(r"(^|\.)(" + "|".join(HEAD_MODULES) + r")(\.|$)")


def is_head_parameter(name: str) -> bool:
    """True for parameters inside a task head, e.g. `classifier.weight`, `bert.pooler...` is not."""
    return bool(_ANY_HEAD.search(name))


def head_patterns_in(names: list[str]) -> list[str]:
    """The head patterns that match at least one of `names` (what a given model actually has)."""
    return [p for p in HEAD_PATTERNS if any(re.search(p, name) for name in names)]

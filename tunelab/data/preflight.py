"""Pre-flight: what the model will actually be trained on, checked before the first step.

Printed (compactly) at the start of every run and in full by `tunelab check RECIPE`: the first example
with the tokens that carry a loss highlighted, the label balance, a length histogram with the share
truncated at model.max_length, eval rows that also occur in training, and what packing relies on.
Problems are warnings (printed, the run goes on) or errors (the run stops with one line) — e.g. no
trained token in any example, which would train nothing while printing a loss of 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.markup import escape

from tunelab.errors import TunelabError
from tunelab.progress import console

BARS = " ▁▂▃▄▅▆▇█"


@dataclass
class Preflight:
    title: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, heading: str, lines: list[str]) -> None:
        self.sections.append((heading, lines))

    def warn_bad_rows(self, bad: dict[str, Any], what: str = "bad rows") -> None:
        """One warning per split that had bad rows (`tunelab.data.bad_rows.BadRows`), counts and first rows."""
        for split, rows in bad.items():
            if rows.total:
                self.warnings.append(f"{split}: {rows.total} {what} skipped: {rows.describe()}")

    def print(self, full: bool = True, out: Any = None) -> None:
        """Everything (tunelab check, on stdout), or at the start of a run just the first example and the
        problems (on the log console)."""
        out = out or console
        out.print(f"[bold]pre-flight: {self.title}[/]")
        for heading, lines in self.sections if full else self.sections[:1]:
            out.print(f"  [bold]{heading}[/]")
            for line in lines:
                out.print(f"    {line}")
        for warning in self.warnings:
            out.print(f"  [yellow]warning: {escape(warning)}[/]")

    def raise_errors(self) -> None:
        if self.errors:
            raise TunelabError(f"pre-flight: {self.errors[0]}")


def length_lines(lengths: np.ndarray, max_length: int, what: str = "tokens",
                 cap: str = "model.max_length") -> tuple[list[str], float]:
    """A one-line histogram of lengths (10 bins up to max_length), quantiles, and the share at the cap
    (tokenisation cut them there, so they are truncated); returns (lines, truncated share)."""
    if len(lengths) == 0:
        return ["no examples"], 0.0
    counts, _ = np.histogram(np.minimum(lengths, max_length), bins=10, range=(0, max_length))
    scale = counts.max() or 1
    bars = "".join(BARS[int(round(c / scale * (len(BARS) - 1)))] for c in counts)
    truncated = float(np.mean(lengths >= max_length))
    q = np.percentile(lengths, [50, 95])
    return [f"|{bars}| 0 … {max_length} {what}",
            f"median {q[0]:.0f}, p95 {q[1]:.0f}, max {lengths.max()}; {truncated:.1%} at the cap "
            f"({cap} = {max_length})"], truncated


def balance_lines(train: Sequence[Any], evaluation: Sequence[Any], names: Sequence[str] | None = None,
                  ) -> tuple[list[str], list[str]]:
    """Class counts per split and warnings (a class missing from a split, a majority above 80%)."""
    label = (lambda v: names[int(v)]) if names else str
    tr, ev = Counter(map(label, train)), Counter(map(label, evaluation))
    classes = sorted(set(tr) | set(ev), key=str)
    lines = [f"{c}: train {tr.get(c, 0)} ({tr.get(c, 0) / max(1, len(train)):.0%}), eval {ev.get(c, 0)}"
             for c in classes]
    warnings = [f"class {c!r} has no eval rows" for c in classes if not ev.get(c)]
    warnings += [f"class {c!r} has no training rows" for c in classes if not tr.get(c)]
    top, count = tr.most_common(1)[0] if tr else ("", 0)
    if len(train) and count / len(train) > 0.8:
        warnings.append(f"class {top!r} is {count / len(train):.0%} of the training rows: accuracy alone will "
                        "look good; watch macro-F1 and MCC")
    return lines, warnings


def overlap_warning(train: Sequence[Hashable], evaluation: Sequence[Hashable]) -> str | None:
    """Eval rows (texts, token ids as bytes) that also occur in training."""
    seen = set(train)
    shared = sum(1 for text in evaluation if text in seen)
    if shared:
        return (f"{shared} of {len(evaluation)} eval rows ({shared / max(1, len(evaluation)):.0%}) also occur in "
                "the training data: eval figures overstate generalisation")
    return None


def highlighted(tokenizer: Any, ids: Sequence[int], trained: Sequence[bool], limit: int = 400) -> str:
    """The example's tokens, the ones with a loss in bold green, the rest dim; long examples are cut."""
    parts, before = [], ""
    ids = [int(t) for t in ids]
    for i, on in enumerate(trained[:limit]):
        text = tokenizer.decode(ids[:i + 1])  # prefix differences keep word-piece and byte-level spacing right
        piece, before = escape(text[len(before):]), text
        parts.append(f"[bold green]{piece}[/]" if on else f"[dim]{piece}[/]")
    return "".join(parts) + (" [dim]…[/]" if len(ids) > limit else "")

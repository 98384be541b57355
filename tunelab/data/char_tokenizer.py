"""Character- and byte-level tokenizers for from-scratch language models, built from the training text.

`chars`: the sorted set of characters in the training text (nanoGPT's shakespeare_char: 65 symbols);
a character unseen in training is an error naming it, not a silent <unk>. `bytes`: the 256 byte values
of the UTF-8 encoding, which covers any text. Both save to and load from a small JSON dict, stored with
the artifact so a reloaded model decodes exactly as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class CharTokenizer:
    kind: str  # "chars" | "bytes"
    symbols: str = ""  # the vocabulary in id order (chars only)

    @classmethod
    def from_text(cls, text: str, kind: str = "chars") -> CharTokenizer:
        if kind == "bytes":
            return cls("bytes")
        if kind != "chars":
            raise TunelabError(f"tokenizer kind {kind!r}: choose chars or bytes")
        return cls("chars", "".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return 256 if self.kind == "bytes" else len(self.symbols)

    def encode(self, text: str) -> np.ndarray:
        if self.kind == "bytes":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        lookup = {ch: i for i, ch in enumerate(self.symbols)}
        try:
            return np.fromiter((lookup[ch] for ch in text), dtype=np.int64, count=len(text))
        except KeyError as err:
            raise TunelabError(f"character {err.args[0]!r} is not in the tokenizer's vocabulary "
                               "(built from the training text)") from None

    def decode(self, ids: Any) -> str:
        values = [int(i) for i in ids]
        if self.kind == "bytes":
            return bytes(values).decode("utf-8", errors="replace")
        return "".join(self.symbols[i] for i in values)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "symbols": self.symbols}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["kind"], data.get("symbols", ""))

"""Code that ships with a model runs only when the recipe says so.

A model folder or hub repo can name its own Python classes in `config.json` / `tokenizer_config.json`
(`auto_map`); loading it then imports that code, which can do anything the user can. transformers asks
for `trust_remote_code=True` first, but given nothing (None) it prompts on a terminal. tunelab always
passes an explicit value, `model.trust_remote_code` (default false), and turns the refusal into one line
naming that key. Every `from_pretrained` of a model or tokenizer goes through `from_pretrained` below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

REFUSAL = "trust_remote_code=True"  # transformers' refusal asks the caller to pass this


def from_pretrained(auto_class: Any, path: Path | str, trust_remote_code: bool, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained(path, trust_remote_code=..., **kwargs)`; a refusal to run the folder's
    own code is one TunelabError naming `model.trust_remote_code`."""
    try:
        return auto_class.from_pretrained(str(path), trust_remote_code=bool(trust_remote_code), **kwargs)
    except ValueError as error:
        if REFUSAL not in str(error):
            raise
        raise TunelabError(
            f"model.trust_remote_code: {path} ships its own Python code (auto_map in its config), which tunelab "
            "does not run unless the recipe sets model.trust_remote_code: true; read that code first") from None

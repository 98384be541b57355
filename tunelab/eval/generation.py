"""Batched text generation for chat prompts, through Hugging Face `model.generate` (KV cache included).

Algorithm:
1. every prompt is chat-formatted (`format_prompt`: the tokenizer's template, else the fallback in
   `chat_format`) and tokenized;
2. prompts are sorted by length and cut into batches of `batch_size`, so rows of one batch need little
   padding; each batch is LEFT-padded — a decoder-only model continues from the last position of every
   row, so all rows must end at the same column (the attention mask hides the pads and `generate`
   derives position ids from it, so a padded row yields the same tokens as the row alone);
3. `generate` runs greedy (temperature 0) or nucleus sampling (temperature, top_p) for at most
   `max_new_tokens` and stops a row at any stop id: the tokenizer's eos plus the generation config's
   eos ids (chat models often end a turn with a token other than eos, e.g. Llama-3's <|eot_id|>);
4. each row's new tokens are cut before the first stop id and decoded without special tokens.

With `chat=False` (code completion) step 1 tokenizes the raw prompt with the tokenizer's usual specials
and no template, and step 4 keeps the text exactly, leading indentation included: it is the text the
prompt + continuation decodes to, minus the text the prompt alone decodes to. `stop` strings end a row
inside `generate` (`StopOnText`) and the text is cut before the first of them.

Only the settings below steer decoding: repetition penalties, top-k or beams that a model's own
generation_config may carry are switched off, so base, SFT and DPO checkpoints of one family are
compared under identical rules.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.errors import TunelabError
from tunelab.eval.chat_format import chat_text, encode_text, prompt_messages
from tunelab.train.batching import pad_batch


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding rules; `batch_size` also batches the perplexity pass of `tunelab eval`."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0  # sampling only: the same seed and batch layout give the same samples
    system: str | None = None  # optional system message for every prompt
    chat: bool = True  # False: continue the raw prompt (a base model completing code), no chat template
    stop: tuple[str, ...] = ()  # the text is cut before the first of these; generation stops at them

    def __post_init__(self) -> None:
        checks = [("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
                  ("temperature", self.temperature >= 0, "must be >= 0 (0 = greedy)"),
                  ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
                  ("batch_size", self.batch_size >= 1, "must be >= 1")]
        for name, ok, rule in checks:
            if not ok:
                raise TunelabError(f"generation setting {name}={getattr(self, name)!r} {rule}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class GenerationOutput:
    """Texts in prompt order, plus what throughput needs: tokens generated per prompt (up to and
    including the stop token) and the wall time spent inside `generate`."""

    texts: list[str]
    new_tokens: list[int]
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


def format_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The text a chat model sees for one user prompt, ending where the assistant's answer begins."""
    return chat_text(tokenizer, prompt_messages(prompt, system), add_generation_prompt=True)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's eos id plus every eos id of the model's generation config, deduplicated."""
    ids: list[int] = []
    candidates: list[Any] = [getattr(tokenizer, "eos_token_id", None)]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates += config_eos if isinstance(config_eos, list) else [config_eos]
    for token_id in candidates:
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    return ids


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), with every row right-aligned."""
    return pad_batch(sequences, pad_id, left=True)


def generate(model: Any, tokenizer: Any, prompts: list[str], settings: GenerationSettings) -> list[str]:
    """Answers to `prompts`, in order (see the module docstring for the algorithm)."""
    return generate_with_stats(model, tokenizer, prompts, settings).texts


def encode_prompt(tokenizer: Any, prompt: str, settings: GenerationSettings) -> list[int]:
    """Token ids of one prompt: chat-formatted (`encode_text`), or the raw text with the tokenizer's usual
    specials, less a trailing EOS that would tell the model the text is over before it continues."""
    if settings.chat:
        return encode_text(tokenizer, format_prompt(tokenizer, prompt, settings.system))
    ids = list(tokenizer(prompt)["input_ids"])
    eos = getattr(tokenizer, "eos_token_id", None)
    added_eos = eos is not None and len(ids) > 1 and ids[-1] == eos and not prompt.endswith(str(tokenizer.eos_token))
    return ids[:-1] if added_eos else ids


def decode_new(tokenizer: Any, prompt_ids: list[int], new_ids: list[int], settings: GenerationSettings) -> str:
    """The generated text: stripped for chat answers; for raw continuations the exact suffix (a tokenizer
    may drop a leading space or newline when new tokens are decoded alone), cut at the first stop string."""
    if settings.chat:
        return cut_at_stop_string(tokenizer.decode(new_ids, skip_special_tokens=True).strip(), settings.stop)
    prefix = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    whole = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    text = whole[len(prefix):] if whole.startswith(prefix) else tokenizer.decode(new_ids, skip_special_tokens=True)
    return cut_at_stop_string(text, settings.stop)


def cut_at_stop_string(text: str, stops: tuple[str, ...]) -> str:
    """`text` before the earliest occurrence of any stop string."""
    cut = min((position for stop in stops if stop and (position := text.find(stop)) >= 0), default=len(text))
    return text[:cut]


def generate_with_stats(model: Any, tokenizer: Any, prompts: list[str],
                        settings: GenerationSettings) -> GenerationOutput:
    encoded = [encode_prompt(tokenizer, p, settings) for p in prompts]
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    texts, counts = [""] * len(prompts), [0] * len(prompts)
    seconds = 0.0
    with _seeded(settings.seed, _device(model)):
        for start in range(0, len(order), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            began = time.perf_counter()
            new = _generate_batch(model, tokenizer, [encoded[i] for i in rows], settings, stops, pad_id)
            seconds += time.perf_counter() - began
            for i, tokens in zip(rows, new, strict=True):
                kept, counts[i] = cut_at_stop(tokens, stops)
                texts[i] = decode_new(tokenizer, encoded[i], kept, settings)
    return GenerationOutput(texts, counts, seconds)


def cut_at_stop(tokens: list[int], stops: list[int]) -> tuple[list[int], int]:
    """(tokens before the first stop id, tokens generated including that stop id). Rows that finish
    early are padded by `generate`; the cut drops those pads too."""
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position], position + 1
    return tokens, len(tokens)


@torch.no_grad()
def _generate_batch(model: Any, tokenizer: Any, sequences: list[list[int]], settings: GenerationSettings,
                    stops: list[int], pad_id: int) -> list[list[int]]:
    from transformers import GenerationConfig

    if any(not seq for seq in sequences):
        raise TunelabError("a prompt tokenized to zero tokens; the model needs at least one to continue from")
    ids, mask = left_pad(sequences, pad_id)
    device = _device(model)
    sampling = {} if settings.greedy else {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=not settings.greedy, num_beams=1,
        repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=stops or None, pad_token_id=pad_id,
        use_cache=True, **sampling)
    criteria = [StopOnText(tokenizer, settings.stop, ids.shape[1])] if settings.stop else None
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                         stopping_criteria=criteria)
    return out[:, ids.shape[1]:].tolist()  # (B, new) — generate returns prompt + continuation


class StopOnText:
    """A `generate` stopping criterion: a row is done once its recent new tokens decode to text holding
    a stop string. Decoding the last `window` tokens keeps the check cheap; a stop string is a few
    tokens long, so it is always inside the window on the step it completes. (transformers' own
    `stop_strings` needs a byte-level vocabulary and fails on word-level tokenizers.)"""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_length: int, window: int = 16) -> None:
        self.tokenizer, self.stops, self.prompt_length, self.window = tokenizer, stops, prompt_length, window

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:].tolist(), skip_special_tokens=True)
        done = [any(stop in tail for stop in self.stops) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for sampling without disturbing the caller's RNG state afterwards."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield

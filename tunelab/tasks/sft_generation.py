"""End-of-run generations for SFT: greedy answers to the first N eval prompts, scored against the
reference answers with BLEU and chrF, written to generations.jsonl for the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.config import EvalConfig
from tunelab.eval.generation import GenerationSettings, generate_with_stats
from tunelab.eval.text_metrics import overlap_scores
from tunelab.rundir import atomic_write_text


def generate_eval_samples(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], cfg: EvalConfig,
                          out_dir: Path) -> dict[str, float]:
    samples = [c for c in conversations if c and c[-1]["role"] == "assistant"][: cfg.generate]
    prompts = [next(m["content"] for m in reversed(c[:-1]) if m["role"] == "user") for c in samples]
    system = next((m["content"] for m in samples[0] if m["role"] == "system"), None) if samples else None
    references = [c[-1]["content"] for c in samples]
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, batch_size=min(8, cfg.batch_size), system=system)
    output = generate_with_stats(model, tokenizer, prompts, settings)
    scores = overlap_scores(output.texts, references)
    lines = [json.dumps({"prompt": p, "generation": g, "reference": r, "bleu": b, "chrf": c}, ensure_ascii=False)
             for p, g, r, b, c in zip(prompts, output.texts, references, scores.bleu, scores.chrf, strict=True)]
    atomic_write_text(out_dir / "generations.jsonl", "\n".join(lines) + "\n")
    return {"bleu": scores.corpus_bleu or 0.0, "chrf": scores.corpus_chrf or 0.0,
            "generation_tokens_per_s": output.tokens_per_s}

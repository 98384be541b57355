"""End-of-run code evaluation for SFT: pass@1 of the base and the fine-tuned model on code problems.

With `eval.code: humaneval` (or a JSONL problem file) the final evaluation of an SFT run asks each
problem in chat mode (tunelab.eval.code_eval: the instruction, the signature and docstring in a fence),
greedily, runs each reply's code against the problem's tests in the sandbox and reports pass@1 (with
n = 1 greedy sample, pass@1 is the share of problems solved). The base is the same model with its
adapters switched off (tunelab.adapters.switch.disabled: no second copy), so the two figures differ
only by what fine-tuning changed. A full fine-tune has no adapters to switch off; its base figure is
then left out (evaluate the base once with `tunelab eval humaneval --chat`).

Files: code_eval/base/ and code_eval/tuned/ in the run folder, each with results.jsonl + summary.json
as `tunelab eval humaneval` writes them; the report's "Code evaluation" section reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.adapters.inject import adapter_modules
from tunelab.adapters.switch import disabled
from tunelab.config import EvalConfig
from tunelab.eval.code_eval import score_model, write_code_results
from tunelab.eval.code_problems import load_problems
from tunelab.eval.generation import GenerationSettings
from tunelab.progress import console

CODE_EVAL_DIR = "code_eval"


def code_eval_metrics(model: Any, tokenizer: Any, cfg: EvalConfig, out_dir: Path) -> dict[str, float]:
    """pass@1 of the tuned model (and `base_pass@1`, `pass@1_change` when the base can be switched on)."""
    problems = load_problems(cfg.code, cfg.code_limit)
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, batch_size=min(8, cfg.batch_size))
    scored = {}
    labels = ["base", "tuned"] if cfg.code_base and adapter_modules(model) else ["tuned"]
    for label in labels:
        console.print(f"code evaluation ({label}): {len(problems)} problems from {cfg.code}, chat mode, greedy")
        if label == "base":
            with disabled(model):
                summary = score_model(model, tokenizer, problems, settings, ks=(1,), chat=True)
        else:
            summary = score_model(model, tokenizer, problems, settings, ks=(1,), chat=True)
        summary["problem_file"] = str(cfg.code)
        write_code_results(Path(out_dir) / CODE_EVAL_DIR / label, summary.pop("rows"), summary)
        scored[label] = summary["pass_at_k"]["pass@1"]
    metrics = {"pass@1": scored["tuned"]}
    if "base" in scored:
        metrics.update({"base_pass@1": scored["base"], "pass@1_change": scored["tuned"] - scored["base"]})
    return metrics

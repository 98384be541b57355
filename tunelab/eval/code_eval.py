"""Functional correctness of generated code: sample completions, run their tests in the sandbox, pass@k.

For one model spec and a problem file (`code_problems`):
1. generate `n` completions per problem: the raw prompt is continued (no chat template, what a base
   model was trained on), greedy for n = 1, sampled at the given temperature otherwise, each cut
   before the first stop string (`HUMANEVAL_STOPS`: a new top-level def/class/if/print/#/assert);
2. run every completion's test program in the sandbox (`sandbox.run_programs`, one process per
   program, as many at a time as there are cores) and record its kind: passed, syntax_error,
   wrong_answer, timeout, memory or crash;
3. per problem, with c of its n samples passing, the unbiased pass@k estimator of Chen et al. 2021
   ("Evaluating Large Language Models Trained on Code", eq. 1); the reported pass@k is its mean over
   problems; k above n is skipped (the estimator needs n >= k).
Then write, atomically, into the output folder:
    results.jsonl   one row per problem: task_id, n, passed (c), pass@k, and each sample's completion,
                    kind and message
    summary.json    pass@k, counts of each kind over all samples, settings, sandbox limits and the
                    isolation layers in force, model (spec, base, fingerprint), git SHA, libraries
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.eval.code_problems import HUMANEVAL_STOPS, CodeProblem, load_problems, program_for
from tunelab.eval.generation import GenerationSettings
from tunelab.eval.sandbox import KINDS, SandboxLimits, SandboxResult, isolation_layers, run_programs
from tunelab.rundir import atomic_write_json, atomic_write_text, git_sha, library_versions


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c pass (Chen et al. 2021, eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i)

    The product form never builds the binomials, which overflow floats for n in the hundreds; when
    n - c < k every k-subset holds a passing sample and the value is exactly 1.
    """
    if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs n >= 1, 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def score_completions(problems: list[CodeProblem], completions: list[list[str]], ks: tuple[int, ...],
                      limits: SandboxLimits | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """One results row per problem; `completions[i]` are problem i's samples (all problems the same n)."""
    programs = [program_for(problem, text) for problem, texts in zip(problems, completions, strict=True)
                for text in texts]
    verdicts = iter(run_programs(programs, limits, workers))
    rows = []
    for problem, texts in zip(problems, completions, strict=True):
        samples = [_sample(text, next(verdicts)) for text in texts]
        n, c = len(samples), sum(sample["kind"] == "passed" for sample in samples)
        rows.append({"task_id": problem.task_id, "n": n, "passed": c,
                     **{f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n}, "samples": samples})
    return rows


def _sample(completion: str, result: SandboxResult) -> dict[str, Any]:
    return {"completion": completion, "kind": result.kind, "message": result.message,
            "seconds": round(result.seconds, 3)}


def summarise(rows: list[dict[str, Any]], ks: tuple[int, ...]) -> dict[str, Any]:
    """Mean pass@k over problems and the count of each kind over all samples."""
    n = rows[0]["n"] if rows else 0
    kinds = Counter(sample["kind"] for row in rows for sample in row["samples"])
    return {"num_problems": len(rows), "n": n, "num_samples": sum(row["n"] for row in rows),
            "num_passed_samples": kinds["passed"],
            "pass_at_k": {f"pass@{k}": float(np.mean([row[f"pass@{k}"] for row in rows])) for k in ks if k <= n},
            "k_skipped": [k for k in ks if k > n], "kinds": {kind: kinds[kind] for kind in KINDS}}


def write_code_results(out_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    atomic_write_text(out_dir / "results.jsonl", "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "summary.json", summary)


CHAT_INSTRUCTION = "Complete this Python function. Reply with the whole function in one ```python block.\n\n"


def chat_request(problem: CodeProblem) -> str:
    """What a chat model is asked: the instruction, then the problem's signature and docstring."""
    return f"{CHAT_INSTRUCTION}```python\n{problem.prompt}```"


def chat_continuation(problem: CodeProblem, reply: str) -> str:
    """The text that, after the problem's prompt, makes the program: the reply's code (its first fenced
    block, else the reply) as a new top-level definition when it defines the entry point (it replaces the
    docstring-only one of the prompt, whose imports stay), else as the body the prompt is waiting for."""
    from tunelab.rewards.code import defines, extract_code

    code = extract_code(reply)
    return "\n" + code if defines(code, problem.entry_point) else code


def evaluate_code_model(problem_file: Path | str, model_spec: str, out_dir: Path | str,
                        settings: GenerationSettings, *, n: int = 1, ks: tuple[int, ...] = (1, 10),
                        limits: SandboxLimits | None = None, limit: int | None = None,
                        workers: int | None = None, chat: bool = False) -> dict[str, Any]:
    """Generate, test and score one model on a problem file; write results.jsonl + summary.json; return
    the summary. `chat`: ask through the chat template (`chat_request`) and test the code of each reply
    (`chat_continuation`) — how instruction-tuned models are meant to be used — instead of letting the
    model continue the raw prompt."""
    from tunelab.eval.model_specs import load_spec, parse_specs, pick_device_dtype, resolve_spec
    from tunelab.eval.suite import spec_record
    from tunelab.progress import console

    if n > 1 and settings.greedy:
        raise TunelabError(f"--n {n} samples per problem need --temperature > 0 (greedy samples are all the same)")
    problems = load_problems(problem_file, limit)
    spec = parse_specs([model_spec])[0]
    resolved = resolve_spec(spec)
    device, dtype = pick_device_dtype()
    console.print(f"[bold]{spec.label}[/]: {len(problems)} problems x {n} samples on {device}")
    model, tokenizer = load_spec(spec, resolved, device, dtype)
    summary = score_model(model, tokenizer, problems, settings, n=n, ks=ks, limits=limits, workers=workers,
                          chat=chat)
    del model
    summary.update({"problem_file": str(problem_file), "model": spec_record(spec, resolved), "device": str(device),
                    "dtype": str(dtype).removeprefix("torch."), "out_dir": str(out_dir)})
    write_code_results(Path(out_dir), summary.pop("rows"), summary)
    return summary


def score_model(model: Any, tokenizer: Any, problems: list[CodeProblem], settings: GenerationSettings, *,
                n: int = 1, ks: tuple[int, ...] = (1, 10), limits: SandboxLimits | None = None,
                workers: int | None = None, chat: bool = False) -> dict[str, Any]:
    """Generate with a loaded model, test in the sandbox and score: the summary, with its per-problem
    `rows` under "rows" (what `write_code_results` writes to results.jsonl)."""
    from tunelab.eval.generation import generate_with_stats

    limits = limits or SandboxLimits()
    settings = (dataclasses.replace(settings, chat=True, stop=()) if chat else
                dataclasses.replace(settings, chat=False, stop=settings.stop or HUMANEVAL_STOPS))
    requests = [chat_request(p) if chat else p.prompt for p in problems for _ in range(n)]
    generated = generate_with_stats(model, tokenizer, requests, settings)
    completions = [generated.texts[i * n:(i + 1) * n] for i in range(len(problems))]
    if chat:
        completions = [[chat_continuation(p, reply) for reply in replies]
                       for p, replies in zip(problems, completions, strict=True)]
    began = time.monotonic()
    rows = score_completions(problems, completions, ks, limits, workers)
    return {**summarise(rows, ks), "chat": chat, "settings": dataclasses.asdict(settings),
            "sandbox": dataclasses.asdict(limits), "isolation": isolation_layers(limits),
            "generated_tokens": sum(generated.new_tokens), "generation_seconds": generated.seconds,
            "sandbox_seconds": time.monotonic() - began,
            "created": dt.datetime.now().isoformat(timespec="seconds"), "git_sha": git_sha(),
            "libraries": library_versions(), "rows": rows}

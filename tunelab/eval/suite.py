"""`tunelab eval`: judge one or more chat models on a fixed prompt set, side by side.

For every model spec (see `model_specs`), in order, one model in memory at a time:
1. generate an answer to every prompt (`generation`: batched, chat-formatted, greedy by default);
2. score the reference answers' perplexity given the prompt (`perplexity`);
3. BLEU / chrF of the generation against the reference, refusal detection (`text_metrics`).
Then write, atomically, into the output folder:
    summary.{md,csv}             one row per model: mean / corpus PPL, BLEU, chrF, refusal and
                                 over-refusal rates, generation tokens/s
    per_prompt.{md,csv,html}     one row per prompt, five columns per model (the HTML has both tables)
    <label>/generations.jsonl    {id, prompt, generation, reference, refusal} per prompt
    eval_summary.json            settings, prompt file, models (spec, base, adapter, fingerprint), metrics

Prompt files are JSONL, one object per line: `prompt` (required), `reference` (optional text),
`refusal` (optional bool: the model should refuse this prompt), `id` (optional; default the row number).
A bare name picks a packaged set from data/vendored/prompts (`seed000`, `seed001_sft`, `seed001_dpo`).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunelab.data.json_rows import json_row
from tunelab.errors import TunelabError
from tunelab.eval.eval_report import write_tables
from tunelab.eval.generation import GenerationOutput, GenerationSettings, generate_with_stats
from tunelab.eval.model_specs import ModelSpec, load_spec, parse_specs, pick_device_dtype, resolve_spec
from tunelab.eval.perplexity import PerplexityResult, reference_perplexity
from tunelab.eval.text_metrics import OverlapScores, is_refusal, overlap_scores, refusal_rates
from tunelab.rundir import atomic_write_json, atomic_write_text, git_sha, library_versions


@dataclass(frozen=True)
class PromptRow:
    id: str
    prompt: str
    reference: str | None = None
    refusal: bool = False


PROMPT_SETS = Path(__file__).resolve().parent.parent / "data" / "vendored" / "prompts"


def prompt_file_path(name: Path | str) -> Path:
    """A path as given, else a packaged prompt set by name: `seed001_dpo` → .../prompts/seed001_dpo_prompts.jsonl."""
    path = Path(name)
    if path.is_file() or path.parent != Path("."):
        return path
    for candidate in (path.name, f"{path.name}.jsonl", f"{path.name}_prompts.jsonl"):
        if (PROMPT_SETS / candidate).is_file():
            return PROMPT_SETS / candidate
    return path


def packaged_prompt_sets() -> list[str]:
    return sorted(p.name.removesuffix("_prompts.jsonl") for p in PROMPT_SETS.glob("*_prompts.jsonl"))


def load_prompts(path: Path | str, limit: int | None = None) -> list[PromptRow]:
    """Read a prompt JSONL file (or a packaged set by name); a bad row stops with one line naming the file
    and line number."""
    path = prompt_file_path(path)
    if not path.is_file():
        raise TunelabError(f"prompt file not found: {path} (packaged sets: {', '.join(packaged_prompt_sets())})")
    rows: list[PromptRow] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            rows.append(_prompt_row(json_row(path, number, line), path, number, len(rows) + 1))
    if not rows:
        raise TunelabError(f"{path}: no prompts (expected JSONL rows like {{\"prompt\": \"...\"}})")
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise TunelabError(f"{path}: id {duplicate!r} appears more than once")
    return rows[:limit] if limit else rows


def _prompt_row(row: dict[str, Any], path: Path, number: int, index: int) -> PromptRow:
    where = f"{path}:{number}"
    prompt, reference, refusal = row.get("prompt"), row.get("reference"), row.get("refusal", False)
    if not isinstance(prompt, str) or not prompt.strip():
        raise TunelabError(f"{where}: row has no 'prompt' (a non-empty string is required)")
    if reference is not None and not isinstance(reference, str):
        raise TunelabError(f"{where}: 'reference' must be a string")
    if not isinstance(refusal, bool):
        raise TunelabError(f"{where}: 'refusal' must be true or false")
    return PromptRow(str(row.get("id", index)), prompt, reference or None, refusal)


@dataclass(frozen=True)
class ModelResult:
    generations: GenerationOutput
    perplexity: PerplexityResult
    overlap: OverlapScores
    refused: list[bool]


def evaluate_model(model: Any, tokenizer: Any, rows: list[PromptRow], settings: GenerationSettings) -> ModelResult:
    """Generations, reference perplexities, overlap scores and refusals for one loaded model."""
    prompts, references = [r.prompt for r in rows], [r.reference for r in rows]
    generations = generate_with_stats(model, tokenizer, prompts, settings)
    perplexity = reference_perplexity(model, tokenizer, prompts, references, batch_size=settings.batch_size,
                                      system=settings.system)
    overlap = overlap_scores(generations.texts, references)
    return ModelResult(generations, perplexity, overlap, [is_refusal(text) for text in generations.texts])


def model_metrics(result: ModelResult, rows: list[PromptRow]) -> dict[str, Any]:
    refusal_rate, over_refusal_rate = refusal_rates(result.refused, [r.refusal for r in rows])
    return {
        "mean_ppl": result.perplexity.mean_ppl, "corpus_ppl": result.perplexity.corpus_ppl,
        "bleu": result.overlap.corpus_bleu, "chrf": result.overlap.corpus_chrf,
        "refusal_rate": refusal_rate, "over_refusal_rate": over_refusal_rate,
        "tokens_per_s": result.generations.tokens_per_s,
        "generated_tokens": sum(result.generations.new_tokens),
        "generation_seconds": result.generations.seconds,
        "reference_tokens": sum(result.perplexity.token_counts),
        "num_prompts": len(rows), "num_refusal_prompts": sum(r.refusal for r in rows),
    }


def file_label(label: str) -> str:
    """A label as a folder name: anything outside [A-Za-z0-9_.-] becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or "model"


def unique_folders(labels: list[str]) -> list[str]:
    """One folder per label; labels that sanitise alike ("a/b", "a_b") get a numeric suffix."""
    folders: list[str] = []
    for label in labels:
        name = file_label(label)
        folders.append(name if name not in folders else f"{name}-{len(folders) + 1}")
    return folders


def write_generations(path: Path, rows: list[PromptRow], result: ModelResult) -> None:
    lines = [json.dumps({"id": row.id, "prompt": row.prompt, "generation": text, "reference": row.reference,
                         "refusal": row.refusal}, ensure_ascii=False)
             for row, text in zip(rows, result.generations.texts, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def evaluate_models(prompt_file: Path | str, model_specs: list[str], out_dir: Path | str,
                    settings: GenerationSettings | None = None, *, limit: int | None = None) -> dict[str, Any]:
    """Evaluate every spec on the prompt file, write the output folder, return eval_summary.json's content."""
    from tunelab.progress import console

    settings = settings or GenerationSettings()
    out_dir = Path(out_dir)
    rows = load_prompts(prompt_file, limit)
    specs = parse_specs(model_specs)
    resolved = [resolve_spec(spec) for spec in specs]  # every typo surfaces before the first model runs
    device, dtype = pick_device_dtype()
    models, results, folders = [], [], unique_folders([spec.label for spec in specs])
    for spec, resolved_model, folder in zip(specs, resolved, folders, strict=True):
        console.print(f"[bold]{spec.label}[/]: {len(rows)} prompts on {device} ({str(dtype).removeprefix('torch.')})")
        model, tokenizer = load_spec(spec, resolved_model, device, dtype)
        result = evaluate_model(model, tokenizer, rows, settings)
        del model
        _free_memory()
        write_generations(out_dir / folder / "generations.jsonl", rows, result)
        results.append(result)
        models.append({**spec_record(spec, resolved_model), "generations": f"{folder}/generations.jsonl",
                       "metrics": model_metrics(result, rows)})
    summary = {"prompt_file": str(prompt_file), "num_prompts": len(rows), "settings": asdict(settings),
               "device": str(device), "dtype": str(dtype).removeprefix("torch."), "models": models,
               "created": dt.datetime.now().isoformat(timespec="seconds"), "git_sha": git_sha(),
               "libraries": library_versions(), "out_dir": str(out_dir)}
    summary_rows = [{"label": m["label"], **m["metrics"]} for m in models]
    labels = [spec.label for spec in specs]
    summary["files"] = write_tables(out_dir, summary_rows, per_prompt_rows(rows, labels, results), labels, summary)
    summary["files"] += [m["generations"] for m in models] + ["eval_summary.json"]
    atomic_write_json(out_dir / "eval_summary.json", summary)
    return summary


def per_prompt_rows(rows: list[PromptRow], labels: list[str], results: list[ModelResult]) -> list[dict[str, Any]]:
    table = []
    for i, row in enumerate(rows):
        entry: dict[str, Any] = {"id": row.id, "prompt": row.prompt, "reference": row.reference,
                                 "should_refuse": row.refusal}
        for label, result in zip(labels, results, strict=True):
            entry |= {f"{label}:generation": result.generations.texts[i],
                      f"{label}:ppl": result.perplexity.per_prompt[i], f"{label}:bleu": result.overlap.bleu[i],
                      f"{label}:chrf": result.overlap.chrf[i], f"{label}:refused": result.refused[i]}
        table.append(entry)
    return table


def spec_record(spec: ModelSpec, resolved: Any) -> dict[str, Any]:
    return {"label": spec.label, "spec": spec.spec, "base": spec.base, "source": resolved.source,
            "revision": resolved.revision, "fingerprint": resolved.fingerprint,
            "adapter": str(spec.adapter_dir) if spec.adapter_dir else None,
            "run_dir": str(spec.run_dir) if spec.run_dir else None}


def _free_memory() -> None:
    """Drop the evaluated model before loading the next, so peak memory is one model, not all of them."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

"""`tunelab export RUN --peft OUT`: the run's adapter in PEFT's LoRA format.

Why: PEFT's `adapter_config.json` + `adapter_model.safetensors` is what the rest of the ecosystem
(PEFT, TRL, vLLM's LoRA loader, the hub) reads. PEFT expresses LoRA and DoRA (`use_dora`) only; the
scaled-DoRA and DDoRA variants normalise per input token and have no PEFT counterpart, and a full
fine-tune has no adapter at all — those runs are refused in one line instead of writing a folder that
would load into different outputs.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.adapters.artifact import export_peft
from tunelab.errors import TunelabError
from tunelab.export.load_run import RunModel, load_run

PEFT_VARIANTS = {"lora", "dora"}


def peft_base_name(run: RunModel) -> str:
    """`base_model_name_or_path` for PEFT: the hub id for hub models, else the local folder the base
    loads from (an alias such as `smollm2-135m` means nothing to PEFT)."""
    from tunelab.assets.models import resolve_model

    resolved = resolve_model(run.config.model.name, run.config.model.revision)  # memoised: no re-hash
    return run.config.model.name if resolved.source == "hub" else str(resolved.path)


def check_peft_expressible(run: RunModel) -> None:
    variants = run.variants
    if not variants:
        raise TunelabError(f"run {run.run_dir} is a full fine-tune (adapter.variant none): it has no adapter "
                           "to export in PEFT format; use --merged")
    unsupported = sorted(variants - PEFT_VARIANTS)
    if unsupported:
        raise TunelabError(f"run {run.run_dir} uses adapter variant {', '.join(unsupported)}, which PEFT cannot "
                           "express (PEFT has lora and dora only); its tunelab artifact/ is the only exact format")


def export_run_peft(run_dir: Path | str, out_dir: Path | str) -> Path:
    """Write the run's adapter as a PEFT LoRA folder (atomically); `PeftModel.from_pretrained(base, out)`
    then gives the same outputs as the tunelab model."""
    run = load_run(run_dir)
    check_peft_expressible(run)
    return export_peft(run.model, Path(out_dir), base_name=peft_base_name(run))

"""`tunelab export RUN --merged OUT`: a plain transformers model folder with the adapters folded in.

Why: a merged folder loads with nothing but `AutoModelFor*.from_pretrained(OUT)` (no tunelab, no PEFT)
and runs at the base model's speed. LoRA and DoRA merge exactly (W' = W + s·BA, or m·(W+s·BA)/‖W+s·BA‖
row-wise); scaled DoRA and DDoRA normalise per input token, so no single weight reproduces them and
`merge()` refuses them with its own one-line explanation. A full fine-tune is already a plain model and
is re-saved as is.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from tunelab.adapters.artifact import merge_adapters
from tunelab.errors import TunelabError
from tunelab.export.load_run import RunModel, load_run
from tunelab.rundir import atomic_write_dir


def untie_diverged_head(model: nn.Module) -> None:
    """Mark the output head untied when merging changed it (an adapter on a tied `lm_head`).

    Merging swaps the adapted linear for a new one, so a tied head stops sharing the embedding matrix.
    Left as `tie_word_embeddings: true`, transformers 5 keeps both tensors with a warning to fix the config,
    and readers that trust the flag re-tie the head to the embedding, losing the merged adapter."""
    config = getattr(model, "config", None)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if config is None or embed is None or head is None or not getattr(config, "tie_word_embeddings", False):
        return
    if head.weight is not embed.weight:
        config.tie_word_embeddings = False


def merged_model(run: RunModel) -> nn.Module:
    """The run's model with every adapter merged into a plain nn.Linear (in place; returns the model)."""
    if run.config.model.quantize != "none":
        raise TunelabError(f"run {run.run_dir} trained on a {run.config.model.quantize} base (QLoRA); merging "
                           "into packed weights is not supported: export the adapter with --peft")
    if run.variants:
        merge_adapters(run.model)  # raises for dora_scaled / ddora before replacing anything
        untie_diverged_head(run.model)
    for param in run.model.parameters():
        param.requires_grad_(True)  # a merged model is an ordinary model again, as from_pretrained gives it
    return run.model


def save_model_folder(model: nn.Module, tokenizer: object, out_dir: Path) -> Path:
    """model.save_pretrained (safetensors) + tokenizer, written into a temp folder and renamed into place."""
    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))  # type: ignore[attr-defined]

    return atomic_write_dir(out_dir, write)


def export_run_merged(run_dir: Path | str, out_dir: Path | str) -> Path:
    """Write the run as a merged model folder that loads in plain transformers with the run's outputs."""
    run = load_run(run_dir)
    return save_model_folder(merged_model(run), run.tokenizer, Path(out_dir))

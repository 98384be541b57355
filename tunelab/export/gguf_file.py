"""`tunelab export RUN --gguf OUT.gguf`: the merged causal LM as one GGUF file for llama.cpp & co.

Why GGUF: it is the single-file format llama.cpp, Ollama and LM Studio run on a laptop CPU. The file is
written unquantised (F32, or F16 for the matrices) from the merged model with gguf-py's GGUFWriter:
`llama.*` metadata and tensors from `gguf_llama`, the tokenizer from `gguf_vocab`. Quantising further
is llama.cpp's `llama-quantize OUT.gguf OUT-Q4_K_M.gguf Q4_K_M`.

Only runs that merge exactly can be written (lora, dora, or a full fine-tune) and only Llama-architecture
causal LMs (SmolLM2, the offline default, is one); everything else is refused in one line before any
byte is written. The file appears atomically: a temp file beside OUT renamed over it when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tunelab.errors import TunelabError
from tunelab.export.gguf_llama import FloatType, check_llama, llama_tensors, write_llama_metadata
from tunelab.export.gguf_vocab import backend_state, write_vocab_metadata
from tunelab.export.load_run import RunModel, load_run
from tunelab.export.merged import merged_model
from tunelab.rundir import atomic_write_with


def check_gguf_run(run: RunModel) -> None:
    if not run.is_causal_lm:
        raise TunelabError(f"run {run.run_dir} is a {run.config.task} run with a {type(run.model).__name__}; "
                           "--gguf writes causal LMs only (use --merged or --peft)")


def write_gguf(model: nn.Module, tokenizer: Any, path: Path, name: str, float_type: FloatType = "f32") -> None:
    """Write `model` (a merged transformers Llama) and its tokenizer as a GGUF file at `path` (not atomic)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    write_llama_metadata(writer, model.config, name, float_type)
    write_vocab_metadata(writer, tokenizer, model.config.vocab_size)
    for tensor_name, array in llama_tensors(model, float_type):
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export_run_gguf(run_dir: Path | str, out_path: Path | str, float_type: FloatType = "f32") -> Path:
    """Merge the run's adapters and write OUT (a path ending in .gguf) atomically."""
    out_path = Path(out_path)
    if out_path.suffix != ".gguf":
        raise TunelabError(f"--gguf OUT names the file to write and must end in .gguf, got '{out_path}'")
    if out_path.is_dir():
        raise TunelabError(f"--gguf OUT '{out_path}' is a directory; give a file name ending in .gguf")
    if float_type not in ("f32", "f16"):
        raise TunelabError(f"GGUF float type must be f32 or f16, got {float_type!r}")
    run = load_run(run_dir)
    check_gguf_run(run)
    check_llama(run.model)
    backend_state(run.tokenizer)  # refuse an unsupported tokenizer before merging and writing
    model = merged_model(run)
    name = f"{Path(run.config.model.name).name}-{run.run_dir.name}"  # e.g. smollm2-135m-lora (base, then the run)
    atomic_write_with(out_path, lambda tmp: write_gguf(model, run.tokenizer, tmp, name, float_type))
    return out_path

"""The three exports of a finished run by name: what `tunelab export --peft | --merged | --gguf` calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tunelab.export.gguf_file import export_run_gguf
from tunelab.export.merged import export_run_merged
from tunelab.export.peft_format import export_run_peft

EXPORTERS: dict[str, Callable[[Path | str, Path | str], Path]] = {
    "peft": export_run_peft, "merged": export_run_merged, "gguf": export_run_gguf,
}


def export_run(run_dir: Path | str, kind: str, out: Path | str) -> Path:
    """Write run `run_dir` as `kind` (peft | merged | gguf) to `out`; returns the path written."""
    return EXPORTERS[kind](run_dir, out)


"""The `tunelab export` verb: parse, call `export_run`, print. Nothing else lives here.

    tunelab export RUN_DIR (--peft OUT_DIR | --merged OUT_DIR | --gguf OUT.gguf)

cli.py wires it in with `add_parsers(verbs)` and dispatches through `args.handler`.
"""

from __future__ import annotations

import argparse
from typing import Any

WHAT = {"peft": "PEFT LoRA adapter", "merged": "merged model", "gguf": "GGUF file"}


def add_parsers(verbs: Any) -> None:
    """Add the `export` verb to cli.py's subparsers."""
    parser = verbs.add_parser("export", help="write a finished run as a PEFT adapter, a merged model or a GGUF")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (config.yaml + artifact/)")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--peft", metavar="OUT_DIR", help="PEFT LoRA folder (lora and dora runs)")
    kind.add_argument("--merged", metavar="OUT_DIR", help="transformers folder with the adapters merged in")
    kind.add_argument("--gguf", metavar="OUT.gguf", help="one GGUF file for llama.cpp (Llama-architecture LMs)")
    parser.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from tunelab.export.exporters import export_run

    hf_logging.set_verbosity_error()  # "newly initialised head" notices: the saved head is loaded right after
    hf_logging.disable_progress_bar()  # one printed line per export, no load/save bars
    kind = next(name for name in WHAT if getattr(args, name))
    written = export_run(args.run_dir, kind, getattr(args, kind))
    print(f"{WHAT[kind]}: {written}")
    return 0

"""The `tunelab eval` verb: parse, call `evaluate_models`, print the summary. Nothing else lives here.

    tunelab eval PROMPTS.jsonl --model SPEC [--model SPEC ...] [--label NAME ...] [--out DIR]
                 [--max-new-tokens 64] [--temperature 0] [--top-p 1.0] [--batch-size 8] [--limit N]
    tunelab eval humaneval --model SPEC [--n 1] [--k 1,10] [--max-new-tokens 256] ...   (code_commands.py)

cli.py wires it in with `add_parsers(verbs)` and dispatches through `args.handler`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

SPEC_HELP = ("NAME (alias, hub id or model dir), NAME+ADAPTER_DIR (base plus a saved tunelab adapter) or RUN_DIR "
             "(config.yaml + artifact/); optionally LABEL=SPEC. Repeat to compare models side by side")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parsers(verbs: Any) -> None:
    """Add the `eval` verb to cli.py's subparsers."""
    from tunelab.eval.code_commands import add_code_arguments

    parser = verbs.add_parser("eval", help="compare chat models on a prompt file: generations, perplexity, "
                                           "BLEU/chrF, refusals; or `eval humaneval`: pass@k of generated code")
    parser.add_argument("prompts", help="JSONL file (prompt, optional reference, refusal, id), a packaged set: "
                                        "seed000, seed001_sft, seed001_dpo; or humaneval (code evaluation)")
    parser.add_argument("--model", action="append", required=True, dest="models", metavar="SPEC", help=SPEC_HELP)
    parser.add_argument("--label", action="append", default=[], dest="labels",
                        help="label for each --model, in order (or write LABEL=SPEC)")
    parser.add_argument("--out", help="output folder (default runs/eval/<run-id>)")
    parser.add_argument("--max-new-tokens", type=_positive_int, help="default 64 (humaneval: 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    parser.add_argument("--batch-size", type=_positive_int, default=8)
    parser.add_argument("--limit", type=_positive_int, help="evaluate only the first N prompts")
    parser.add_argument("--system", help="system message sent with every prompt")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_code_arguments(parser)
    parser.set_defaults(handler=cmd_eval)


def labelled_specs(specs: list[str], labels: list[str]) -> list[str]:
    """Attach `--label`s to `--model`s in order: one label per model, or none at all."""
    if not labels:
        return specs
    if len(labels) != len(specs):
        raise TunelabError(f"give one --label per --model ({len(labels)} labels for {len(specs)} models)")
    return [f"{label}={spec}" for label, spec in zip(labels, specs, strict=True)]


def cmd_eval(args: argparse.Namespace) -> int:
    from tunelab.eval.code_commands import CODE_WORD, check_mode, cmd_code_eval

    check_mode(args)
    if args.prompts == CODE_WORD:
        return cmd_code_eval(args)
    from tunelab.eval.generation import GenerationSettings
    from tunelab.eval.suite import evaluate_models
    from tunelab.rundir import new_run_id

    settings = GenerationSettings(max_new_tokens=args.max_new_tokens or 64, temperature=args.temperature,
                                  top_p=args.top_p, batch_size=args.batch_size, seed=args.seed, system=args.system)
    out_dir = Path(args.out) if args.out else Path("runs") / "eval" / new_run_id()
    summary = evaluate_models(args.prompts, labelled_specs(args.models, args.labels), out_dir, settings,
                              limit=args.limit)
    print_summary(summary)
    print(f"eval files: {out_dir}")
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from tunelab.eval.eval_report import SUMMARY_COLUMNS, fmt

    table = Table(title=f"tunelab eval: {summary['prompt_file']} ({summary['num_prompts']} prompts)")
    for _, title in SUMMARY_COLUMNS:
        table.add_column(title, justify="left" if title == "model" else "right")
    for model in summary["models"]:
        row = {"label": model["label"], **model["metrics"]}
        table.add_row(*(fmt(row.get(key)) for key, _ in SUMMARY_COLUMNS))
    Console(width=160).print(table)

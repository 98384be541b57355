"""`tunelab eval humaneval`: the code-evaluation options of the `eval` verb, and its handler.

    tunelab eval humaneval --model SPEC [--problems FILE.jsonl] [--n 1] [--k 1,10] [--temperature 0]
                           [--max-new-tokens 256] [--limit N] [--out DIR] [--workers N] [--timeout 10]

`commands.py` owns the `eval` parser; the word `humaneval` in place of a prompt file sends the
parsed arguments here. The options below are refused with a prompt file, and the prompt-file options
they do not use (--label, --system) are refused here, so neither mode silently ignores a flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tunelab.errors import TunelabError

CODE_WORD = "humaneval"
CODE_OPTIONS = ("n", "k", "problems", "workers", "timeout", "chat")
DEFAULT_MAX_NEW_TOKENS = 256


def add_code_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(f"code evaluation (tunelab eval {CODE_WORD} --model SPEC ...)")
    group.add_argument("--problems", metavar="FILE.jsonl",
                       help="problems {task_id, prompt, test, entry_point} instead of the packaged HumanEval 164")
    group.add_argument("--n", type=int, help="samples per problem (default 1; > 1 needs --temperature > 0)")
    group.add_argument("--k", help="comma-separated k for pass@k (default 1,10; k > n is skipped)")
    group.add_argument("--workers", type=int, help="programs tested at once (default: one per CPU core)")
    group.add_argument("--timeout", type=float, help="wall-clock seconds per test program (default 10)")
    group.add_argument("--chat", action="store_true", default=None,
                       help="ask through the chat template and test the code block of each reply (instruct models)")


def parse_ks(text: str | None) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in (text or "1,10").split(",") if part.strip()}))
    except ValueError as error:
        raise TunelabError(f"--k {text!r}: give comma-separated whole numbers such as 1,10") from error
    if not ks or min(ks) < 1:
        raise TunelabError(f"--k {text!r}: every k must be >= 1")
    return ks


def check_mode(args: argparse.Namespace) -> None:
    """Refuse options of the other mode (see the module docstring)."""
    code = args.prompts == CODE_WORD
    if not code:
        given = [f"--{name}" for name in CODE_OPTIONS if getattr(args, name) is not None]
        if given:
            raise TunelabError(f"{', '.join(given)} only apply to `tunelab eval {CODE_WORD}`")
        return
    if args.labels or args.system:
        raise TunelabError(f"--label and --system do not apply to `tunelab eval {CODE_WORD}`")
    if len(args.models) != 1:
        raise TunelabError(f"`tunelab eval {CODE_WORD}` evaluates one --model at a time ({len(args.models)} given)")


def cmd_code_eval(args: argparse.Namespace) -> int:
    from tunelab.eval.code_eval import evaluate_code_model
    from tunelab.eval.generation import GenerationSettings
    from tunelab.eval.sandbox import SandboxLimits
    from tunelab.rundir import new_run_id

    n = args.n if args.n is not None else 1
    if n < 1 or (args.workers is not None and args.workers < 1):
        raise TunelabError("--n and --workers must be >= 1")
    timeout = args.timeout if args.timeout is not None else SandboxLimits.wall_s
    if timeout <= 0:
        raise TunelabError(f"--timeout {timeout:g}: must be > 0 seconds")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
                                  temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size,
                                  seed=args.seed)
    limits = SandboxLimits(wall_s=timeout, cpu_s=max(1, int(timeout + 0.999)))
    out_dir = Path(args.out) if args.out else Path("runs") / "eval" / f"{CODE_WORD}-{new_run_id()}"
    summary = evaluate_code_model(args.problems or CODE_WORD, args.models[0], out_dir, settings, n=n,
                                  ks=parse_ks(args.k), limits=limits, limit=args.limit, workers=args.workers,
                                  chat=bool(args.chat))
    print_code_summary(summary)
    print(f"eval files: {out_dir}")
    return 0


def print_code_summary(summary: dict) -> None:
    scores = ", ".join(f"{name} = {value:.4f}" for name, value in summary["pass_at_k"].items())
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary["kinds"].items() if count)
    print(f"{summary['model']['label']}: {summary['num_problems']} problems x {summary['n']} samples: {scores}")
    print(f"samples by kind: {kinds}")
    if summary["k_skipped"]:
        print(f"skipped pass@k for k > n: {', '.join(map(str, summary['k_skipped']))}")
    print(f"sandbox: network {summary['isolation']['network']}; processes {summary['isolation']['processes']}")

"""`tunelab VERB ...`: parse arguments, call the library, print. Nothing else lives here.

User errors (TunelabError) print as one red line and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tunelab.errors import TunelabError


def cmd_run(args: argparse.Namespace) -> int:
    from tunelab.recipes import load_recipe
    from tunelab.report.compare import print_comparison, write_comparison
    from tunelab.runner import run_recipe
    from tunelab.train.distributed import is_main, leave

    if args.nproc:  # re-launched under torchrun, one process per rank (tunelab.train.launch)
        from tunelab.train.launch import launch_run

        return launch_run(args.nproc, args.recipe, args.overrides, args.resume)
    config = load_recipe(args.recipe, args.overrides)
    outcomes = run_recipe(config, resume=Path(args.resume) if args.resume else None)
    if not is_main():  # rank 0 prints the comparison
        leave()
        return 0
    if len(outcomes) > 1:
        group = outcomes[0].run_dir.parent
        write_comparison(outcomes, group)
        print_comparison(outcomes)
        print(f"comparison and report: {group}")
    else:
        print_comparison(outcomes)
        print(f"run directory: {outcomes[0].run_dir}")
    leave()
    return 0


def print_rows(title: str, rows: list[dict], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    Console(width=160).print(table)


def cmd_models(args: argparse.Namespace) -> int:
    from tunelab.assets.models import list_models

    print_rows("packaged offline models (any other model.name: a hub id or a local directory)", list_models(),
               ["alias", "kind", "installed", "cached", "package", "description"])
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from tunelab.assets.datasets import list_datasets

    title = "registered datasets (or point data.train at a CSV/TSV/JSONL/Parquet file, a datasets folder or a hub id)"
    print_rows(title, list_datasets(),
               ["name", "task", "available", "description"])
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    from tunelab.budget_report import budget_for_recipe

    print(budget_for_recipe(args.recipe, args.overrides))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Pre-flight of a recipe without training: data read, tokenised and checked (tunelab.data.preflight);
    exit 2 when it finds an error. A stage chain is checked stage by stage."""
    from rich.console import Console

    from tunelab.assets.models import cache_root
    from tunelab.recipes import load_recipe
    from tunelab.runner import quiet_transformers
    from tunelab.stages import stage_config
    from tunelab.tasks.registry import task_class

    quiet_transformers()
    config = load_recipe(args.recipe, args.overrides)
    configs = [stage_config(config, i) for i in range(len(config.stages))] if config.stages else [config]
    for one in configs:
        task = task_class(one.task)(one)
        source = task.model_source()
        task.prepare_data(source.tokenizer, source.tokenizer_id, cache_root() / "tokens")
        report = task.preflight()
        if report is None:
            print(f"{one.name}: task {one.task} has no pre-flight report yet; its data loaded without errors")
            continue
        report.print(full=True, out=Console())
        report.raise_errors()
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """A sample from a finished language-model run (task: lm), reloaded through load_run_model."""
    from tunelab.models.artifact import load_run_model
    from tunelab.tasks.lm import sample_text

    loaded = load_run_model(args.run)
    if loaded.config.task != "lm" or loaded.tokenizer is None:
        raise TunelabError(f"{args.run}: generate samples from lm runs (this run's task is {loaded.config.task})")
    print(sample_text(loaded.model, loaded.tokenizer, args.prompt, args.max_new_tokens, args.temperature,
                      args.top_k, args.seed))
    return 0


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.lr=3e-4 adapter.rank=4")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunelab", description="Train, fine-tune and compare small models.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="train a recipe (all its variants) and compare")
    add_recipe_args(run)
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--nproc", type=int, metavar="N", help="data-parallel over N local processes (torchrun; "
                     "the global batch stays train.batch_size x train.grad_accum)")
    generate = verbs.add_parser("generate", help="print a sample from a finished language-model run (task: lm)")
    generate.add_argument("run", metavar="RUN_DIR")
    generate.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    generate.add_argument("--max-new-tokens", type=int, default=300)
    generate.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    generate.add_argument("--top-k", type=int, default=200)
    generate.add_argument("--seed", type=int, default=0)
    check = verbs.add_parser("check", help="pre-flight a recipe: first example with trained tokens highlighted, "
                                           "balance, lengths, overlap, problems (no training)")
    add_recipe_args(check)
    verbs.add_parser("models", help="list packaged offline models")
    verbs.add_parser("data", help="list registered datasets")
    budget = verbs.add_parser("budget", help="exact trainable-parameter count of a recipe, per module type")
    add_recipe_args(budget)
    from tunelab.eval.commands import add_parsers as add_eval_parsers

    add_eval_parsers(verbs)
    from tunelab.trials.commands import add_parsers as add_trial_parsers

    add_trial_parsers(verbs)
    from tunelab.export.commands import add_parsers as add_export_parsers

    add_export_parsers(verbs)
    from tunelab.eval.predict import add_parsers as add_predict_parsers

    add_predict_parsers(verbs)
    from tunelab.plan.commands import add_parsers as add_plan_parsers

    add_plan_parsers(verbs)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "check": cmd_check, "generate": cmd_generate, "models": cmd_models, "data": cmd_data,
    "budget": cmd_budget,
}


def dispatch(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace,
             interrupted: str = "resume with --resume RUN_DIR") -> int:
    """Run a verb; a TunelabError becomes one line on stderr and exit code 2."""
    try:
        return handler(args)
    except TunelabError as exc:
        print(f"tunelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tunelab: interrupted ({interrupted})", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return dispatch(getattr(args, "handler", None) or COMMANDS[args.verb], args)


if __name__ == "__main__":
    sys.exit(main())

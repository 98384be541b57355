"""The `sweep`, `compare` and `report` verbs: parse, call the library, print (tunelab/cli.py wires them
in with `add_parsers(verbs)` and dispatches on `args.handler`).

    tunelab sweep configs/demo.yaml --grid 'adapter.rank=[4,8,16]' --grid 'train.lr=[1e-4,3e-4]'
    tunelab sweep configs/ag_news_budget_search.yaml            # space from ag_news_budget_search.sweep.yaml
    tunelab sweep RECIPE --search optuna --trials 20 --param 'train.lr={low: 1e-5, high: 1e-3, log: true}'
    tunelab sweep RECIPE --workers 2 --devices 0,1               # one worker process per GPU
    tunelab compare 'runs/demo/*' --csv table.csv
    tunelab report runs/demo/sweep-1a2b3c4d

`python -m tunelab.trials.commands VERB ...` runs the same verbs without the main CLI.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.workers is not None or args.devices is not None:
        launch_workers(args)  # then the summary below: a pass that finds every slot done
    from tunelab.report.compare import write_comparison
    from tunelab.report.runs import find_runs
    from tunelab.trials.launch import WORKER_VARIABLE
    from tunelab.trials.space import parse_param
    from tunelab.trials.spec import SweepSpec
    from tunelab.trials.sweep import run_sweep

    spec = SweepSpec(
        recipe=args.recipe, overrides=tuple(args.overrides), params=tuple(parse_param(p) for p in args.params or ()),
        search=args.search, trials=args.trials, metric=args.metric, direction=args.direction, seed=args.seed,
        prune=False if args.no_prune else None, name=args.name, storage=args.storage, tracker=args.tracker,
        space_file=args.space_file)
    result = run_sweep(spec)
    counts = {state: list(result.states.values()).count(state) for state in sorted(set(result.states.values()))}
    pending = result.slots - len(result.states)
    launched = os.environ.get(WORKER_VARIABLE)  # a worker of `--workers`: the launcher prints the table
    print(("" if launched is None else f"worker {launched}: ") + f"sweep {result.study_name}: {result.slots} trials, "
          + ", ".join(f"{n} {state.lower()}" for state, n in counts.items())
          + (f", {pending} still running elsewhere" if pending else "") + f"; this worker ran {len(result.ran)}")
    if launched is not None:
        return 0
    if result.outcomes:
        write_comparison(result.outcomes, result.folder)
        from tunelab.report.compare import build_comparison, print_table

        print_table(build_comparison(find_runs([str(result.folder)]), metric=args.metric, sort=True),
                    title=f"sweep {result.study_name}")
    print(f"sweep folder (comparison.md, comparison.csv, report.html): {result.folder}")
    return 0


def launch_workers(args: argparse.Namespace) -> None:
    """--workers/--devices: the same sweep command once per worker, each with its device and threads."""
    from tunelab.errors import TunelabError
    from tunelab.trials.launch import cuda_devices, launch, plan_workers, usable_cores

    plans = plan_workers(args.workers, args.devices, cuda_devices(), usable_cores(),
                         visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    for plan in plans:
        where = "cpu" if plan.device == "cpu" else f"CUDA_VISIBLE_DEVICES={plan.env['CUDA_VISIBLE_DEVICES']}"
        print(f"worker {plan.index}: {where}, {plan.env['OMP_NUM_THREADS']} thread(s)")
    sys.stdout.flush()  # before the workers' lines
    codes = launch([sys.executable, "-m", "tunelab", "sweep", *sweep_argv(args)], plans)
    failed = [(plan, code) for plan, code in zip(plans, codes, strict=True) if code != 0]
    if failed:
        plan, code = failed[0]
        raise TunelabError(f"worker {plan.index} ({plan.device}) exited with code {code} (its error is above); "
                           f"{len(failed)} of {len(plans)} workers failed")


def sweep_argv(args: argparse.Namespace) -> list[str]:
    """The parsed `sweep` flags back as a command line, without --workers/--devices (one worker's command)."""
    argv = [args.recipe, *args.overrides]
    for param in args.params or ():
        argv += ["--param", param]
    for flag, value in (("--space", args.space_file), ("--search", args.search), ("--trials", args.trials),
                        ("--metric", args.metric), ("--direction", args.direction), ("--seed", args.seed),
                        ("--name", args.name), ("--storage", args.storage), ("--tracker", args.tracker)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--no-prune"] if args.no_prune else [])


def cmd_compare(args: argparse.Namespace) -> int:
    from tunelab.report.compare import build_comparison, csv_text, markdown_table, print_table
    from tunelab.report.runs import find_runs
    from tunelab.rundir import atomic_write_text

    records = find_runs(args.runs)
    if args.by:
        return print_equal_budget(records, args)
    table = build_comparison(records, metric=args.metric, group_seeds=not args.no_group_seeds,
                             sort=args.sort, alpha=args.alpha)
    if args.markdown:
        atomic_write_text(Path(args.markdown), markdown_table(table) + "\n")
    if args.csv:
        atomic_write_text(Path(args.csv), csv_text(table))
    if args.format == "csv":
        sys.stdout.write(csv_text(table))
    elif args.format == "markdown":
        print(markdown_table(table))
    else:
        print_table(table, title=f"{len(table.rows)} rows")
    return 0


def print_equal_budget(records, args: argparse.Namespace) -> int:
    """compare --by tokens|seconds: the metric at equal training budgets, and the Pareto front."""
    import csv

    from tunelab.errors import TunelabError
    from tunelab.report.compare import choose_metric
    from tunelab.report.equal_budget import csv_rows, equal_budget, markdown
    from tunelab.rundir import atomic_write_text

    metric = choose_metric(records, args.metric)
    table = equal_budget(records, args.by, metric) if metric else None
    if table is None or not table.curves:
        raise TunelabError(f"compare --by {args.by}: no run has periodic evaluations of {metric or 'a metric'} "
                           "(train.eval_every) to compare at equal budgets")
    text = markdown(table)
    if args.markdown:
        atomic_write_text(Path(args.markdown), text + "\n")
    if args.csv or args.format == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows(csv_rows(table))
        if args.csv:
            atomic_write_text(Path(args.csv), buffer.getvalue())
        if args.format == "csv":
            sys.stdout.write(buffer.getvalue())
            return 0
    print(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tunelab.report.html import write_report
    from tunelab.report.runs import find_runs

    records = find_runs(args.runs)
    if args.output:
        out = Path(args.output)
    elif len(args.runs) == 1 and Path(args.runs[0]).is_dir():
        out = Path(args.runs[0]) / "report.html"
    else:
        out = Path("report.html")
    write_report(records, out, title=args.title or f"tunelab report: {', '.join(args.runs)}"[:120],
                 metric=args.metric, alpha=args.alpha)
    print(f"report ({len(records)} runs): {out}")
    return 0


def significance_level(text: str) -> float:
    """--alpha: a probability strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"--alpha must be a number between 0 and 1 (got {text!r})")
    return value


def add_parsers(verbs) -> None:
    """Add `sweep`, `compare`, `report` to the CLI's subparsers; each sets `handler`."""
    sweep = verbs.add_parser("sweep", help="grid or Optuna search over a recipe (resumable, multi-worker)")
    sweep.add_argument("recipe", help="YAML recipe; RECIPE.sweep.yaml beside it, if any, gives the space")
    sweep.add_argument("overrides", nargs="*", help="dotted overrides applied to every trial (train.epochs=2)")
    sweep.add_argument("--grid", "--param", dest="params", action="append", metavar="KEY=VALUES",
                       help="a swept key: a list 'adapter.rank=[4,8,16]' or (optuna) a range "
                            "'train.lr={low: 1e-5, high: 1e-3, log: true}'; repeat per key")
    sweep.add_argument("--space", dest="space_file", metavar="FILE", help="a .sweep.yaml with space: and settings")
    sweep.add_argument("--search", choices=["grid", "optuna"], help="grid (default) or optuna (TPE + pruning)")
    sweep.add_argument("--trials", type=int, help="number of Optuna trials (all workers together)")
    sweep.add_argument("--metric", help="metric to optimise (default: the recipe's eval.metric)")
    sweep.add_argument("--direction", choices=["maximize", "minimize"], help="default: from the metric's name")
    sweep.add_argument("--seed", type=int, help="sampler seed (default 0)")
    sweep.add_argument("--no-prune", action="store_true", help="never stop Optuna trials early")
    sweep.add_argument("--name", help="sweep name (default: a hash of recipe + space; same command = same sweep)")
    sweep.add_argument("--storage", metavar="URL", help="SQLAlchemy URL shared by workers, e.g. "
                       "postgresql://user@host/db (default: SQLite in the sweep folder)")
    sweep.add_argument("--tracker", choices=["tensorboard", "mlflow"], help="also log each trial to a tracker")
    sweep.add_argument("--workers", type=int, metavar="N",
                       help="start N worker processes of this sweep here (default: one per --devices entry)")
    sweep.add_argument("--devices", metavar="0,1|cpu",
                       help="CUDA devices for the workers, round-robin (default: every visible GPU, else cpu)")
    sweep.set_defaults(handler=cmd_sweep)

    compare = verbs.add_parser("compare", help="one table over finished runs, sweeps or globs")
    compare.add_argument("runs", nargs="+", metavar="RUN_OR_GLOB", help="run dirs, sweep/group folders or globs")
    compare.add_argument("--metric", help="metric that picks the best row (default: the recipes' eval.metric)")
    compare.add_argument("--format", choices=["table", "markdown", "csv"], default="table", help="what to print")
    compare.add_argument("--markdown", metavar="FILE", help="also write the markdown table here")
    compare.add_argument("--csv", metavar="FILE", help="also write the CSV table here")
    compare.add_argument("--sort", action="store_true", help="best row first")
    compare.add_argument("--no-group-seeds", action="store_true", help="one row per run, even across seeds")
    compare.add_argument("--alpha", type=significance_level, default=0.05,
                         help="significance level: the best row is marked only when p < alpha against the runner-up")
    compare.add_argument("--by", choices=["tokens", "seconds"],
                         help="compare at equal training tokens or seconds (from the periodic evals) and "
                              "mark the quality-vs-cost Pareto front")
    compare.set_defaults(handler=cmd_compare)

    report = verbs.add_parser("report", help="a self-contained HTML report over runs or a sweep")
    report.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP", help="run dirs, sweep/group folders or globs")
    report.add_argument("-o", "--output", metavar="FILE", help="default: FOLDER/report.html for one folder")
    report.add_argument("--metric", help="metric that picks the best run")
    report.add_argument("--title")
    report.add_argument("--alpha", type=significance_level, default=0.05, help="significance level (as compare)")
    report.set_defaults(handler=cmd_report)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (python -m tunelab.trials.commands), with the CLI's error handling."""
    parser = argparse.ArgumentParser(prog="tunelab")
    add_parsers(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    from tunelab.cli import dispatch

    return dispatch(args.handler, args, interrupted="run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())

"""Bad recipes and overrides, as a new user writes them: every one stops `tunelab run` with exit code 2 and
one line on stderr naming the key, file or function at fault, and never a traceback.

Each case is (id, recipe changes as dotted overrides or a replacement recipe, text the error line must
contain). The base recipe trains a classifier on a 24-row CSV, so a case that wrongly starts training
fails the test in seconds instead of running a long job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunelab.cli import main

BASE = {
    "name": "bad", "task": "classification",
    "model": {"name": "minilm", "max_length": 32},
    "data": {"train": "{tmp}/toy.csv", "columns": {"text": "text", "label": "label"}},
    "adapter": {"variant": "lora", "rank": 4, "targets": ["query", "value"]},
    "train": {"epochs": 1, "batch_size": 8, "max_steps": 1},
    "output_dir": "{tmp}/runs",
}
GRPO = {**BASE, "task": "grpo", "model": {"name": "smollm2-135m", "max_length": 256},
        "data": {"train": "{tmp}/prompts.jsonl"}, "adapter": {"variant": "lora", "rank": 4, "targets": ["q_proj"]}}

# (id, overrides or a whole recipe, what the one error line must name)
CASES: list[tuple[str, list[str] | dict, str]] = [
    ("unknown key", ["adapter.rnak=4"], "adapter.rnak: unknown key"),
    ("unknown section", ["trainer.lr=1e-3"], "trainer"),
    ("wrong type", ["train.lr=fast"], "train.lr"),
    ("negative lr", ["train.lr=-0.001"], "train.lr"),
    ("zero lr", ["train.lr=0"], "train.lr"),
    ("rank 0", ["adapter.rank=0"], "adapter.rank"),
    ("batch size 0", ["train.batch_size=0"], "train.batch_size"),
    ("zero epochs", ["train.epochs=0"], "train.epochs"),
    ("grad_accum 0", ["train.grad_accum=0"], "train.grad_accum"),
    ("warmup ratio above 1", ["train.warmup_ratio=1.5"], "train.warmup_ratio"),
    ("unknown schedule", ["train.schedule=exponential"], "train.schedule"),
    ("unknown optimizer", ["train.optimizer=adam"], "train.optimizer"),
    ("unknown precision", ["train.precision=fp8"], "train.precision"),
    ("fp16 on a CPU", ["train.precision=fp16"], "fp16"),
    ("clip 0", ["train.clip=0"], "train.clip"),
    ("unknown task", ["task=summarise"], "task"),
    ("unknown model", ["model.name=no-such-model"], "model.name"),
    ("max_length too small", ["model.max_length=2"], "model.max_length"),
    ("unknown quantisation", ["model.quantize=2bit"], "model.quantize"),
    ("unknown adapter", ["adapter.variant=vera"], "adapter.variant"),
    ("adapter target matches nothing", ["adapter.targets=[qkv_proj]"], "adapter.targets"),
    ("budget exceeded", ["adapter.budget=100", "adapter.rank=64"], "budget"),
    ("missing data file", ["data.train={tmp}/nope.csv"], "nope.csv"),
    ("missing eval file", ["data.eval={tmp}/nope_eval.csv"], "nope_eval.csv"),
    ("unknown dataset", ["data.dataset=ag_newz", "data.train=null"], "data.dataset"),
    ("no data at all", ["data.train=null"], "data"),
    ("wrong label column", ["data.columns.label=stars"], "stars"),
    ("wrong text column", ["data.columns.text=review"], "review"),
    ("wrong text field", ["data.text_fields=[title]"], "title"),
    ("limit 0", ["data.limit=0"], "data.limit"),
    ("eval fraction 1", ["data.eval_fraction=1.0"], "data.eval_fraction"),
    ("unknown SFT format", ["data.format=alpaca"], "data.format"),
    ("packing with classification", ["train.packing=true"], "packing"),
    ("eval metric the task lacks", ["eval.metric=bleu"], "eval.metric"),
    ("eval batch size 0", ["eval.batch_size=0"], "eval.batch_size"),
    ("override without =", ["train.lr"], "train.lr"),
    ("variant with an unknown key", ["variants.x.adapter.rnak=4"], "rnak"),
    ("init_from a missing run", ["model.init_from={tmp}/no-run"], "model.init_from"),
    ("stages and variants together", {**BASE, "variants": {"a": {"train.lr": 1e-3}},
                                      "stages": [{"name": "s1", "task": "classification"}]}, "stages and variants"),
    ("stage without a name", {**BASE, "stages": [{"task": "classification"}]}, "stages[0].name"),
    ("stage name used twice", {**BASE, "stages": [{"name": "a"}, {"name": "a"}]}, "used twice"),
    ("stage switching the base model", {**BASE, "stages": [{"name": "a"}, {"name": "b", "model": {"name": "gpt2"}}]},
     "stages.b.model.name"),
    ("stage setting init_from itself", {**BASE, "stages": [{"name": "a", "model": {"init_from": "x"}}]},
     "model.init_from"),
    ("reward function that does not exist", {**GRPO, "grpo": {"rewards": [{"name": "{tmp}/rewards.py:nothing"}]}},
     "grpo.rewards.0.name"),
    ("reward file that does not exist", {**GRPO, "grpo": {"rewards": [{"name": "{tmp}/gone.py:f"}]}}, "gone.py"),
    ("unknown built-in reward", {**GRPO, "grpo": {"rewards": [{"name": "yes_or_no"}]}}, "grpo.rewards.0.name"),
    ("setting a reward does not take", {**GRPO, "grpo": {"rewards": [{"name": "length_penalty",
                                                                       "args": {"max_chars": 3}}]}}, "max_chars"),
    ("one generation per group", {**GRPO, "grpo": {"num_generations": 1}}, "grpo.num_generations"),
    ("KL without a frozen base", {**GRPO, "adapter": {"variant": "none"}, "grpo": {"beta": 0.1}}, "grpo.beta"),
    ("dpo beta 0", {**BASE, "task": "dpo", "preference": {"beta": 0}}, "preference.beta"),
    ("from-scratch arch for dpo", {**BASE, "task": "dpo", "model": {"arch": {"type": "gpt"}}}, "model.arch"),
]


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    rows = [{"text": f"sample text number {i}", "label": ["a", "b"][i % 2]} for i in range(24)]
    (tmp_path / "toy.csv").write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"q {i}", "answer": "a"}) + "\n"
                                                    for i in range(8)))
    (tmp_path / "rewards.py").write_text("def something(prompts, completions, **_):\n"
                                         "    return [0.0] * len(completions)\n")
    return tmp_path


def filled(value, tmp: Path):
    """The recipe with {tmp} replaced by the test's folder, recursively."""
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, list):
        return [filled(v, tmp) for v in value]
    if isinstance(value, dict):
        return {k: filled(v, tmp) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("change", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_recipe_is_one_line_and_exit_2(workspace, capsys, change, named):
    recipe = filled(change if isinstance(change, dict) else BASE, workspace)
    path = workspace / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    overrides = filled(change, workspace) if isinstance(change, list) else []
    code = main(["run", str(path), *overrides])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    errors = [line for line in lines if line.startswith("tunelab: error:")]
    assert len(errors) == 1 and named in errors[0], err
    assert "Traceback" not in err
    assert not list((workspace / "runs").glob("*/*/summary.json"))  # nothing trained


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


def test_a_yaml_syntax_error_names_the_file(workspace, capsys):
    path = workspace / "broken.yaml"
    path.write_text("model: {name: minilm\ntrain: [\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("tunelab: error:") == 1 and "broken.yaml" in err and "Traceback" not in err

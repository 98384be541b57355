"""Stage chains: SFT then DPO from the SFT weights, exact handover, resume at a stage, one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.interrupt import interrupted_run
from tunelab.errors import TunelabError
from tunelab.models.artifact import load_run_model
from tunelab.recipes import load_recipe, validate
from tunelab.runner import load_task, run_recipe
from tunelab.stages import check_stages, stage_config
from tunelab.train.preference_loss import pair_logps

from .test_dpo import ALL_LINEAR, write_preferences
from .tiny_chat import save_chat_model, write_toy_sft


def chain_recipe(tmp_path) -> dict:
    model_dir = save_chat_model(tmp_path / "model")
    sft_data = write_toy_sft(tmp_path / "sft.jsonl", repeats=4)
    train, evaluation = write_preferences(tmp_path, repeats=1)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p1", "prompt": "what colour is the <b>sky</b>", "reference": "blue"}) + "\n"
                       + json.dumps({"id": "p2", "prompt": "say hi", "reference": "hello hello"}) + "\n")
    return {
        "name": "chain", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "max_length": 24},
        "adapter": {"variant": "lora", "rank": 4, "alpha": 8, "targets": ALL_LINEAR},
        "train": {"lr": 5e-3, "batch_size": 8, "precision": "fp32", "warmup_ratio": 0.0, "schedule": "constant"},
        "data": {"train": str(sft_data), "eval": str(sft_data)},
        "stages": [
            {"name": "sft", "task": "sft", "train": {"max_steps": 4}},
            {"name": "dpo", "task": "dpo", "data": {"train": str(train), "eval": str(evaluation)},
             "train": {"max_steps": 3, "lr": 2e-3}, "preference": {"beta": 0.2}},
        ],
        "compare_prompts": str(prompts), "eval": {"max_new_tokens": 4},
    }


def eval_logps(model, task) -> torch.Tensor:
    index = np.arange(len(task.tokens["eval"]))
    with torch.no_grad():
        logps = pair_logps(model.eval(), task.collate_policy(index, "eval"), 64)
    return torch.stack([logps.chosen, logps.rejected], dim=1).double()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain")
    config = validate(chain_recipe(folder))
    check_stages(config)
    return config, run_recipe(config)


def test_each_stage_has_its_run_folder_and_dpo_starts_from_the_sft_weights(chain):
    config, outcomes = chain
    sft, dpo = outcomes
    assert [o.label for o in outcomes] == ["sft", "dpo"] and sft.run_dir.parent == dpo.run_dir.parent
    assert json.loads((sft.run_dir.parent / "chain.json").read_text())["stages"] == ["sft", "dpo"]
    assert sft.summary["task"] == "sft" and dpo.summary["task"] == "dpo"
    dpo_config = load_recipe(str(dpo.run_dir / "config.yaml"))
    assert dpo_config.model.init_from == str(sft.run_dir) and dpo_config.preference.beta == 0.2
    # the DPO stage's reference is the SFT model exactly (the policy as the stage starts), not the base
    source, task = load_task(dpo_config)
    task.base_fingerprint = source.fingerprint
    sft_model = load_run_model(sft.run_dir).model
    stored = torch.from_numpy(np.load(task.reference_path("eval")))  # written by the DPO stage's run
    assert torch.allclose(stored, eval_logps(sft_model, task), atol=1e-4)
    base_config = stage_config(config, 1)  # the same stage without a predecessor: reference = base
    base_source, base_task = load_task(base_config)
    base_task.base_fingerprint = base_source.fingerprint
    assert base_task.reference_path("eval") != task.reference_path("eval")


def test_base_and_every_stage_are_compared_per_prompt_and_in_the_report(chain, tmp_path):
    _, (sft, dpo) = chain
    stage_eval = sft.run_dir.parent / "stage_eval"
    summary = json.loads((stage_eval / "eval_summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["base", "sft", "dpo"]
    ppl = {m["label"]: m["metrics"]["mean_ppl"] for m in summary["models"]}
    assert ppl["sft"] < ppl["base"]  # SFT trained on these very answers
    from tunelab.report.html import write_report
    from tunelab.report.runs import find_runs

    page = write_report(find_runs([str(sft.run_dir.parent)]), tmp_path / "report.html").read_text()
    section = page[page.index("Base and stages side by side"):]
    assert "dpo PPL" in section and "&lt;b&gt;sky&lt;/b&gt;" in section and "<b>sky" not in section


def test_stage_handover_is_exact(chain):
    """The DPO stage's model before its first update equals the SFT stage's final model."""
    config, (sft, dpo) = chain
    from tunelab.runner import prepare_model

    dpo_config = load_recipe(str(dpo.run_dir / "config.yaml"))
    source, task = load_task(dpo_config)
    started, _, _ = prepare_model(dpo_config, task, source)
    finished = load_run_model(sft.run_dir).model
    assert torch.equal(eval_logps(started, task), eval_logps(finished, task))
    trained = load_run_model(dpo.run_dir).model
    assert not torch.equal(eval_logps(trained, task), eval_logps(finished, task))


def test_resume_skips_finished_stages_and_redoes_the_missing_one(chain):
    config, (sft, dpo) = chain
    group = sft.run_dir.parent
    sft_summary = (sft.run_dir / "summary.json").read_bytes()
    before = dpo.summary["metrics"]
    shutil.rmtree(dpo.run_dir)  # killed before the DPO stage began
    again = run_recipe(config, resume=group)
    assert (sft.run_dir / "summary.json").read_bytes() == sft_summary
    assert again[1].run_dir == dpo.run_dir
    assert again[1].summary["metrics"]["reward_margin"] == pytest.approx(before["reward_margin"], abs=1e-6)


@pytest.mark.parametrize(("stages", "variants", "message"), [
    ([{"name": "a", "task": "sft"}, {"name": "a", "task": "dpo"}], {}, "stages.a: the name is used twice"),
    ([{"task": "sft"}], {}, r"stages\[0\].name"),
    ([{"name": "a", "train": {"lrr": 1}}], {}, "stages.a: train.lrr: unknown key"),
    ([{"name": "a"}], {"v": {"train.lr": 1e-3}}, "stages and variants"),
    ([{"name": "a", "stages": []}], {}, "stages.a.stages: not allowed"),
])
def test_bad_stage_lists_are_one_line_errors(stages, variants, message):
    config = validate({"data": {"train": "x.csv"}, "stages": stages, "variants": variants})
    with pytest.raises(TunelabError, match=message):
        check_stages(config)


def test_a_stage_cannot_change_the_carried_adapters(chain, tmp_path):
    config, (sft, _) = chain
    changed = stage_config(config, 1, str(sft.run_dir)).model_copy(deep=True)
    raw = json.loads(changed.model_dump_json())
    raw["adapter"]["rank"] = 8
    from tunelab.runner import prepare_model

    bad = validate(raw)
    source, task = load_task(bad)
    with pytest.raises(TunelabError, match="adapter.rank: a run started from"):
        prepare_model(bad, task, source)


def test_shipped_chain_recipes_validate():
    for name, stages in (("sft_then_dpo", ["sft", "dpo"]), ("sft_dpo_sft", ["sft", "dpo", "sft2"])):
        config = load_recipe(f"configs/{name}.yaml")
        assert [s["name"] for s in config.stages] == stages
        tasks = [stage_config(config, i).task for i in range(len(stages))]
        assert tasks == [n.rstrip("2") for n in stages]


def test_a_dpo_stage_killed_mid_training_resumes_to_the_same_result(chain, tmp_path, monkeypatch):
    """The stage's reference (the SFT model) comes back from the cache on resume; with the cache gone the
    resume refuses instead of taking the moved policy as its reference."""
    _, (_, uninterrupted) = chain
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    raw = chain_recipe(tmp_path)
    raw["stages"][1]["train"]["checkpoint_every"] = 1
    raw.pop("compare_prompts")
    config = validate(raw)
    from tunelab.tasks.dpo import DPOTask

    interrupted_run(monkeypatch, DPOTask, 3, lambda: run_recipe(config))
    (group,) = list((tmp_path / "runs" / "chain").iterdir())
    assert json.loads((group / "dpo" / "checkpoints" / "last" / "position.json").read_text())["step"] == 2
    saved = tmp_path / "saved-cache"
    shutil.copytree(tmp_path / "cache", saved)
    for path in (tmp_path / "cache" / "tokens").glob("dpo-ref-*.npy"):
        path.unlink()
    with pytest.raises(TunelabError, match="restart this run"):
        run_recipe(config, resume=group)
    shutil.rmtree(tmp_path / "cache")
    shutil.copytree(saved, tmp_path / "cache")
    resumed = run_recipe(config, resume=group)[1]
    assert resumed.summary["steps"] == 3
    assert resumed.summary["metrics"]["reward_margin"] == pytest.approx(
        uninterrupted.summary["metrics"]["reward_margin"], abs=1e-6)

"""DPO: the four losses against straightforward formulas, chunked log-probs against full logits, the
reference under disabled() against the un-injected base, bad-row counting, and a tiny LoRA run that learns
held-out preferences."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from tunelab.adapters.inject import inject_adapters
from tunelab.adapters.spec import AdapterConfig
from tunelab.adapters.switch import disabled
from tunelab.data.pairs import BadRows, collate_pairs, encode_pairs, frame_pairs, split_hh
from tunelab.errors import TunelabError
from tunelab.recipes import load_recipe, validate, with_overrides
from tunelab.runner import load_task, prepare_model, run_recipe
from tunelab.train.lm_loss import IGNORE
from tunelab.train.preference_loss import PairLogps, pair_logps, preference_loss, sequence_logps

from .tiny_chat import chat_llama, chat_tokenizer, save_chat_model

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def straightforward(loss: str, c: float, r: float, rc: float, rr: float, nc: int, nr: int,
                    beta: float, eps: float, gamma: float) -> float:
    """The per-pair loss written out from the papers, in Python floats."""
    m = (c - rc) - (r - rr)
    if loss == "sigmoid":
        return -(1 - eps) * log_sigmoid(beta * m) - eps * log_sigmoid(-beta * m)
    if loss == "ipo":
        return (m - 1 / (2 * beta)) ** 2
    if loss == "hinge":
        return max(0.0, 1 - beta * m)
    return -log_sigmoid(beta * (c / nc - r / nr) - gamma)


@pytest.mark.parametrize(("loss", "beta", "eps"), [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.2), ("ipo", 0.3, 0.0),
                                                   ("hinge", 0.5, 0.0), ("simpo", 2.0, 0.0)])
def test_losses_equal_the_formulas(loss, beta, eps):
    g = torch.Generator().manual_seed(0)
    c, r, rc, rr = (-20 * torch.rand(6, generator=g, dtype=torch.float64) for _ in range(4))
    nc, nr = torch.randint(1, 9, (6,), generator=g), torch.randint(1, 9, (6,), generator=g)
    per_pair, rewards = preference_loss(PairLogps(c, r, nc, nr, rc, rr), loss, beta, eps, simpo_gamma=0.7)
    for i in range(6):
        expected = straightforward(loss, *(float(t[i]) for t in (c, r, rc, rr)), int(nc[i]), int(nr[i]),
                                   beta, eps, 0.7)
        assert abs(float(per_pair[i]) - expected) < 1e-6
    if loss != "simpo":
        torch.testing.assert_close(rewards["chosen_reward"], beta * (c - rc))
        torch.testing.assert_close(rewards["reward_margin"], beta * ((c - rc) - (r - rr)))
        assert torch.equal(rewards["reward_accuracy"], ((c - rc) > (r - rr)).double())


def toy_tokens(tokenizer, rows: list[dict], max_length: int = 40):
    pairs, bad = frame_pairs(pd.DataFrame(rows))
    return encode_pairs(tokenizer, pairs, max_length, bad), bad


def test_collated_targets_are_the_completion_and_logps_equal_full_logits():
    tokenizer = chat_tokenizer()
    tokens, _ = toy_tokens(tokenizer, [{"prompt": "what colour is the sky", "chosen": "blue", "rejected": "red"},
                                       {"prompt": "say hi", "chosen": "hello hello", "rejected": "one"}])
    batch = collate_pairs(tokens, np.array([0, 1]), pad_id=0)
    learned = [tokenizer.convert_ids_to_tokens(row[row != IGNORE].tolist()) for row in batch["targets"]]
    assert learned == [["blue", "</s>"], ["hello", "hello", "</s>"], ["red", "</s>"], ["one", "</s>"]]
    model = chat_llama().eval()
    with torch.no_grad():
        sums, counts = sequence_logps(model, batch, chunk=3)  # several chunks
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.float(), -1)
    keep = batch["targets"] != IGNORE
    gathered = logp.gather(-1, batch["targets"].clamp(min=0)[..., None])[..., 0] * keep
    torch.testing.assert_close(sums, gathered.sum(1), atol=1e-5, rtol=1e-5)
    assert counts.tolist() == [2, 3, 2, 2]


def test_reference_under_disabled_equals_the_uninjected_base():
    tokenizer = chat_tokenizer()
    tokens, _ = toy_tokens(tokenizer, [{"prompt": "what colour is the sky", "chosen": "blue", "rejected": "red"},
                                       {"prompt": "what colour is the sun", "chosen": "yellow", "rejected": "green"}])
    batch = collate_pairs(tokens, np.array([0, 1]), pad_id=0)
    base, policy = chat_llama().eval(), chat_llama().eval()
    inject_adapters(policy, AdapterConfig(variant="lora", rank=4, targets=ALL_LINEAR), enforce_budget=False)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora" in name or ".A" in name or ".B" in name:
                param.add_(0.5 * torch.randn_like(param))
        expected, _ = sequence_logps(base, batch, chunk=4)
        adapted, _ = sequence_logps(policy, batch, chunk=4)
        with disabled(policy):
            reference, _ = sequence_logps(policy, batch, chunk=4)
    assert (adapted - expected).abs().max() > 1e-3  # the adapters do change the log-probs
    torch.testing.assert_close(reference, expected, atol=1e-6, rtol=1e-6)


def test_bad_rows_are_counted_with_row_numbers():
    tokenizer = chat_tokenizer()
    long_prompt = " ".join(["tell me now"] * 20)
    rows = [{"prompt": "say hi", "chosen": "hello", "rejected": "one"},
            {"prompt": "say hi", "chosen": "hello", "rejected": "hello"},
            {"prompt": "say hi", "chosen": " ", "rejected": "one"},
            {"prompt": long_prompt, "chosen": "hello", "rejected": "one"},
            {"prompt": "say hi", "chosen": "two", "rejected": "two"}]
    tokens, bad = toy_tokens(tokenizer, rows, max_length=24)
    assert tokens.rows.tolist() == [0]
    assert bad.counts == {"chosen_equals_rejected": 2, "empty_completion": 1, "prompt_too_long": 1}
    assert bad.first["chosen_equals_rejected"] == [1, 4] and bad.first["prompt_too_long"] == [3]
    hh = pd.DataFrame([{"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more\n\nAssistant: yes",
                        "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more\n\nAssistant: no"},
                       {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: ho\n\nAssistant: b"}])
    pairs, hh_bad = frame_pairs(hh)
    assert [p.row for p in pairs] == [0] and hh_bad.counts == {"prompts_differ": 1}
    assert pairs[0].prompt[-1] == {"role": "user", "content": "more"} and pairs[0].chosen[0]["content"] == "yes"
    assert split_hh("\n\nHuman: hi", "\n\nHuman: hi") == "no_assistant_turn"
    assert isinstance(BadRows().describe(), str)


QUESTIONS = {"sky": "blue", "grass": "green", "sun": "yellow", "sea": "blue"}
COLOURS = ["red", "blue", "green", "yellow"]


def write_preferences(folder, repeats: int = 3):
    """Correct colour > each wrong one. Train prompts "what colour is the X", eval prompts reworded
    ("please tell me what colour is the X now": prompts never trained on). Plus three bad training rows."""
    train, evaluation = [], []
    for thing, right in QUESTIONS.items():
        wrong = [c for c in COLOURS if c != right]
        train += [{"prompt": f"what colour is the {thing}", "chosen": right, "rejected": w} for w in wrong] * repeats
        evaluation += [{"prompt": f"please tell me what colour is the {thing} now", "chosen": right, "rejected": w}
                       for w in wrong]
    train += [{"prompt": "say hi", "chosen": "hello", "rejected": "hello"},
              {"prompt": "say hi", "chosen": "", "rejected": "one"},
              {"prompt": " ".join(["tell me now"] * 20), "chosen": "hello", "rejected": "one"}]
    paths = folder / "train.jsonl", folder / "eval.jsonl"
    for path, rows in zip(paths, (train, evaluation), strict=True):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return paths


def test_dpo_run_learns_held_out_preferences(tmp_path):
    model_dir = save_chat_model(tmp_path / "model")
    train, evaluation = write_preferences(tmp_path)
    config = validate({
        "name": "toy_dpo", "task": "dpo", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "max_length": 24},
        "data": {"train": str(train), "eval": str(evaluation)},
        "adapter": {"variant": "lora", "rank": 8, "alpha": 16, "targets": ALL_LINEAR},
        "train": {"lr": 5e-3, "epochs": 6, "batch_size": 8, "precision": "fp32", "warmup_ratio": 0.0,
                  "schedule": "constant", "log_every": 2},
        "preference": {"beta": 0.1},  # 0.92 held-out accuracy on this seed (6 of 12 pairs wrong would fail)
    })
    source, task = load_task(config)
    untrained, _, _ = prepare_model(config, task, source)
    before = task.evaluate(untrained)
    outcome = run_recipe(config)[0]
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["reward_accuracy"] > max(0.5, before["reward_accuracy"])
    assert metrics["reward_margin"] > 0 and metrics["eval_loss"] < before["eval_loss"]
    assert {"chosen_reward", "rejected_reward"} <= set(metrics)
    assert metrics["bad_train_rows"] == 3 and metrics["bad_eval_rows"] == 0
    bad = json.loads((outcome.run_dir / "bad_rows.json").read_text())["train"]
    assert {k: v["count"] for k, v in bad.items()} == {"chosen_equals_rejected": 1, "empty_completion": 1,
                                                       "prompt_too_long": 1}
    logged = [json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("reward_accuracy" in row for row in logged)
    from tunelab.models.artifact import load_run_model

    reloaded = load_run_model(outcome.run_dir).model  # the one run loader: same preferences as at the end
    again = task.evaluate(reloaded)
    assert again["reward_accuracy"] == metrics["reward_accuracy"]
    assert again["reward_margin"] == pytest.approx(metrics["reward_margin"], abs=1e-5)


def test_full_fine_tuning_dpo_takes_the_starting_weights_as_reference(tmp_path):
    """No adapters, no second copy: the reference log-probs are the model's own before its first update."""
    model_dir = save_chat_model(tmp_path / "model")
    train, evaluation = write_preferences(tmp_path, repeats=1)
    config = validate({
        "name": "full_dpo", "task": "dpo", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "max_length": 24},
        "data": {"train": str(train), "eval": str(evaluation)}, "adapter": {"variant": "none"},
        "train": {"lr": 1e-3, "max_steps": 3, "batch_size": 8, "precision": "fp32", "warmup_ratio": 0.0},
    })
    source, task = load_task(config)
    model, breakdown, _ = prepare_model(config, task, source)
    assert breakdown["trainable"] == breakdown["total"]
    task.ensure_reference(model)
    batch = task.collate(np.arange(4), split="eval")
    with torch.no_grad():
        logps = pair_logps(model.eval(), batch, 64)
    assert torch.allclose(logps.chosen, batch["ref_chosen"], atol=1e-4)  # ρ = 0 at the start
    summary = run_recipe(config)[0].summary
    assert summary["metrics"]["reward_margin"] != 0.0  # the policy moved away from its reference


def test_hh_dpo_recipe_validates_with_beta_variants():
    config = load_recipe("configs/hh_dpo.yaml")
    assert config.task == "dpo" and config.model.name == "smollm2-135m"
    assert {label: o["preference.beta"] for label, o in config.variants.items()} == {
        "beta_0.1": 0.1, "beta_0.3": 0.3, "beta_0.5": 0.5}


def test_seed001_trials_recipe_carries_table_2_1():
    config = load_recipe("configs/seed001_dpo_trials.yaml")
    trials = {label: with_overrides(config, o) for label, o in config.variants.items()}
    assert list(trials) == [f"trial{i}" for i in range(1, 6)]
    five = trials["trial5"]
    assert (five.adapter.rank, five.adapter.alpha, five.adapter.targets, five.adapter.dropout) == (
        12, 128.0, ["q_proj", "k_proj"], 0.2)
    assert (five.preference.beta, five.train.lr, five.train.batch_size, five.train.epochs, five.train.grad_accum) == (
        0.2, 5e-6, 6, 2.0, 2)


def test_ultrafeedback_and_orca_pair_schemas():
    """UltraFeedback-binarized rows repeat the prompt inside chosen/rejected conversations; Orca DPO pairs
    name the prompt `input` and give each row a system message."""
    question = "what colour is the sky"
    user = {"role": "user", "content": question}
    ultra = pd.DataFrame([{"prompt": question, "prompt_id": "x1", "score_chosen": 9.0, "score_rejected": 2.0,
                           "chosen": [user, {"role": "assistant", "content": "blue"}],
                           "rejected": [user, {"role": "assistant", "content": "red"}]}])
    (pair,), bad = frame_pairs(ultra)
    assert bad.total == 0 and pair.prompt == [{"role": "user", "content": question}]
    assert pair.chosen == [{"role": "assistant", "content": "blue"}] and pair.rejected[0]["content"] == "red"
    orca = pd.DataFrame([{"system": "be brief", "input": question, "chosen": "blue", "rejected": "red"},
                         {"system": "", "input": "say hi", "chosen": "hello", "rejected": "hello"}])
    pairs, bad = frame_pairs(orca, columns={"prompt": "input"})
    assert [m["role"] for m in pairs[0].prompt] == ["system", "user"] and pairs[0].prompt[0]["content"] == "be brief"
    assert bad.as_dict() == {"chosen_equals_rejected": {"count": 1, "first_rows": [1]}}
    with pytest.raises(TunelabError, match="data.columns: 'question' not in"):
        frame_pairs(orca, columns={"prompt": "question"})


def test_two_dpo_trials_that_learn_the_same_thing_are_flagged(tmp_path):
    """The puzzle of two DPO trials with identical scores: a setting that changes nothing (here a larger
    eval batch) gives the same margins on every pair, and the comparison says so instead of ranking them;
    a trial that does differ (β 0.5) is tested pair by pair against the best."""
    model_dir = save_chat_model(tmp_path / "model")
    train, evaluation = write_preferences(tmp_path, repeats=1)
    config = validate({
        "name": "trials", "task": "dpo", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "max_length": 24},
        "data": {"train": str(train), "eval": str(evaluation)},
        "adapter": {"variant": "lora", "rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
        "train": {"lr": 5e-3, "epochs": 2, "batch_size": 8, "precision": "fp32", "warmup_ratio": 0.0},
        "variants": {"a": {}, "same_as_a": {"eval.batch_size": 3}, "beta_05": {"preference.beta": 0.5}},
    })
    outcomes = run_recipe(config)
    assert all((o.run_dir / "pairs.jsonl").is_file() for o in outcomes)
    from tunelab.report.compare import write_comparison

    write_comparison(outcomes, tmp_path)
    table = (tmp_path / "comparison.md").read_text()
    assert "runs a and same_as_a made identical predictions" in table
    assert "bootstrap" in table  # the rows were tested per pair, not ranked by value alone


def test_reference_of_the_base_is_taken_only_for_the_pairs_trained_on(tmp_path):
    """Two steps of 4 pairs out of 24: the base's log-probs are cached for exactly those 8 train pairs, and
    equal what one pass over every pair gives; pairs not asked for yet cannot be collated."""
    model_dir = save_chat_model(tmp_path / "model")
    train, evaluation = write_preferences(tmp_path, repeats=2)
    config = validate({
        "name": "lazy_ref", "task": "dpo", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "max_length": 24},
        "data": {"train": str(train), "eval": str(evaluation)},
        "adapter": {"variant": "lora", "rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
        "train": {"lr": 1e-3, "max_steps": 2, "batch_size": 4, "precision": "fp32", "warmup_ratio": 0.0},
    })
    run_recipe(config)
    source, task = load_task(config)
    model, _, _ = prepare_model(config, task, source)
    stored = np.load(task.reference_path("train"))
    assert stored.shape == (24, 2) and int(np.isfinite(stored[:, 0]).sum()) == 8
    missing = np.flatnonzero(np.isnan(stored[:, 0]))
    task.stored_reference("train")
    with pytest.raises(RuntimeError, match="ensure_reference"):
        task.collate(missing[:2])
    task.ensure_reference(model, 0, "train", missing[:3])
    lazy = task.reference["train"]
    assert int(np.isfinite(lazy[:, 0]).sum()) == 11
    full = task.reference_logps(model, "train", np.arange(24))
    known = np.isfinite(lazy[:, 0])
    np.testing.assert_allclose(lazy[known], full[known], atol=1e-6)

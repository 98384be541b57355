"""GRPO: advantages and the clipped objective against the formulas, rewards loaded and checked, and tiny
runs that raise the reward, reuse rollouts for several passes, and resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.interrupt import interrupted_run
from tunelab.errors import TunelabError
from tunelab.recipes import validate
from tunelab.rewards.builtin import final_number, first_yes_no, length_penalty, numeric_answer, yes_no
from tunelab.rewards.loading import load_rewards, score
from tunelab.runner import run_recipe
from tunelab.tasks.grpo import GRPOTask, yes_no_confusion
from tunelab.train.grpo_loss import aggregate, group_advantages, token_losses

from .tiny_chat import save_chat_model

TOY = [("what colour is the sky", "blue"), ("what colour is the grass", "green")]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
REWARD_FILE = '''
def says_answer(prompts, completions, answer, **_):
    """Share of the completion's words that are the answer word (the toy task's dense reward)."""
    out = []
    for text, gold in zip(completions, answer):
        words = text.split()
        out.append(sum(w == gold for w in words) / max(1, len(words)))
    return out


def broken(prompts, completions, answer, **_):
    return [1.0 / (len(c) - len(c)) if a == "green" else 0.0 for c, a in zip(completions, answer)]


def too_few(prompts, completions, **_):
    return [0.0]
'''


def test_group_advantages_normalise_within_each_prompt():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])  # two prompts, G=4
    scaled = group_advantages(rewards, 4, scale=True)
    first = torch.tensor([0.75, -0.25, -0.25, -0.25])
    torch.testing.assert_close(scaled[:4], first / (torch.tensor([1.0, 0, 0, 0]).std() + 1e-4))
    torch.testing.assert_close(scaled[4:], torch.zeros(4))  # equal rewards: no signal, no NaN
    torch.testing.assert_close(group_advantages(rewards, 4, scale=False)[:4], first)  # Dr. GRPO


def test_clip_binds_only_beyond_epsilon_in_the_direction_of_the_advantage():
    old = torch.zeros(1, 4)
    logps = torch.log(torch.tensor([[1.1, 1.5, 0.5, 0.9]]))  # ratios 1.1, 1.5, 0.5, 0.9
    loss, parts = token_losses(logps, old, torch.tensor([1.0]), 0.2, 0.2, 0.0, None)
    torch.testing.assert_close(loss, -torch.tensor([[1.1, 1.2, 0.5, 0.9]]))  # A > 0: only the 1.5 is clipped
    assert parts["clipped"].tolist() == [[0.0, 1.0, 0.0, 0.0]]
    loss, parts = token_losses(logps, old, torch.tensor([-1.0]), 0.2, 0.2, 0.0, None)
    torch.testing.assert_close(loss, torch.tensor([[1.1, 1.5, 0.8, 0.9]]))  # A < 0: only the 0.5 is clipped
    kl_loss, kl_parts = token_losses(logps, old, torch.tensor([0.0]), 0.2, 0.2, 0.5, ref_logps=logps.clone())
    torch.testing.assert_close(kl_parts["kl"], torch.zeros(1, 4))  # KL of a policy to itself
    ref = torch.zeros(1, 4)
    d = ref - logps
    torch.testing.assert_close(token_losses(logps, old, torch.tensor([0.0]), 0.2, 0.2, 0.5, ref)[1]["kl"],
                               torch.exp(d) - d - 1)


def test_sequence_and_token_aggregation_weigh_long_completions_differently():
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert float(aggregate(values, mask, "sequence")) == pytest.approx((1.0 + 3.0) / 2)
    assert float(aggregate(values, mask, "token")) == pytest.approx(7.0 / 5)


def test_builtin_rewards():
    assert first_yes_no("No, because yes is wrong") == "no" and first_yes_no("maybe") is None
    assert yes_no([""] * 3, ["Yes.", "no", "unsure"], ["Yes", "Yes", "No"]) == [1.0, 0.0, 0.0]
    assert final_number("so 3 + 4 = 7 #### 1,204") == 1204.0 and final_number("it is 12.5 kg") == 12.5
    assert numeric_answer([""] * 2, ["The answer is 72.", "72 or 73"], ["... #### 72", "#### 72"]) == [1.0, 0.0]
    assert length_penalty([""] * 2, ["short answer", " ".join(["w"] * 30)], max_words=10, per_word=0.05) == [
        0.0, pytest.approx(-1.0)]


def reward_specs(tmp_path: Path, *names: str):
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    return validate({"task": "grpo", "data": {"train": "x.jsonl"},
                     "grpo": {"rewards": [{"name": f"{path}:{n}"} for n in names]}}).grpo.rewards


def test_user_rewards_from_a_file_and_their_failures_name_function_and_row(tmp_path):
    rewards = load_rewards(reward_specs(tmp_path, "says_answer"))
    total, means = score(rewards, ["q", "q"], ["blue blue", "red blue"], {"answer": ["blue", "blue"]}, [7, 7])
    assert total.tolist() == [1.0, 0.5] and means == {f"reward/{rewards[0].label}": 0.75}
    broken = load_rewards(reward_specs(tmp_path, "broken"))
    with pytest.raises(TunelabError, match=r"broken raised ZeroDivisionError.*example row 12"):
        score(broken, ["a", "b"], ["x", "y"], {"answer": ["blue", "green"]}, [11, 12])
    with pytest.raises(TunelabError, match="too_few returned 1 values for 2 completions"):
        score(load_rewards(reward_specs(tmp_path, "too_few")), ["a", "b"], ["x", "y"], {}, [0, 1])
    with pytest.raises(TunelabError, match="has no function 'missing'"):
        load_rewards(reward_specs(tmp_path, "missing"))
    with pytest.raises(TunelabError, match="neither a built-in reward"):
        load_rewards(validate({"task": "grpo", "data": {"train": "x"},
                               "grpo": {"rewards": [{"name": "nope"}]}}).grpo.rewards)
    with pytest.raises(TunelabError, match="grpo.rewards.0.args: colour not accepted"):
        load_rewards(validate({"task": "grpo", "data": {"train": "x"},
                               "grpo": {"rewards": [{"name": "format_regex", "args": {"colour": 1}}]}}).grpo.rewards)


def test_yes_no_confusion_counts_unparsed_answers_apart():
    texts = ["Yes.", "Yes", "No", "No", "I cannot say"]
    assert yes_no_confusion(texts, ["Yes", "No", "No", "Yes", "Yes"]) == {
        "TP": 1, "FP": 1, "TN": 1, "FN": 1, "unparsed": 1}


def toy_config(tmp_path: Path, **train) -> dict:
    model_dir = tmp_path / "model"
    if not model_dir.exists():
        save_chat_model(model_dir)
    rows = [{"prompt": q, "answer": a} for q, a in TOY]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "my_rewards.py").write_text(REWARD_FILE)
    return {
        "name": "toy_grpo", "task": "grpo", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir), "max_length": 32},
        "data": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "eval.jsonl")},
        "adapter": {"variant": "lora", "rank": 8, "alpha": 16, "targets": ALL_LINEAR},
        "train": {"lr": 5e-3, "max_steps": 30, "batch_size": 4, "precision": "fp32", "warmup_ratio": 0.0,
                  "schedule": "constant", "log_every": 1, **train},
        "eval": {"batch_size": 4},
        "grpo": {"num_generations": 8, "max_new_tokens": 4, "temperature": 1.5, "answer": "exact",
                 "rewards": [{"name": f"{tmp_path / 'my_rewards.py'}:says_answer"}]},
    }


def test_grpo_run_raises_the_reward_and_reports_before_and_after(tmp_path):
    outcome = run_recipe(validate(toy_config(tmp_path)))[0]
    metrics = json.loads((outcome.run_dir / "summary.json").read_text())["metrics"]
    # 0.125 -> 1.0 on this seed; saying one colour to every question would score 0.5
    assert metrics["eval_reward"] > max(0.75, metrics["eval_reward_before"] + 0.4)
    assert {"accuracy_before", "accuracy_after", "generation_share", "generation_tokens_per_s"} <= set(metrics)
    logged = [json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "reward" in row]
    assert len(steps) == 30 and all("reward_std" in row and "completion_length" in row for row in steps)
    assert np.mean([r["reward"] for r in steps[-3:]]) > np.mean([r["reward"] for r in steps[:3]])
    lines = (outcome.run_dir / "completions.jsonl").read_text().splitlines()
    assert len(lines) == len(TOY) and {"prompt", "completion", "reward", "correct"} <= set(json.loads(lines[0]))


def test_several_passes_reuse_one_set_of_rollouts(tmp_path, monkeypatch):
    made = []
    original = GRPOTask.rollout_batch

    def counting(self, model, index, round_):
        made.append(round_)
        return original(self, model, index, round_)

    monkeypatch.setattr(GRPOTask, "rollout_batch", counting)
    config = toy_config(tmp_path, max_steps=6)
    config["grpo"]["iterations"] = 3
    outcome = run_recipe(validate(config))[0]
    assert made == [0, 1]  # 6 steps, 3 passes per rollout set
    logged = [json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    clipped = [row["clipped"] for row in logged if "clipped" in row]
    assert clipped[0] == 0.0 and max(clipped[1:3]) > 0  # later passes move the ratio away from 1
    with pytest.raises(TunelabError, match="multiple of it"):
        config["train"]["checkpoint_every"] = 2
        run_recipe(validate(config))


TIMING = ("generation_seconds", "generation_share", "generation_tokens_per_s")


def test_grpo_resume_replays_the_same_rollouts_and_weights(tmp_path, monkeypatch, one_thread):
    config = toy_config(tmp_path, max_steps=6, checkpoint_every=2)
    straight = run_recipe(validate({**config, "name": "straight"}))[0]
    interrupted_run(monkeypatch, GRPOTask, 5, lambda: run_recipe(validate({**config, "name": "cut"})))
    (run_dir,) = list((tmp_path / "runs" / "cut").iterdir())
    assert json.loads((run_dir / "checkpoints" / "last" / "position.json").read_text())["step"] == 4
    resumed = run_recipe(validate({**config, "name": "cut"}), resume=run_dir)[0]
    untimed = [{k: v for k, v in o.summary["metrics"].items() if k not in TIMING} for o in (straight, resumed)]
    assert untimed[0] == untimed[1]
    ours, theirs = (load_file(str(d / "artifact" / "adapter_model.safetensors")) for d in (run_dir, straight.run_dir))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    rewards = [[json.loads(line).get("reward") for line in o.run_dir.joinpath("metrics.jsonl").read_text().splitlines()]
               for o in (straight, resumed)]
    assert rewards[0] == rewards[1]


def test_causal_judgment_split_is_stratified_and_seeded():
    from tests.tasks.tiny_chat import chat_tokenizer
    from tunelab.config import DataConfig
    from tunelab.data.prompt_rows import load_prompt_rows

    rows, _ = load_prompt_rows(DataConfig(dataset="causal_judgment"), chat_tokenizer(), 100_000, need_answer=True)
    answers = rows["eval"].columns["answer"]
    assert len(rows["train"]) == 150 and len(answers) == 40
    assert abs(answers.count("Yes") - answers.count("No")) <= 2  # 99 Yes / 91 No overall
    again, _ = load_prompt_rows(DataConfig(dataset="causal_judgment"), chat_tokenizer(), 100_000, True)
    other, _ = load_prompt_rows(DataConfig(dataset="causal_judgment", split_seed=1), chat_tokenizer(), 100_000, True)
    assert again["eval"].columns["id"] == rows["eval"].columns["id"] != other["eval"].columns["id"]


def test_bad_prompt_rows_are_counted_and_settings_that_cannot_work_are_refused(tmp_path):
    config = toy_config(tmp_path)
    rows = [{"prompt": "what colour is the sky", "answer": "blue"}, {"prompt": "", "answer": "x"},
            {"prompt": "say hi", "answer": None}, {"prompt": " ".join(["please"] * 40), "answer": "a"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from tests.tasks.tiny_chat import chat_tokenizer

    task = GRPOTask(validate(config))
    task.prepare_data(chat_tokenizer(), "tiny", None)
    assert task.train_size == 1
    assert task.bad["train"].as_dict() == {"empty_prompt": {"count": 1, "first_rows": [1]},
                                           "missing_answer": {"count": 1, "first_rows": [2]},
                                           "prompt_too_long": {"count": 1, "first_rows": [3]}}
    refused = [({"train": {**config["train"], "gradient_checkpointing": True}}, "gradient checkpointing"),
               ({"grpo": {**config["grpo"], "beta": 0.1}, "adapter": {"variant": "none"}}, "frozen base"),
               ({"model": {**config["model"], "max_length": 8}, "grpo": {**config["grpo"], "max_new_tokens": 8}},
                "leaves no room")]
    for change, message in refused:
        with pytest.raises(TunelabError, match=message):
            task = GRPOTask(validate({**config, **change}))
            task.prepare_data(chat_tokenizer(), "tiny", None)


def test_a_broken_reward_stops_the_cli_with_one_line(tmp_path):
    import subprocess
    import sys

    import yaml

    config = toy_config(tmp_path)
    config["grpo"]["rewards"] = [{"name": f"{tmp_path / 'my_rewards.py'}:broken"}]
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "tunelab", "run", str(recipe)], capture_output=True, text=True)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("tunelab: error")]
    assert len(errors) == 1 and "broken raised ZeroDivisionError" in errors[0] and "example row" in errors[0]
    assert "Traceback" not in out.stderr


def test_tests_pass_reward_runs_each_answer_against_its_tests_in_the_sandbox():
    from tunelab.rewards.code import tests_pass

    prompt = 'def add(a, b):\n    """Return a + b."""\n'
    test = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    replies = ["    return a + b\n",  # continues the signature
               "Here you go:\n```python\ndef add(a, b):\n    return b + a\n```\nDone.",  # a fenced chat answer
               "    return a - b\n",  # wrong
               "    while True:\n        pass\n",  # never ends: killed at the wall-clock limit
               "```python\ndef add(a, b)\n    return a + b\n```"]  # syntax error
    rewards = tests_pass([prompt] * 5, replies, [test] * 5, ["add"] * 5, wall_s=2.0)
    assert rewards == [1.0, 1.0, 0.0, 0.0, 0.0]

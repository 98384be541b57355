"""SFT: exact assistant-only masks, packing isolation, chunked loss = reference loss, EOS learned,
adapter reload gives identical generations, Dolly's schema end to end."""

import numpy as np
import pytest
import torch

from tunelab.data.chat_tokens import assistant_mask, encode_conversations
from tunelab.errors import TunelabError
from tunelab.eval.generation import GenerationSettings, generate
from tunelab.recipes import load_recipe, validate
from tunelab.runner import run_recipe
from tunelab.train.lm_loss import IGNORE, mean_nll
from tunelab.train.packing import collate_packed, collate_padded, pack_examples

from .tiny_chat import QA, chat_llama, chat_tokenizer, save_chat_model, write_toy_sft

CONVERSATION = [{"role": "user", "content": "what colour is the sky"}, {"role": "assistant", "content": "blue"},
                {"role": "user", "content": "and the grass"}, {"role": "assistant", "content": "green"}]


@pytest.mark.parametrize("with_template", [True, False])
def test_assistant_mask_is_exact(with_template):
    tokenizer = chat_tokenizer(with_template)
    ids, mask = assistant_mask(tokenizer, CONVERSATION)
    learned = tokenizer.convert_ids_to_tokens([i for i, m in zip(ids, mask, strict=True) if m])
    # exactly the two answers, each followed by its end-of-turn EOS (and nothing of the user turns)
    assert [t for t in learned if t not in ("\n",)] == ["blue", "</s>", "green", "</s>"]


def test_targets_are_shifted_and_truncation_drops_answerless_rows():
    tokenizer = chat_tokenizer()
    ids, targets, dropped = encode_conversations(tokenizer, [CONVERSATION[:2]], max_length=64)
    (row,), (target,) = ids, targets
    learn = np.nonzero(target != IGNORE)[0]
    assert tokenizer.convert_ids_to_tokens(target[learn].tolist()) == ["blue", "</s>"]
    assert (row[learn + 1] == target[learn]).all()  # target t is token t+1
    _, _, dropped = encode_conversations(tokenizer, [CONVERSATION[:2], CONVERSATION[:2]], max_length=4)
    assert dropped == [0, 1]


def test_smollm2_chat_template_masks(smollm2_tokenizer):
    ids, mask = assistant_mask(smollm2_tokenizer, CONVERSATION)
    text = smollm2_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert text == "blue<|im_end|>\ngreen<|im_end|>\n"


def test_packing_does_not_attend_across_examples():
    model = chat_llama().eval()
    rng = np.random.default_rng(0)
    ids = [rng.integers(5, 30, size=n) for n in (7, 5, 9)]
    targets = [np.where(rng.random(len(x)) > 0.5, rng.integers(5, 30, size=len(x)), IGNORE) for x in ids]
    packed = collate_packed([[0, 1, 2]], ids, targets, pad_id=0)
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers does not look for packed rows
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        start = 0
        for x in ids:
            alone = model(input_ids=torch.as_tensor(x)[None]).logits[0]
            torch.testing.assert_close(logits[start:start + len(x)], alone, atol=1e-5, rtol=1e-4)
            start += len(x)


def test_pack_examples_respects_capacity():
    lengths = np.array([60, 50, 40, 30, 20, 10, 5])
    rows = pack_examples(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(7))
    assert all(lengths[row].sum() <= 64 for row in rows) and len(rows) == 4


def test_chunked_loss_equals_reference_cross_entropy():
    model = chat_llama()
    rng = np.random.default_rng(1)
    ids = [rng.integers(5, 30, size=n) for n in (12, 6)]
    targets = [np.append(x[1:], IGNORE) for x in ids]
    batch = collate_padded(np.array([0, 1]), ids, targets, pad_id=0)
    ours = mean_nll(model, batch, chunk=5)  # several chunks
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    reference = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    ours.backward()  # gradients flow through the checkpointed chunks
    assert model.lm_head.weight.grad is not None


@pytest.fixture(scope="module")
def trained_sft(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft")
    model_dir = save_chat_model(folder / "model")
    data = write_toy_sft(folder / "toy.jsonl", repeats=12)
    config = validate({
        "name": "toy_sft", "task": "sft", "output_dir": str(folder / "runs"),
        "model": {"name": str(model_dir), "max_length": 32},
        "data": {"train": str(data), "eval": str(data)},
        "adapter": {"variant": "lora", "rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                          "gate_proj", "up_proj", "down_proj"]},
        "train": {"lr": 1e-2, "epochs": 12, "batch_size": 8, "packing": True, "precision": "fp32",
                  "warmup_ratio": 0.0, "schedule": "constant", "log_every": 5},
        "eval": {"generate": 4, "max_new_tokens": 6},
    })
    return config, run_recipe(config)[0], model_dir


def test_sft_learns_answers_and_stops_at_eos(trained_sft):
    _, outcome, _ = trained_sft
    metrics = outcome.summary["metrics"]
    assert metrics["eval_loss"] < 0.1 and metrics["token_accuracy"] > 0.97
    generations = [line for line in (outcome.run_dir / "generations.jsonl").read_text().splitlines() if line]
    assert len(generations) == 4
    import json

    for row in map(json.loads, generations):
        assert row["generation"].strip() == row["reference"]  # learned the answer, then stopped (EOS)


def test_reloaded_sft_adapter_generates_identically(trained_sft):
    from tunelab.assets.models import resolve_model
    from tunelab.models.artifact import load_run_model
    from tunelab.models.causal_lm import load_causal_lm

    config, outcome, model_dir = trained_sft
    base = load_causal_lm(resolve_model(str(model_dir)).path, config.model)
    tokenizer = chat_tokenizer()
    settings = GenerationSettings(max_new_tokens=6)
    prompts = [q for q, _ in QA]
    before = generate(base, tokenizer, prompts, settings)
    loaded = load_run_model(outcome.run_dir)
    after = generate(loaded.model, loaded.tokenizer, prompts, settings)
    assert [a.strip() for a in after] == [a for _, a in QA] and before != after


def test_dolly_schema_recipe_on_a_local_file(tmp_path):
    model_dir = save_chat_model(tmp_path / "model")
    data = write_toy_sft(tmp_path / "dolly.jsonl", repeats=2, schema="dolly")
    config = load_recipe("configs/dolly_sft.yaml", [f"data.train={data}", f"model.name={model_dir}",
                                                    "train.max_steps=2", "eval.generate=2", "eval.max_new_tokens=4",
                                                    f"output_dir={tmp_path / 'runs'}"])
    outcome = run_recipe(config)[0]
    assert outcome.summary["task"] == "sft" and outcome.summary["steps"] == 2
    assert np.isfinite(outcome.summary["metrics"]["eval_loss"])


def test_missing_sft_column_is_one_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "hi"}\n' * 4)
    config = validate({"task": "sft", "data": {"train": str(data), "format": "prompt_completion"},
                       "model": {"name": str(save_chat_model(tmp_path / "m"))}, "output_dir": str(tmp_path)})
    with pytest.raises(TunelabError, match="column 'prompt' not in"):
        run_recipe(config)


def test_seed001_five_trials_run_and_compare(tmp_path):
    from tunelab.report.compare import write_comparison

    model_dir = save_chat_model(tmp_path / "model")
    data = write_toy_sft(tmp_path / "dolly.jsonl", repeats=2, schema="dolly")
    config = load_recipe("configs/dolly_sft_trials.yaml", [f"data.train={data}", f"model.name={model_dir}",
                                                           "train.max_steps=1", "eval.generate=1",
                                                           "eval.max_new_tokens=2", f"output_dir={tmp_path / 'runs'}"])
    outcomes = run_recipe(config)
    assert [o.label for o in outcomes] == ["trial1", "trial2", "trial3", "trial4", "trial5"]
    ranks = [o.summary["trainable_params"] for o in outcomes]
    assert ranks[3] == max(ranks) and ranks[0] < ranks[1]  # r64 on five modules is the largest; r8 q,v < r16 q,k,v,o
    write_comparison(outcomes, outcomes[0].run_dir.parent)
    table = (outcomes[0].run_dir.parent / "comparison.md").read_text()
    assert all(f"trial{i}" in table for i in range(1, 6)) and "eval_loss" in table


def test_encoded_conversations_are_cached(tmp_path, monkeypatch):
    import tunelab.data.chat_tokens as chat_tokens

    tokenizer = chat_tokenizer()
    conversations = [CONVERSATION, CONVERSATION[:2]]
    first = encode_conversations(tokenizer, conversations, 64, tmp_path, "tiny")
    monkeypatch.setattr(chat_tokens, "assistant_mask", lambda *a: pytest.fail("cache not used"))
    second = encode_conversations(tokenizer, conversations, 64, tmp_path, "tiny")
    assert second[2] == first[2] == []
    monkeypatch.undo()
    short = encode_conversations(tokenizer, conversations, 4, tmp_path, "tiny")  # the cache keeps dropped rows
    assert encode_conversations(tokenizer, conversations, 4, tmp_path, "tiny")[2] == short[2] == [0, 1]
    for a, b in zip(first[0] + first[1], second[0] + second[1], strict=True):
        assert np.array_equal(a, b) and b.dtype == np.int64


def test_eval_run_dir_spec_loads_through_the_run_loader(trained_sft):
    import torch

    from tunelab.eval.model_specs import load_spec, parse_spec, resolve_spec

    _, outcome, _ = trained_sft
    spec = parse_spec(f"sft={outcome.run_dir}")
    model, tokenizer = load_spec(spec, resolve_spec(spec), torch.device("cpu"), torch.float32)
    answers = generate(model, tokenizer, [q for q, _ in QA], GenerationSettings(max_new_tokens=6))
    assert [a.strip() for a in answers] == [a for _, a in QA]

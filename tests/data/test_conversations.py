"""SFT rows -> conversations: each schema on a tiny frame gives exactly the expected messages; auto
detection picks the schema from the columns (with data.columns renames); errors are one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tunelab.assets.datasets import resolve_dataset
from tunelab.config import DataConfig
from tunelab.data.conversations import detect_format, hh_messages, read_conversations, to_conversations
from tunelab.data.tables import load_frames
from tunelab.errors import TunelabError


def cfg(**fields) -> DataConfig:
    return DataConfig(train="unused.jsonl", **fields)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def test_hh_dialogue_becomes_alternating_turns_plus_the_chosen_reply():
    frame = pd.DataFrame({"prompt": ["\n\nHuman: hi there\n\nAssistant: hello!\n\nHuman: how are you?\n\nAssistant:"],
                          "completion": ["  fine, thanks  "]})
    assert to_conversations(frame, cfg(), "hh") == [
        [user("hi there"), assistant("hello!"), user("how are you?"), assistant("fine, thanks")]]
    assert hh_messages("Human: no leading blank line\n\nAssistant:") == [user("no leading blank line")]


def test_messages_lists_and_arrays_with_a_system_turn():
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": 4}]
    frame = pd.DataFrame({"messages": [chat, np.array(chat, dtype=object)]})  # JSON lists, Parquet arrays
    expected = [{"role": "system", "content": "be brief"}, user("2+2?"), assistant("4")]
    assert to_conversations(frame, cfg(system="be brief"), "messages") == [expected, expected]


def test_instruction_with_and_without_context():
    frame = pd.DataFrame({"instruction": ["Sum these", "Say hi"], "context": ["1 and 2", "  "],
                          "response": ["3", "hi"]})
    assert to_conversations(frame, cfg(), "instruction") == [
        [user("Sum these\n\n1 and 2"), assistant("3")], [user("Say hi"), assistant("hi")]]


def test_pairs_use_the_prompt_template_and_prompt_completion_is_verbatim():
    pairs = pd.DataFrame({"en": ["hello"], "es": ["hola"]})
    config = cfg(columns={"source": "en", "target": "es"}, prompt_template="To Spanish: {source} (please)")
    assert to_conversations(pairs, config, "pairs") == [[user("To Spanish: hello (please)"), assistant("hola")]]
    qa = pd.DataFrame({"question": ["1+1?"], "answer": ["2"]})
    assert to_conversations(qa, cfg(), "prompt_completion", {"prompt": "question", "completion": "answer"}) == [
        [user("1+1?"), assistant("2")]]


@pytest.mark.parametrize("columns,renames,expected", [
    (["messages", "prompt"], {}, "messages"),  # UltraChat rows carry both: messages wins
    (["instruction", "context", "response"], {}, "instruction"),
    (["prompt", "completion"], {}, "prompt_completion"),
    (["source", "target"], {}, "pairs"),
    (["question", "answer"], {"prompt": "question", "completion": "answer"}, "prompt_completion"),
])
def test_auto_detection_from_columns(columns, renames, expected):
    frame = pd.DataFrame({name: ["x"] for name in columns})
    assert detect_format(frame, cfg(columns=renames), {}) == expected


def test_explicit_format_wins_and_undetectable_columns_are_one_line():
    frame = pd.DataFrame({"prompt": ["x"], "completion": ["y"]})
    assert detect_format(frame, cfg(format="hh"), {}) == "hh"  # hh is never guessed: same columns as prompt_completion
    with pytest.raises(TunelabError, match=r"data.format: cannot tell the SFT schema from columns \['a', 'b'\]"):
        detect_format(pd.DataFrame({"a": [1], "b": [2]}), cfg(), {})


def test_a_missing_column_is_one_line_and_bad_rows_are_counted_by_kind():
    with pytest.raises(TunelabError, match="column 'response' not in data"):
        to_conversations(pd.DataFrame({"instruction": ["x"]}), cfg(), "instruction")
    frame = pd.DataFrame({"prompt": ["a", "b", "c", "d"], "completion": ["fine", None, "  ", "also fine"]})
    conversations, rows, bad = read_conversations(frame, cfg(), "prompt_completion")
    assert rows == [0, 3] and [c[-1]["content"] for c in conversations] == ["fine", "also fine"]
    assert bad.as_dict() == {"missing_field": {"count": 1, "first_rows": [1]},
                             "empty_answer": {"count": 1, "first_rows": [2]}}
    chats = pd.DataFrame({"messages": ["not a list", [{"role": "user", "content": "hi"}],
                                       [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})
    conversations, rows, bad = read_conversations(chats, cfg(), "messages")
    assert rows == [2] and set(bad.counts) == {"malformed_messages", "no_assistant_turn"}


def test_vendored_hh_slice_ends_each_dialogue_with_its_chosen_reply():
    spec = resolve_dataset("hh_helpful_small")
    config = DataConfig(dataset="hh_helpful_small")
    frames = load_frames(config)
    conversations = to_conversations(frames.train, config, spec.sft_format, dict(spec.columns))
    assert len(conversations) == len(frames.train) == 350
    for conversation, reply in zip(conversations, frames.train["chosen_response"], strict=True):
        assert conversation[0]["role"] == "user" and conversation[-1] == assistant(reply.strip())
        roles = [m["role"] for m in conversation]
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))  # turns alternate


def test_ultrachat_recipe_trains_on_messages_rows(tmp_path):
    """configs/ultrachat_sft.yaml reads UltraChat rows (prompt, prompt_id, messages) as multi-turn chats."""
    import json

    from tunelab.recipes import load_recipe

    chats = [[user(f"q{i}"), assistant(f"a{i}"), user(f"more {i}?"), assistant(f"b{i}")] for i in range(20)]
    rows = tmp_path / "ultrachat.jsonl"
    rows.write_text("".join(json.dumps({"prompt": c[0]["content"], "prompt_id": str(i), "messages": c}) + "\n"
                            for i, c in enumerate(chats)))
    data = load_recipe("configs/ultrachat_sft.yaml", [f"data.train={rows}"]).data
    frames = load_frames(data)
    assert (len(frames.train), len(frames.eval)) == (19, 1)  # eval_fraction 0.05
    got = to_conversations(frames.train, data, detect_format(frames.train, data, {}))
    got += to_conversations(frames.eval, data, "messages")
    assert sorted(got, key=lambda c: int(c[0]["content"][1:])) == chats
    with pytest.raises(TunelabError, match="^data.train: file not found: ultrachat_train_sft.jsonl$"):
        load_frames(load_recipe("configs/ultrachat_sft.yaml", []).data)

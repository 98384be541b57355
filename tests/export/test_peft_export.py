"""`--peft`: PEFT's own loader on the same base gives the tunelab model's logits; unsupported runs refused."""

from __future__ import annotations

import json

import peft
import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.export.load_run import load_run
from tunelab.export.peft_format import export_run_peft

from .tiny_runs import IDS, build_run

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def fresh_base(task: str, base_dir, num_labels: int = 3) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "sft":
        return AutoModelForCausalLM.from_pretrained(base_dir)
    return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)


@pytest.mark.parametrize("variant", ["lora", "dora"])
@pytest.mark.parametrize("task", ["sft", "classification"])
def test_peft_loads_with_identical_logits(tmp_path, task, variant):
    run_dir = build_run(tmp_path, task, variant)
    out = export_run_peft(run_dir, tmp_path / "peft")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_dora"] is (variant == "dora")
    assert config["base_model_name_or_path"] == str((tmp_path / "base").resolve())
    ours = load_run(run_dir).model
    theirs = peft.PeftModel.from_pretrained(fresh_base(task, tmp_path / "base"), out).eval()
    plain = fresh_base(task, tmp_path / "base").eval()
    with torch.no_grad():
        expected = ours(IDS).logits
        assert torch.allclose(theirs(IDS).logits, expected, atol=1e-5, rtol=0)
        assert (plain(IDS).logits - expected).abs().max() > 1e-2  # the comparison is not base vs base


@pytest.mark.parametrize("task,variant,needle", [
    ("sft", "dora_scaled", "PEFT cannot express"),
    ("classification", "ddora", "PEFT cannot express"),
    ("sft", "none", "full fine-tune"),
])
def test_runs_peft_cannot_express_are_refused(tmp_path, task, variant, needle):
    run_dir = build_run(tmp_path, task, variant)
    with pytest.raises(TunelabError, match=needle) as error:
        export_run_peft(run_dir, tmp_path / "peft")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "peft").exists()

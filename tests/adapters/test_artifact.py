"""Save, reload, refuse the wrong base, overwrite atomically."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.adapters import AdapterConfig, LayerRule, inject_adapters, load_adapter, save_adapter
from tunelab.errors import TunelabError

from .tiny import tiny_bert, train_steps

IDS = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(4))
BASE = {"name": "tiny-bert", "revision": "r1", "fingerprint": "fp-aaaa"}


def trained(variant: str) -> tuple[torch.nn.Module, AdapterConfig]:
    cfg = AdapterConfig(variant=variant, rank=4, trainable_extra=["classifier"],
                        layers=[LayerRule(pattern=r"layer\.1\.", rank=2)])
    model = tiny_bert()
    inject_adapters(model, cfg)
    train_steps(model, IDS)
    return model, cfg


@pytest.mark.parametrize("variant", ["lora", "dora", "dora_scaled", "ddora"])
def test_reload_gives_identical_logits(variant: str, tmp_path) -> None:
    model, cfg = trained(variant)
    assert model.bert.encoder.layer[0].attention.self.query.B.abs().sum() > 0  # training moved B
    out_dir = save_adapter(model, cfg, BASE, tmp_path / "adapter")
    meta = json.loads((out_dir / "tunelab_adapter.json").read_text())
    assert meta["base"] == BASE and meta["num_heads"] == 4
    assert meta["modules"]["bert.encoder.layer.1.attention.self.value"] == {"variant": variant, "rank": 2}
    fresh = tiny_bert()
    assert load_adapter(fresh, out_dir, "fp-aaaa") == cfg
    with torch.no_grad():
        assert torch.equal(fresh(IDS).logits, model(IDS).logits)


def test_wrong_base_is_refused_before_touching_the_model(tmp_path) -> None:
    model, cfg = trained("lora")
    out_dir = save_adapter(model, cfg, BASE, tmp_path / "adapter")
    fresh = tiny_bert()
    with pytest.raises(TunelabError) as err:
        load_adapter(fresh, out_dir, "fp-bbbb")
    assert str(err.value) == (f"adapter in {out_dir} was trained on base 'tiny-bert' (fingerprint fp-aaaa), "
                              "not 'fp-bbbb'")
    assert all(p.requires_grad for p in fresh.parameters())


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(tmp_path) -> None:
    model, cfg = trained("lora")
    save_adapter(model, cfg, BASE, tmp_path / "adapter")
    save_adapter(model, cfg, {**BASE, "fingerprint": "fp-cccc"}, tmp_path / "adapter")
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
    assert json.loads((tmp_path / "adapter" / "tunelab_adapter.json").read_text())["base"]["fingerprint"] == "fp-cccc"


def test_strict_load_rejects_a_mismatched_config(tmp_path) -> None:
    model, cfg = trained("lora")
    out_dir = save_adapter(model, cfg, BASE, tmp_path / "adapter")
    meta_path = out_dir / "tunelab_adapter.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["layers"] = []  # now every layer would get rank 4: shapes cannot match
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TunelabError, match="does not fit BertForSequenceClassification"):
        load_adapter(tiny_bert(), out_dir, "fp-aaaa")
    with pytest.raises(TunelabError, match="no tunelab adapter"):
        load_adapter(tiny_bert(), tmp_path, "fp-aaaa")

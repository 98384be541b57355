import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.train import precision as P

CPU = torch.device("cpu")


def test_fp32_when_asked():
    chosen = P.choose_precision("fp32", CPU)
    assert chosen.name == "fp32" and chosen.grad_scaler() is None


def test_auto_on_cpu_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: True)
    assert P.choose_precision("auto", CPU).name == "bf16"
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)
    assert P.choose_precision("auto", CPU).name == "fp32"


def test_fp16_needs_a_gpu():
    with pytest.raises(TunelabError, match="fp16 needs a GPU"):
        P.choose_precision("fp16", CPU)


def test_gpu_without_bf16_falls_back_to_fp16_with_loss_scaling(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    chosen = P.choose_precision("auto", torch.device("cuda"))
    assert chosen.name == "fp16" and isinstance(chosen.grad_scaler(), torch.amp.GradScaler)
    with pytest.raises(TunelabError, match="no bf16 support"):
        P.choose_precision("bf16", torch.device("cuda"))


def test_bf16_autocast_changes_matmul_dtype_on_cpu():
    with P.Precision("bf16", "cpu").autocast():
        out = torch.ones(2, 3) @ torch.ones(3, 2)
    assert out.dtype == torch.bfloat16

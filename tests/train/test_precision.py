from pathlib import Path

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.train import precision as P

CPU = torch.device("cpu")


def test_fp32_when_asked():
    chosen = P.choose_precision("fp32", CPU)
    assert chosen.name == "fp32" and chosen.grad_scaler() is None


def cpuinfo_flags() -> set[str]:
    """The kernel's CPU feature flags (first core), read independently of torch's probe."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo (not Linux)")
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def test_bf16_probe_and_auto_choice_follow_this_cpus_flags():
    """The real probe on this machine: bf16 autocast is fast only with AVX-512-BF16 or AMX tiles."""
    flags = cpuinfo_flags()
    fast = "avx512_bf16" in flags or "amx_tile" in flags
    assert P.cpu_has_fast_bf16() is fast
    assert P.choose_precision("auto", CPU).name == ("bf16" if fast else "fp32")
    assert P.choose_precision("bf16", CPU).name == "bf16"  # asked for explicitly: honoured even when slow


def test_fp16_needs_a_gpu():
    with pytest.raises(TunelabError, match="fp16 needs a GPU"):
        P.choose_precision("fp16", CPU)


def test_gpu_without_bf16_falls_back_to_fp16_with_loss_scaling(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    chosen = P.choose_precision("auto", torch.device("cuda"))
    assert chosen.name == "fp16" and isinstance(chosen.grad_scaler(), torch.amp.GradScaler)
    with pytest.raises(TunelabError, match="no bf16 support"):
        P.choose_precision("bf16", torch.device("cuda"))


def test_each_precision_name_sets_its_own_autocast_mode():
    """fp32 means no autocast at all (not an fp32 autocast), bf16 means bfloat16 autocast on the device."""
    with P.Precision("fp32", "cpu").autocast():
        assert not torch.is_autocast_enabled("cpu")
    with P.Precision("bf16", "cpu").autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")  # restored on exit

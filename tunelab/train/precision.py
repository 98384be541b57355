"""Pick the autocast mode: bf16 where the hardware does it fast, fp16 + loss scaling on older GPUs,
fp32 when asked. Weights stay fp32 (master copy); only the matmuls run in low precision."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        if self.name == "fp16":
            return torch.amp.GradScaler(self.device_type)
        return None


def cpu_has_fast_bf16() -> bool:
    checker = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((checker and checker()) or (amx and amx()))


def choose_precision(requested: str, device: torch.device) -> Precision:
    kind = device.type
    if requested == "fp32":
        return Precision("fp32", kind)
    if kind == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not bf16_ok:
            raise TunelabError("train.precision=bf16: this GPU has no bf16 support; use fp16 or auto")
        if requested == "fp16":
            return Precision("fp16", kind)
        return Precision("bf16" if bf16_ok else "fp16", kind)
    if requested == "fp16":
        raise TunelabError("train.precision=fp16 needs a GPU; on CPU use bf16, fp32 or auto")
    if requested == "bf16" or cpu_has_fast_bf16():
        return Precision("bf16", kind)
    return Precision("fp32", kind)


def precision_reason(precision: Precision, requested: str) -> str:
    """Why this precision: printed before training, since on CPUs the choice changes speed by 100x."""
    if requested != "auto":
        return f"train.precision={requested}"
    if precision.device_type == "cuda":
        return "auto: " + ("bf16 is supported on this GPU" if precision.name == "bf16" else "no bf16 on this GPU")
    if precision.name == "bf16":
        return "auto: this CPU has AVX-512-BF16/AMX, so bf16 autocast pays"
    return "auto: this CPU lacks AVX-512-BF16 (bf16 matmuls would be far slower than fp32)"


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")

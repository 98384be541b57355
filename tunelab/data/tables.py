"""Turn the `data:` section into train/eval tables with known column roles.

Handles registered datasets, user files, `datasets` folders and hub ids alike (one reader for the last
three: tunelab.data.loaders.open_source), the held-out split when there is no eval data (stratified by
label, fixed seed), and `data.limit` for quick runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tunelab.assets.datasets import DATASETS, DatasetSpec, locate, locate_all, resolve_dataset
from tunelab.config import DataConfig
from tunelab.data.bad_rows import BadRows, enforce
from tunelab.data.loaders import (
    HUB_ID,
    ISSUE,
    LabelNames,
    eval_split,
    open_source,
    read_table,
    require_columns,
    train_split,
)
from tunelab.errors import TunelabError

ROW = "_row"  # each row's position in the table as read, for messages that name bad rows


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
    """Raw train/eval tables after split and limits, with the registry entry they came from (if any) and
    the class names a `datasets` source declares per column (ClassLabel features)."""

    train: pd.DataFrame
    eval: pd.DataFrame
    spec: DatasetSpec | None
    source: str
    label_names: LabelNames = field(default_factory=dict)
    bad_train: BadRows = field(default_factory=BadRows)  # rows of the training file(s) that could not be read
    bad_eval: BadRows = field(default_factory=BadRows)


def registered_spec(name: str | None) -> DatasetSpec | None:
    """The registry entry data.dataset names; None for a hub id or a `datasets` folder, which are read
    exactly like data.train. Anything else unknown is an error with a suggestion."""
    if name is None or (name not in DATASETS and (HUB_ID.match(name) or Path(name).expanduser().is_dir())):
        return None
    return resolve_dataset(name)


def load_frames(cfg: DataConfig, stratify_on: str | None = None) -> Frames:
    """Read the configured data, hold out eval rows when there is no eval file or eval split."""
    spec = registered_spec(cfg.dataset)
    if spec is not None:
        train = pd.concat([read_table(path, "data.dataset") for path in locate_all(spec.train, cfg.dataset)],
                          ignore_index=True)
        evaluation = read_table(locate(spec.eval, cfg.dataset), "data.dataset") if spec.eval else None
        label_names, eval_size, source = {}, spec.eval_size, cfg.dataset
    else:
        train, evaluation, label_names, source = source_frames(cfg)
        eval_size = None
    train, bad_train = split_off_unreadable(train)
    bad_eval = BadRows()
    if evaluation is not None:
        evaluation, bad_eval = split_off_unreadable(evaluation)
    enforce(bad_train, cfg.on_error, f"the training data of {source}")
    enforce(bad_eval, cfg.on_error, f"the eval data of {source}")
    if evaluation is None:
        train, evaluation = split_holdout(train, stratify_on, eval_size, cfg.eval_fraction, cfg.split_seed)
    if cfg.limit is not None:
        train = train.sample(n=min(cfg.limit, len(train)), random_state=cfg.split_seed)
    if cfg.eval_limit is not None:
        evaluation = evaluation.sample(n=min(cfg.eval_limit, len(evaluation)), random_state=cfg.split_seed)
    if len(train) == 0 or len(evaluation) == 0:
        raise TunelabError(f"data: {source} gives {len(train)} training and {len(evaluation)} eval rows")
    return Frames(train.reset_index(drop=True), evaluation.reset_index(drop=True), spec, source, label_names,
                  bad_train, bad_eval)


def split_off_unreadable(frame: pd.DataFrame) -> tuple[pd.DataFrame, BadRows]:
    """Number the rows as read (ROW), then drop the ones a reader flagged (malformed JSON, bytes that are
    not UTF-8) and count them by reason."""
    frame = frame.reset_index(drop=True)
    frame[ROW] = np.arange(len(frame))
    bad = BadRows()
    if ISSUE not in frame.columns:
        return frame, bad
    flagged = frame[ISSUE].astype(str) != ""
    for row, reason in zip(frame.index[flagged], frame.loc[flagged, ISSUE], strict=True):
        bad.add(str(reason), int(row))
    return frame.loc[~flagged].drop(columns=[ISSUE]), bad


def source_frames(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame | None, LabelNames, str]:
    """data.dataset (hub id, folder) or data.train (file, folder, hub id), eval from data.eval, else from
    the source's validation/test split, else None (held out by the caller). `split`/`eval_split` are read
    when DataConfig has them."""
    ref, key = (cfg.dataset, "data.dataset") if cfg.dataset is not None else (str(cfg.train), "data.train")
    source = open_source(ref, key)
    split = train_split(source, cfg.split)
    train, names = source.read(split)
    evaluation, eval_names = None, {}
    if cfg.eval is not None:
        other = open_source(cfg.eval, "data.eval")
        evaluation, eval_names = other.read(eval_split(other, cfg.eval_split))
    else:
        held = eval_split(source, cfg.eval_split, beside=split)
        if held is not None:
            evaluation, eval_names = source.read(held)
    label = ref if len(source.splits) == 1 else f"{ref} [{split}]"
    return train, evaluation, {**eval_names, **names}, label


def load_tables(cfg: DataConfig, target_role: str = "label") -> Tables:
    """Classification view: text fields and a label column, checked to exist."""
    spec = registered_spec(cfg.dataset)
    if spec is not None:
        text_fields = tuple(cfg.text_fields) or spec.text_fields
        label = cfg.columns.get(target_role, spec.label)
    else:
        text_fields = tuple(cfg.text_fields) or (cfg.columns.get("text", "text"),)
        label = cfg.columns.get(target_role, target_role)
    frames = load_frames(cfg, stratify_on=label)
    label_names = spec.label_names if spec is not None else frames.label_names.get(label, ())
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

"""Read training data into pandas tables: user files (CSV/TSV, JSONL/JSON, Parquet, plain text, gzip
too), folders of the `datasets` library (`save_to_disk` output, or a folder of data files) and Hugging
Face hub dataset ids (`owner/name`) when a hub is reachable.

Every source becomes `DataSource`: split names plus a reader per split, so a file, a saved folder and
a hub id all reach the tasks as the same DataFrames. Errors name the recipe key in one line; a hub id
with no reachable hub fails at once (offline mode is switched on) instead of retrying for minutes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunelab.errors import TunelabError

if TYPE_CHECKING:
    import pandas as pd

TABLE_FORMATS = {
    ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv",
    ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".json.gz": "json",
    ".parquet": "parquet", ".txt": "text", ".txt.gz": "text",
}
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what Dataset(Dict).save_to_disk writes
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
EVAL_SPLITS = ("validation", "valid", "dev", "test")  # preferred eval split of a multi-split dataset
LabelNames = dict[str, tuple[str, ...]]  # column -> class names (a `datasets` ClassLabel feature)


@dataclass(frozen=True)
class DataSource:
    """One opened data.dataset / data.train / data.eval value. A file has one split, 'train'."""

    ref: str
    key: str
    splits: tuple[str, ...]
    reader: Callable[[str], tuple[pd.DataFrame, LabelNames]] = field(repr=False)
    offline_reason: str | None = None  # set for hub ids while the hub is unreachable

    def read(self, split: str) -> tuple[pd.DataFrame, LabelNames]:
        with datasets_errors(self.key, self.ref, self.offline_reason):
            return self.reader(split)


def file_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(TABLE_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return TABLE_FORMATS[suffix]
    known = ", ".join(sorted({s for s in TABLE_FORMATS if not s.endswith(".gz")}))
    raise TunelabError(f"{path}: unknown data format (use one of {known}, optionally .gz)")


def has_table_suffix(ref: str) -> bool:
    return any(ref.lower().endswith(suffix) for suffix in TABLE_FORMATS)


def open_source(ref: str, key: str = "data.train") -> DataSource:
    """A file, a `datasets` folder or a hub id, told apart by what is on disk (a file wins over a hub id)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if any((path / marker).is_file() for marker in SAVED_MARKERS):
            return saved_source(path, ref, key)
        return library_source(str(path), ref, key, offline_reason=None)
    if path.is_file() or has_table_suffix(ref) or not HUB_ID.match(ref):
        return DataSource(ref, key, ("train",), lambda split: (read_table(path, key), {}))
    return library_source(ref, ref, key, offline_reason=go_offline_if_unreachable())


def saved_source(path: Path, ref: str, key: str) -> DataSource:
    from datasets import DatasetDict, load_from_disk

    quiet_datasets()
    with datasets_errors(key, ref, None):
        loaded = load_from_disk(str(path))
    if isinstance(loaded, DatasetDict):
        return DataSource(ref, key, tuple(loaded), lambda split: frame_of(loaded[split]))
    return DataSource(ref, key, ("train",), lambda split: frame_of(loaded))


def library_source(path: str, ref: str, key: str, offline_reason: str | None) -> DataSource:
    """`datasets.load_dataset` on a folder of data files or a hub id; only the splits used are loaded."""
    import datasets

    quiet_datasets()
    with datasets_errors(key, ref, offline_reason):
        splits = tuple(datasets.get_dataset_split_names(path))
    return DataSource(ref, key, splits, lambda split: frame_of(datasets.load_dataset(path, split=split)),
                      offline_reason)


def frame_of(dataset: Any) -> tuple[pd.DataFrame, LabelNames]:
    from datasets import ClassLabel

    names = {name: tuple(feature.names) for name, feature in dataset.features.items()
             if isinstance(feature, ClassLabel)}
    return dataset.to_pandas(), names


def train_split(source: DataSource, wanted: str | None = None) -> str:
    """`wanted` if given (it must exist), else 'train', else the only split there is."""
    if wanted is not None:
        return checked_split(source, wanted)
    if "train" in source.splits or len(source.splits) == 1:
        return "train" if "train" in source.splits else source.splits[0]
    raise TunelabError(f"{source.key}: {source.ref} has no 'train' split (splits: {', '.join(source.splits)}); "
                       "save the split to train on with save_to_disk and point data.train at that folder")


def eval_split(source: DataSource, wanted: str | None = None, beside: str | None = None) -> str | None:
    """The eval split: `wanted`, else the first of EVAL_SPLITS. `beside` is the train split when eval comes
    from the same source; then None (no eval split) means "hold eval rows out of train". A separate
    data.eval source must give one: its only split or an EVAL_SPLITS one."""
    if wanted is not None:
        return checked_split(source, wanted)
    if beside is None and len(source.splits) == 1:
        return source.splits[0]
    found = next((name for name in EVAL_SPLITS if name in source.splits and name != beside), None)
    if found is None and beside is None:
        raise TunelabError(f"{source.key}: {source.ref} has no {'/'.join(EVAL_SPLITS)} split "
                           f"(splits: {', '.join(source.splits)})")
    return found


def checked_split(source: DataSource, wanted: str) -> str:
    if wanted not in source.splits:
        raise TunelabError(f"{source.key}: {source.ref} has no split '{wanted}' (splits: {', '.join(source.splits)})")
    return wanted


def go_offline_if_unreachable() -> str | None:
    """Why the hub is unreachable (then `datasets` is put in offline mode: cached copies still load, nothing
    waits on a dead network), or None when it looks reachable."""
    from tunelab.assets.models import _hub_unreachable_reason

    reason = _hub_unreachable_reason()
    if reason is None and os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        reason = "offline: HF_DATASETS_OFFLINE=1"
    if reason is not None:
        import datasets
        from huggingface_hub import constants

        # both libraries read HF_HUB_OFFLINE once, at import; setting the variable now would change nothing
        constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    return reason


@contextmanager
def datasets_errors(key: str, ref: str, offline_reason: str | None) -> Iterator[None]:
    """`datasets` and hub failures as one TunelabError line naming the recipe key (`datasets` is imported
    only on a failure, so plain files never pay for its import)."""
    try:
        yield
    except TunelabError:
        raise
    except Exception as exc:
        from datasets.exceptions import DatasetsError

        if not isinstance(exc, DatasetsError | OSError | ValueError):
            raise
        if offline_reason is not None:
            raise TunelabError(f"{key}: '{ref}' is not a local file or folder, and as a hub dataset id it is not "
                               f"in the datasets cache and the Hugging Face hub is unreachable ({offline_reason})"
                               ) from None
        raise TunelabError(f"{key}: cannot load {ref}: {first_line(exc)}") from None


def quiet_datasets() -> None:
    """`datasets` progress bars follow tunelab's own (off for TUNELAB_QUIET=1 and pipes)."""
    from datasets.utils import disable_progress_bars

    from tunelab.progress import progress_enabled

    if not progress_enabled():
        disable_progress_bars()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_table(path: str | Path, key: str = "data.train") -> pd.DataFrame:
    """Read any supported file; `key` names the recipe key in error messages."""
    import pandas as pd  # imported where tables are read: 0.3 s a text-only run does not pay

    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{key}: file not found: {path}")
    kind = file_format(path)
    try:
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="," if kind == "csv" else "\t", keep_default_na=False,
                                encoding_errors="replace")
            return mark_undecodable(frame)
        if kind == "jsonl":
            return read_json_lines(path)
        if kind == "json":
            return pd.read_json(path)
        if kind == "parquet":
            return pd.read_parquet(path)
        return read_text_lines(path)
    except TunelabError:
        raise
    except (ValueError, UnicodeDecodeError, OSError, ImportError) as exc:
        raise TunelabError(f"{key}: cannot read {path} as {kind}: {first_line(exc)}") from None


ISSUE = "_tunelab_issue"  # column naming why a row could not be read ("" when it could)
UNDECODABLE = "\ufffd"  # what a byte that is not UTF-8 decodes to with errors="replace"


def mark_undecodable(frame: pd.DataFrame) -> pd.DataFrame:
    """Flag rows holding bytes that are not UTF-8, instead of failing the whole file on the first one."""
    import pandas as pd

    text = frame[[c for c in frame.columns if pd.api.types.is_string_dtype(frame[c])]]
    if text.empty:
        return frame
    bad = text.apply(lambda col: col.astype(str).str.contains(UNDECODABLE, regex=False)).any(axis=1)
    if bad.any():
        frame[ISSUE] = np.where(bad, "undecodable_bytes", "")
    return frame


def read_json_lines(path: Path) -> pd.DataFrame:
    """One record per non-empty line; a line that is not a JSON object (or not UTF-8) becomes an empty
    row flagged malformed_json / undecodable_bytes, so one bad line costs one row, not the file."""
    import gzip

    import pandas as pd

    opener = gzip.open if path.name.endswith(".gz") else open
    records, issues = [], []
    with opener(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                issue = "" if isinstance(record, dict) else "malformed_json"
            except UnicodeDecodeError:
                record, issue = {}, "undecodable_bytes"
            except json.JSONDecodeError:
                record, issue = {}, "malformed_json"
            records.append(record if issue == "" else {})
            issues.append(issue)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    if any(issues):
        frame[ISSUE] = issues
    return frame


def read_text_lines(path: Path) -> pd.DataFrame:
    """A plain text file becomes one row per non-empty line in a `text` column."""
    import gzip

    import pandas as pd

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]
    return pd.DataFrame({"text": [line for line in lines if line.strip()]})


def read_text(path: str | Path, key: str = "data.train") -> str:
    """Whole file as one string (char-level LM corpora)."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{key}: file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read()


def require_columns(frame: pd.DataFrame, columns: list[str], source: str, key: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TunelabError(
            f"{key}: column '{missing[0]}' not in {source} (columns: {', '.join(map(str, frame.columns))})")

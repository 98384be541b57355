"""Run directories and atomic file writes.

Every file tunelab writes goes through `atomic_write_*`: the bytes land in a temporary file in the
same folder and are renamed over the target, so a crash never leaves a half-written config,
summary or checkpoint. metrics.jsonl grows by whole lines; a torn last line from a killed run is
dropped when the run is resumed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tunelab.write_errors import explained_write_errors

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "safetensors", "pydantic", "scikit-learn")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_with(path: Path, writer: Callable[[Path], Any]) -> None:
    """Call `writer(tmp_path)` then rename tmp over `path`; the temp file is removed on failure, and a full
    disk or read-only folder becomes one line naming `path` (a TunelabError)."""
    path = Path(path)
    with explained_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            writer(tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def atomic_replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place; if another process won the race, keep theirs."""
    with explained_write_errors(final_dir):
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp_dir, final_dir)
        except OSError:
            if not final_dir.exists():
                raise
            shutil.rmtree(tmp_dir, ignore_errors=True)


def atomic_write_dir(out_dir: Path, writer: Callable[[Path], Any]) -> Path:
    """Fill a temp folder next to `out_dir`, then rename it into place (replacing an older one only after
    the new one is complete): readers never see half a checkpoint or artifact. A full disk or read-only
    folder removes the temp folder and becomes one line naming `out_dir`; the older folder stays."""
    out_dir = Path(out_dir)
    with explained_write_errors(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            writer(tmp)
            if out_dir.exists():
                old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
                os.replace(out_dir, old)
                os.replace(tmp, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write call, so readers never see half a record (a full disk can
    still tear the last line; the reader skips it and a resume rewrites the file)."""
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with explained_write_errors(path), open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read metrics lines, skipping a torn final line left by a killed process."""
    records: list[dict[str, Any]] = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def new_run_id() -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


class RunDir:
    """runs/<recipe>/<run-id>/: config.yaml, metrics.jsonl, summary.json, environment.json, artifacts."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, recipe: str, run_id: str | None = None) -> RunDir:
        path = Path(root) / recipe / (run_id or new_run_id())
        with explained_write_errors(path):
            path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def write_config(self, config: dict[str, Any], seed: int | None = None) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        env = {"seed": seed, "git_sha": git_sha(), "libraries": library_versions(),
               "machine": platform.machine(), "cpu_count": os.cpu_count()}
        atomic_write_json(self.path / "environment.json", env)

    def log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def truncate_metrics(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the replayed steps are not doubled."""
        kept = [r for r in self.metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in kept))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def summary(self) -> dict[str, Any] | None:
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text(encoding="utf-8"))

    def artifact(self, name: str) -> Path:
        return self.path / name

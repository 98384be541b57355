"""Real small and read-only file systems for the disk tests, mounted on a test's own folder.

Why real mounts and not a patched `open`: the point is what the kernel does to tunelab's writers (which
call raise ENOSPC or EROFS, what a torn write leaves behind), including writes done inside safetensors'
Rust code and torch's C++ code, which no Python patch reaches.

A size-limited folder is a tmpfs with `size=`, else a loop-mounted ext4 image; a read-only one is a tmpfs
remounted read-only, else the folder made immutable with `chattr +i` (root ignores plain chmod). Both
need root (or CAP_SYS_ADMIN); without one that works the test is skipped with the reason. An
RLIMIT_FSIZE limit was considered and not used: it limits each file's size (EFBIG), not the folder's
free space, so it cannot make one write fail while the next smaller one succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True)


def _unmount(folder: Path) -> None:
    if _run("umount", str(folder)).returncode != 0:
        _run("umount", "-l", str(folder))  # still busy (a killed child's open file): detach lazily


@contextlib.contextmanager
def size_limited(folder: Path, size: int) -> Iterator[str]:
    """Mount a file system of about `size` bytes on `folder` (created empty); yields how it was made."""
    folder.mkdir(parents=True, exist_ok=True)
    how, tried = None, []
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    if mounted.returncode == 0:
        how = "tmpfs"
    else:
        tried.append(f"tmpfs: {mounted.stderr.strip()}")
        image = folder.with_name(folder.name + ".img")
        with open(image, "wb") as handle:
            handle.truncate(max(size, 1 << 20))
        made = _run("mkfs.ext4", "-q", "-F", str(image))
        mounted = _run("mount", "-o", "loop", str(image), str(folder)) if made.returncode == 0 else made
        if mounted.returncode == 0:
            how = "loop ext4"
        else:
            tried.append(f"loop ext4: {mounted.stderr.strip()}")
    if how is None:
        pytest.skip("no size-limited file system can be mounted here (needs root): " + "; ".join(tried))
    try:
        yield how
    finally:
        _unmount(folder)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """Make `folder` (with what it holds now) read-only; yields how. Restored on exit."""
    staging = folder.with_name(folder.name + ".staging")
    folder.rename(staging)
    folder.mkdir()
    if _run("mount", "-t", "tmpfs", "tmpfs", str(folder)).returncode == 0:
        _run("cp", "-a", f"{staging}/.", str(folder))
        if _run("mount", "-o", "remount,ro", str(folder)).returncode == 0:
            try:
                yield "read-only tmpfs"
            finally:
                _unmount(folder)
            return
        _unmount(folder)
    folder.rmdir()
    staging.rename(folder)
    paths = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    if _run("chattr", "+i", *map(str, paths)).returncode != 0:
        pytest.skip("neither a read-only mount nor chattr +i works here (needs root and a file system with "
                    "immutable flags)")
    try:
        yield "chattr +i"
    finally:
        _run("chattr", "-i", *map(str, paths))


def fill(folder: Path, leave: int) -> Path:
    """Write a ballast file in `folder` until about `leave` bytes are free (0: until a write fails)."""
    ballast = folder / "ballast"
    stats = os.statvfs(folder)
    with open(ballast, "wb", buffering=0) as handle:  # unbuffered: a failed write is not retried on close
        handle.write(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))
        while leave == 0:
            try:
                handle.write(b"\0" * 4096)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
    return ballast

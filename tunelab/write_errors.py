"""Turn a write that fails for a reason outside tunelab (full disk, quota, read-only mount, no permission) into
one line that names the file and the file system.

Why in one place: every file tunelab writes goes through `tunelab.rundir`'s atomic writers, so translating
there covers config, metrics, checkpoints, artifacts, summaries, reports and caches. A bare
`OSError: [Errno 28] No space left on device` from the middle of a checkpoint says neither which file nor
which disk, and its traceback hides that the previous checkpoint is still intact.

The errno is read from an `OSError`, or from the text of a library error that carries it: safetensors'
writer (Rust) raises `SafetensorError("... (os error 28)")`. `torch.save` loses the errno altogether
(`RuntimeError: ... unexpected pos`), so callers serialise it to memory and write the bytes themselves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tunelab.errors import TunelabError

FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}
DENIED = {errno.EROFS, errno.EACCES, errno.EPERM}  # EPERM: an immutable (chattr +i) folder
HANDLED = {*FULL, errno.EFBIG, *DENIED}
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")


def failed_errno(error: BaseException) -> int | None:
    """The errno behind `error` when it is one of the write failures tunelab explains, else None."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None and (match := _OS_ERROR_TEXT.search(str(error))):
        code = int(match.group(1))
    return code if code in HANDLED else None


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds (or would hold) `path`."""
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


def elsewhere(path: Path) -> str:
    """Where the user can send the write instead: the cache has its own variable, everything else is a run
    folder (output_dir) or a report (-o)."""
    from tunelab.assets.models import cache_root  # lazy: only on the error path, and assets imports rundir

    with contextlib.suppress(ValueError):
        Path(os.path.abspath(path)).relative_to(os.path.abspath(cache_root()))
        return "set TUNELAB_CACHE to another disk"
    return "set output_dir (or the report's -o) to another disk"


def write_failure(path: Path, error: BaseException) -> TunelabError | None:
    """The one-line error for a failed write of `path`, or None when `error` is not a disk/permission one."""
    code = failed_errno(error)
    if code is None:
        return None
    mount = mount_point(path)
    if code in FULL:
        return TunelabError(f"{FULL[code]} writing {path}: free space on {mount} or {elsewhere(path)}")
    if code == errno.EFBIG:
        return TunelabError(f"file too large writing {path}: the file size limit (ulimit -f) or the file system "
                            f"of {mount} does not allow it; raise the limit or {elsewhere(path)}")
    if code == errno.EROFS:
        return TunelabError(f"read-only file system: cannot write {path} ({mount} is mounted read-only); "
                            f"remount it read-write or {elsewhere(path)}")
    return TunelabError(f"permission denied writing {path}: make {Path(path).parent} writable "
                        f"(chmod, chattr -i) or {elsewhere(path)}")


@contextlib.contextmanager
def explained_write_errors(path: Path) -> Iterator[None]:
    """Re-raise a disk-full/read-only/permission failure inside the block as one line about `path`."""
    try:
        yield
    except TunelabError:
        raise
    except Exception as error:
        failure = write_failure(Path(path), error)
        if failure is None:
            raise
        raise failure from None

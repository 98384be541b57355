"""The first code that runs inside a sandboxed interpreter: limits, guards, then the untrusted program.

`sandbox.run_program` starts `python -I -B -c <this file's text> SETTINGS_JSON` in a fresh working
directory that holds `program.py` (tunelab imports this module only to ask `landlock_abi`). In order it
1. sets the kernel limits (soft = hard, so the program cannot raise them again; the CPU hard limit is
   1 s above the soft one, so SIGXCPU comes first): RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC,
   RLIMIT_NOFILE and RLIMIT_CORE = 0. They are set here, in the child before any untrusted line runs,
   rather than in `subprocess`'s preexec_fn: the parent drives many sandboxes from a thread pool and
   Python documents preexec_fn as unsafe in a threaded parent;
2. where the kernel has Landlock and the settings ask for it, restricts file changes to the working
   directory (and TCP, signals, abstract sockets: `restrict_with_landlock`) for good;
   then installs the Python-level guards (`install_guards`) unless the settings turn them off;
3. compiles program.py (SyntaxError -> syntax_error) and runs it as `__main__`, mapping how it ended
   to a kind: AssertionError -> wrong_answer, MemoryError -> memory, any other exception or a call to
   exit() -> crash, reaching the end -> passed;
4. writes that verdict as one JSON object to the file descriptor the parent passed, and leaves with
   os._exit so the program's atexit hooks and stray threads cannot change the exit.

A program that never returns here (os._exit, a signal, a kill at a limit) leaves no verdict; the
parent then classifies it from the exit status.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import json
import os
import resource
import shutil
import socket
import subprocess  # imported so that its fork path can be disabled below
import sys
import traceback
from collections.abc import Callable
from typing import Any

PROGRAM = "program.py"
MESSAGE_CHARS = 300
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

# Landlock (linux/landlock.h): syscall numbers are the same on every architecture.
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH, PR_SET_NO_NEW_PRIVS = 1, 1, 38
FS_WRITE_FILE, FS_REFER, FS_TRUNCATE = 1 << 1, 1 << 13, 1 << 14
FS_CHANGES = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make dir/file/link/...
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def apply_limits(settings: dict[str, Any]) -> None:
    cpu_s = settings["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU at the soft limit, SIGKILL 1 s later
    limits = [(resource.RLIMIT_AS, settings["memory_bytes"]),
              (resource.RLIMIT_FSIZE, settings["file_bytes"]), (resource.RLIMIT_NPROC, settings["processes"]),
              (resource.RLIMIT_NOFILE, settings["open_files"]), (resource.RLIMIT_CORE, 0)]
    for which, value in limits:
        resource.setrlimit(which, (value, value))


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is absent or disabled."""
    try:
        version = _libc().syscall(ctypes.c_long(LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


def _check(result: int, what: str) -> None:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def restrict_with_landlock(root: str, abi: int) -> None:
    """Kernel rule for this process and all it starts: file changes only beneath `root` (and writes to
    /dev/null); reads stay allowed everywhere. From ABI 4 on, TCP bind/connect are refused too; from
    ABI 6 on, signals to processes outside the sandbox and abstract unix sockets outside it as well.
    Files already open (stdout, stderr, the verdict) stay writable: Landlock checks at open time."""
    changes = FS_CHANGES | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(changes, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # older kernels reject fields they do not know
    libc = _libc()
    ruleset = libc.syscall(ctypes.c_long(LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    _check(ruleset, "landlock_create_ruleset")
    for path, allowed in ((root, changes), ("/dev/null", FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0))):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneathAttr(allowed, fd)
        _check(libc.syscall(ctypes.c_long(LANDLOCK_ADD_RULE), ctypes.c_int(ruleset),
                            ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)),
               f"landlock_add_rule {path}")
        os.close(fd)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(libc.syscall(ctypes.c_long(LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)),
           "landlock_restrict_self")
    os.close(ruleset)


def _refuse(name: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(f"{name} is disabled in the tunelab sandbox")
    return refused


def _inside(root: str, path: Any) -> bool:
    """Whether a path argument resolves (symlinks followed) inside the working directory; file descriptors
    pass, since the program can only hold descriptors of files it was allowed to open."""
    if isinstance(path, int):
        return True
    resolved = os.path.realpath(os.fsdecode(os.fspath(path)))
    return resolved == root or resolved.startswith(root + os.sep)


def _guard_paths(root: str, function: Callable[..., Any], name: str, positions: tuple[int, ...]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for position in positions:
            if position < len(args) and not _inside(root, args[position]):
                raise PermissionError(f"{name}: {args[position]!r} is outside the sandbox working directory")
        return function(*args, **kwargs)
    return guarded


def install_guards(root: str) -> None:
    """Python-level refusals: no processes, no sockets, no file writes outside `root`.

    An accident guard for generated code, not a security boundary: code written to escape (ctypes calls
    into libc, re-imported C modules) gets past it. The kernel limits and the network namespace are the
    layers that hold regardless.
    """
    for name in ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve",
                 "kill", "killpg"):
        if hasattr(os, name):
            setattr(os, name, _refuse(f"os.{name}"))
    import _posixsubprocess

    _posixsubprocess.fork_exec = _refuse("subprocess")  # type: ignore[attr-defined]
    subprocess.Popen._execute_child = _refuse("subprocess")  # type: ignore[attr-defined,assignment]
    blocked_socket = _refuse("network access (socket)")
    for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
        setattr(socket, name, blocked_socket)
    import _socket

    _socket.socket = blocked_socket  # type: ignore[misc,assignment]

    original_open, original_os_open = builtins.open, os.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+") and not _inside(root, file):
            raise PermissionError(f"open: {file!r} is outside the sandbox working directory")
        return original_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> Any:
        if flags & WRITE_FLAGS and kwargs.get("dir_fd") is None and not _inside(root, path):
            raise PermissionError(f"os.open: {path!r} is outside the sandbox working directory")
        return original_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open  # type: ignore[assignment]
    os.open = guarded_os_open  # type: ignore[assignment]
    for name, positions in (("remove", (0,)), ("unlink", (0,)), ("rmdir", (0,)), ("mkdir", (0,)),
                            ("rename", (0, 1)), ("replace", (0, 1)), ("truncate", (0,)), ("chmod", (0,)),
                            ("chown", (0,)), ("symlink", (1,)), ("link", (1,)), ("utime", (0,))):
        setattr(os, name, _guard_paths(root, getattr(os, name), f"os.{name}", positions))
    shutil.rmtree = _guard_paths(root, shutil.rmtree, "shutil.rmtree", (0,))  # type: ignore[assignment]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def _failing_line(error: BaseException) -> str:
    """`line N: <source>` of the program's innermost frame in the traceback, or ''."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == PROGRAM]
    if not frames:
        return ""
    return f"line {frames[-1].lineno}: {(frames[-1].line or '').strip()}"


def run_program(source: str) -> dict[str, str]:
    """{kind, message} for one program text (see the module docstring for the mapping)."""
    try:
        code = compile(source, PROGRAM, "exec")
    except (SyntaxError, ValueError) as error:  # ValueError: source with null bytes
        where = f"line {error.lineno}: " if isinstance(error, SyntaxError) and error.lineno else ""
        return {"kind": "syntax_error", "message": _short(f"{type(error).__name__} {where}{error}")}
    try:
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
    except AssertionError as error:
        detail = f" ({error})" if str(error) else ""
        return {"kind": "wrong_answer", "message": _short(f"assertion failed at {_failing_line(error)}{detail}")}
    except MemoryError as error:
        return {"kind": "memory", "message": _short(f"MemoryError at {_failing_line(error)}")}
    except SystemExit as error:
        return {"kind": "crash", "message": _short(f"the program called exit({error.code!r}) before its tests ended")}
    except BaseException as error:  # noqa: BLE001 - every way the program can fail is a verdict, not our crash
        where = _failing_line(error)
        message = f"{type(error).__name__}: {error}" + (f" at {where}" if where else "")
        return {"kind": "crash", "message": _short(message)}
    return {"kind": "passed", "message": ""}


def main() -> None:
    settings = json.loads(sys.argv[1])
    verdict_fd, write, leave, dumps = settings["verdict_fd"], os.write, os._exit, json.dumps  # before the program runs
    apply_limits(settings)
    with open(PROGRAM, encoding="utf-8", errors="replace") as handle:
        source = handle.read()
    root = os.path.realpath(os.getcwd())
    if settings["landlock_abi"]:  # fails closed: if the parent expects Landlock, no program runs without it
        restrict_with_landlock(root, settings["landlock_abi"])
    if settings["guards"]:
        install_guards(root)
    verdict = run_program(source)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the program closed them, or filled them past RLIMIT_FSIZE
        pass
    write(verdict_fd, dumps(verdict).encode("utf-8"))
    leave(0)


if __name__ == "__main__":
    main()

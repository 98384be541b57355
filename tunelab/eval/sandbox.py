"""Run untrusted Python programs (generated code + its tests) one per subprocess, under limits.

For one program `run_program`:
1. makes a fresh temporary folder: `work/` (the program's cwd, holding program.py; HOME and TMPDIR
   point there) beside stdout, stderr and verdict files that the parent opens and hands down as file
   descriptors; the whole folder is deleted afterwards;
2. starts `[unshare -rn] python -I -B -c <sandbox_child> SETTINGS` in its own process group with a
   cleaned environment (PATH=/usr/bin:/bin, no PYTHONPATH or other PYTHON* variables, which -I ignores
   anyway, one BLAS/OpenMP thread). `unshare -rn` (a new user + network namespace: only a loopback
   that is down) is used when a probe shows it works on this machine;
3. the child (`sandbox_child`) sets the kernel limits, applies Landlock where the kernel has it (file
   changes only inside work/; TCP, outside signals and abstract sockets refused on recent kernels),
   installs the Python guards, runs the program and writes a verdict; the parent waits up to `wall_s`,
   then kills the whole process group with SIGKILL, and kills it again after a normal exit to reap
   anything the program left behind;
4. the result is the child's verdict, or, when none came back, a kind read from the exit status:
   wall-clock kill or SIGXCPU -> timeout, SIGXFSZ -> crash (file or output over `file_bytes`),
   "MemoryError" in stderr -> memory, any other signal or exit -> crash.

Kinds: passed, syntax_error, wrong_answer (an AssertionError), timeout, memory, crash. Whatever the
program does, `run_program` returns a result and never raises; `run_programs` runs many at once from
a thread pool, one subprocess per thread. What each layer guarantees is in docs/code_eval.md, and
`isolation_layers` says which layers are active on this machine.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

KINDS = ("passed", "syntax_error", "wrong_answer", "timeout", "memory", "crash")
CHILD_SOURCE_PATH = Path(__file__).with_name("sandbox_child.py")
PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. `memory_bytes` caps the address space (RLIMIT_AS), so it must leave room for
    the interpreter (~30 MB here, several hundred MB if the program imports numpy or torch)."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20  # any one file the program writes, stdout and stderr included
    output_chars: int = 4000  # kept of stdout (its head) and stderr (its tail) in the result
    processes: int = 1  # RLIMIT_NPROC; the kernel ignores it for root outside a user namespace
    open_files: int = 64
    network_namespace: bool = True  # use `unshare -rn` when it works here
    landlock: bool = True  # use Landlock when the kernel has it
    guards: bool = True  # the Python-level guards of sandbox_child.install_guards
    python: str = sys.executable


@dataclass(frozen=True)
class SandboxResult:
    kind: str
    message: str
    seconds: float
    returncode: int | None
    stdout: str = ""
    stderr: str = ""

    @property
    def passed(self) -> bool:
        return self.kind == "passed"


@functools.lru_cache(maxsize=1)
def child_source() -> str:
    """sandbox_child.py's text, read once per process: a long evaluation keeps running the harness it
    started with even if the file changes on disk meanwhile (the parent and child must match)."""
    return CHILD_SOURCE_PATH.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=4)
def network_namespace_works(python: str) -> bool:
    """Whether `unshare -rn python -I -c pass` runs here (user namespaces are often off in containers)."""
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "-rn", python, "-I", "-c", "pass"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@functools.lru_cache(maxsize=1)
def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none); see sandbox_child.restrict_with_landlock."""
    from tunelab.eval.sandbox_child import landlock_abi as kernel_abi

    return kernel_abi()


def _landlock(limits: SandboxLimits) -> int:
    return landlock_abi() if limits.landlock else 0


def isolation_layers(limits: SandboxLimits | None = None) -> dict[str, str]:
    """Which layer enforces each boundary on this machine, in words (also written to summary.json)."""
    limits = limits or SandboxLimits()
    namespace = limits.network_namespace and network_namespace_works(limits.python)
    abi = _landlock(limits)
    guards = "Python guards" if limits.guards else "no Python guards"
    nproc_holds = os.geteuid() != 0  # a namespace's root maps back to real root, which is exempt as well
    network = [name for name, on in (("unshare -rn (empty network namespace)", namespace),
                                     (f"Landlock ABI {abi} (TCP bind/connect refused)", abi >= 4)) if on]
    return {
        "network": (f"kernel: {', '.join(network)}" if network else "no kernel layer")
                   + (f"; {guards} (socket creation refused)" if limits.guards else ""),
        "processes": (f"kernel: RLIMIT_NPROC={limits.processes}" if nproc_holds else
                      "no kernel limit on their number (root ignores RLIMIT_NPROC)")
                     + (f"; Landlock ABI {abi}: no signals to processes outside" if abi >= 6 else "")
                     + f"; {guards} (fork/exec/subprocess/kill)",
        "files": (f"kernel: Landlock ABI {abi}, changes only inside the working directory (reads anywhere)" if abi
                  else "no kernel boundary") + f"; {guards} (writes outside the working directory refused)",
        "limits": (f"kernel: wall {limits.wall_s:g} s (process-group kill), RLIMIT_CPU {limits.cpu_s} s, "
                   f"RLIMIT_AS {limits.memory_bytes >> 20} MiB, RLIMIT_FSIZE {limits.file_bytes >> 20} MiB"),
    }


def clean_environment(work: Path) -> dict[str, str]:
    home = str(work)
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_programs(sources: Sequence[str], limits: SandboxLimits | None = None,
                 workers: int | None = None) -> list[SandboxResult]:
    """Results in the order of `sources`, `workers` programs at a time (default: one per CPU core)."""
    limits = limits or SandboxLimits()
    if limits.network_namespace:
        network_namespace_works(limits.python)  # probe once before the threads start
    landlock_abi()
    child_source()
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda source: run_program(source, limits), sources))


def run_program(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run one program (see the module docstring); never raises."""
    limits = limits or SandboxLimits()
    began = time.monotonic()
    try:
        base = Path(tempfile.mkdtemp(prefix="tunelab-sandbox-"))
    except OSError as error:
        return SandboxResult("crash", f"sandbox could not make a temporary folder: {error}", 0.0, None)
    try:
        return _run_in(base, source, limits, began)
    except Exception as error:  # noqa: BLE001 - a sandbox failure is reported as that program's crash
        return SandboxResult("crash", f"sandbox error: {type(error).__name__}: {error}",
                             time.monotonic() - began, None)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _command(limits: SandboxLimits, verdict_fd: int) -> list[str]:
    settings = {"verdict_fd": verdict_fd, "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes,
                "file_bytes": limits.file_bytes, "processes": limits.processes, "open_files": limits.open_files,
                "guards": limits.guards, "landlock_abi": _landlock(limits)}
    prefix = ["unshare", "-rn"] if limits.network_namespace and network_namespace_works(limits.python) else []
    return [*prefix, limits.python, "-I", "-B", "-c", child_source(), json.dumps(settings)]


def _run_in(base: Path, source: str, limits: SandboxLimits, began: float) -> SandboxResult:
    work = base / "work"
    work.mkdir()
    (work / "program.py").write_text(source, encoding="utf-8", errors="surrogateescape")
    with open(base / "stdout", "wb") as out, open(base / "stderr", "wb") as err, \
            open(base / "verdict", "wb") as verdict:
        process = subprocess.Popen(_command(limits, verdict.fileno()), cwd=work, env=clean_environment(work),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(verdict.fileno(),),
                                   process_group=0)
        timed_out = False
        try:
            process.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(process.pid)
        process.wait()
    seconds = time.monotonic() - began
    stdout = _read_head(base / "stdout", limits.output_chars)
    stderr = _read_tail(base / "stderr", limits.output_chars)
    kind, message = _classify(base / "verdict", process.returncode, timed_out, stderr, limits)
    return SandboxResult(kind, message, seconds, process.returncode, stdout, stderr)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(verdict_path: Path, returncode: int, timed_out: bool, stderr: str,
              limits: SandboxLimits) -> tuple[str, str]:
    verdict = _read_verdict(verdict_path)
    if verdict is not None and not timed_out:
        return verdict
    if timed_out:
        return "timeout", f"killed after the wall-clock limit of {limits.wall_s:g} s"
    if returncode == -signal.SIGXCPU:
        return "timeout", f"killed at the CPU-time limit of {limits.cpu_s} s"
    if returncode == -signal.SIGXFSZ:
        return "crash", f"wrote a file or output over the {limits.file_bytes >> 20} MiB limit"
    if "MemoryError" in stderr:
        return "memory", f"ran out of memory under the {limits.memory_bytes >> 20} MiB address-space limit"
    if returncode < 0:
        return "crash", f"killed by {_signal_name(-returncode)}"
    last = stderr.strip().splitlines()[-1][:200] if stderr.strip() else ""
    return "crash", f"exited with code {returncode} before its tests ended" + (f": {last}" if last else "")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _read_verdict(path: Path) -> tuple[str, str] | None:
    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or verdict.get("kind") not in KINDS:
        return None
    return str(verdict["kind"]), str(verdict.get("message", ""))


def _read_head(path: Path, chars: int) -> str:
    with open(path, "rb") as handle:
        return handle.read(chars).decode("utf-8", errors="replace")


def _read_tail(path: Path, chars: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - chars))
        return handle.read().decode("utf-8", errors="replace")

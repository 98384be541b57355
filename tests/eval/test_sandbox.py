"""The sandbox contains what generated code can do and names how each program ended.

Every hostile program here runs for real in a subprocess; the assertions are on the verdict and on
the world outside (no file escaped, no marker written, the parent still runs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tunelab.eval.code_problems import load_problems, program_for
from tunelab.eval.sandbox import (
    SandboxLimits,
    isolation_layers,
    landlock_abi,
    network_namespace_works,
    run_program,
    run_programs,
)

FAST = SandboxLimits(wall_s=5.0, cpu_s=5)
SHORT = SandboxLimits(wall_s=1.5, cpu_s=1)
NAMESPACE = network_namespace_works(SandboxLimits().python)
LANDLOCK = landlock_abi()
KERNEL_ONLY = SandboxLimits(wall_s=10.0, guards=False)  # the Python guards off: what the kernel layers hold alone


def test_canonical_humaneval_solutions_pass_and_wrong_ones_fail() -> None:
    problems = load_problems("humaneval")[:4]
    programs = [program_for(p, p.canonical_solution or "") for p in problems]
    programs.append(program_for(problems[0], "    return not True\n"))  # has_close_elements is sometimes True
    results = run_programs(programs, FAST, workers=2)
    assert [r.kind for r in results] == ["passed"] * 4 + ["wrong_answer"]
    assert "assert candidate(" in results[-1].message and "line" in results[-1].message


def test_syntax_error_is_named_with_its_line() -> None:
    result = run_program("x = 1\ndef f(:\n    pass\n", FAST)
    assert result.kind == "syntax_error" and "line 2" in result.message


def test_infinite_loop_hits_the_cpu_limit_and_sleep_the_wall_clock() -> None:
    spin = run_program("while True:\n    pass\n", SandboxLimits(wall_s=20.0, cpu_s=1))  # wall: room on a busy CPU
    sleep = run_program("import time\ntime.sleep(60)\n", SHORT)
    assert spin.kind == sleep.kind == "timeout"
    assert "CPU" in spin.message and "wall-clock" in sleep.message
    assert sleep.seconds < 10


def test_ten_gigabyte_allocation_is_a_memory_failure() -> None:
    result = run_program("block = bytearray(10 * 1024 ** 3)\n", FAST)
    assert result.kind == "memory"


def test_fork_bomb_is_refused_and_leaves_no_process() -> None:
    before = set(os.listdir("/proc"))
    result = run_program("import os\nwhile True:\n    os.fork()\n", FAST)
    assert result.kind == "crash" and "fork" in result.message
    children = [pid for pid in set(os.listdir("/proc")) - before if pid.isdigit() and _parent(pid) == os.getpid()]
    assert children == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores RLIMIT_NPROC, so only the Python guard stops forks")
def test_fork_is_refused_by_the_kernel_without_the_python_guard() -> None:
    result = run_program("import os\nos.fork()\n", SandboxLimits(wall_s=5.0, guards=False))
    assert result.kind == "crash" and "BlockingIOError" in result.message


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"]
NOBODY_SCRIPT = """import sys
sys.path.insert(0, sys.argv[1])
from tunelab.eval.sandbox import SandboxLimits, run_program
result = run_program("import os\\nos.fork()\\n", SandboxLimits(wall_s=10.0, guards=False, python=sys.executable))
print(result.kind, result.message)
"""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists() or not shutil.which("setpriv"),
                    reason="needs root (to become nobody) and a system python3 that nobody can run")
def test_fork_is_refused_by_the_kernel_for_a_non_root_parent() -> None:
    """Root ignores RLIMIT_NPROC, so the sandbox is started here as `nobody` with the system python
    (the project's venv may sit where nobody cannot read it)."""
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run([*AS_NOBODY, NOBODY_SCRIPT, str(repo)], capture_output=True, text=True, timeout=60,
                         cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, check=False)
    if run.returncode != 0 and "Permission denied" in run.stderr:
        pytest.skip(f"nobody cannot read the repository or python: {run.stderr.strip().splitlines()[-1]}")
    assert run.stdout.startswith("crash BlockingIOError"), run.stdout + run.stderr


def test_socket_connect_is_refused() -> None:
    program = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n"
    result = run_program(program, FAST)
    assert result.kind == "crash" and "network" in result.message


@pytest.mark.skipif(not NAMESPACE, reason="unshare -rn does not work here; only the Python guard blocks sockets")
def test_network_namespace_holds_without_the_python_guard() -> None:
    program = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n"
    result = run_program(program, SandboxLimits(wall_s=5.0, guards=False, landlock=False))
    assert result.kind == "crash" and "OSError" in result.message and "unreachable" in result.message


@pytest.mark.skipif(LANDLOCK < 4, reason="Landlock TCP rules need ABI 4")
def test_landlock_refuses_tcp_without_namespace_or_python_guard() -> None:
    program = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)\n"
    result = run_program(program, SandboxLimits(wall_s=5.0, guards=False, network_namespace=False))
    assert result.kind == "crash" and "Permission denied" in result.message


def test_write_outside_the_working_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')\n",
                    f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
                    f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\n",
                    f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('x')\n"):
        result = run_program(program, FAST)
        assert result.kind == "crash" and "outside the sandbox" in result.message, program
    assert not target.exists()


@pytest.mark.skipif(not LANDLOCK, reason="no Landlock in this kernel; only the Python guard refuses outside writes")
def test_landlock_refuses_outside_writes_without_the_python_guard(tmp_path: Path) -> None:
    target, marker, victim = tmp_path / "escaped.txt", tmp_path / "touched", tmp_path / "victim.txt"
    victim.write_text("keep")
    programs = [f"open({str(target)!r}, 'w').write('x')\n",
                f"import os\nassert os.system('touch {marker}') == 0\n",  # a child process inherits the rule
                f"import os\nos.unlink({str(victim)!r})\n"]
    direct, shell, unlink = run_programs(programs, KERNEL_ONLY, workers=2)
    assert direct.kind == unlink.kind == "crash" and "Permission denied" in direct.message + unlink.message
    if os.geteuid() == 0:  # root's fork is not limited, so the shell ran and touch was refused
        assert shell.kind == "wrong_answer" and "Permission denied" in shell.stderr
    assert not target.exists() and not marker.exists() and victim.read_text() == "keep"


@pytest.mark.skipif(LANDLOCK < 6, reason="Landlock signal scoping needs ABI 6")
def test_landlock_refuses_signals_to_the_parent_without_the_python_guard() -> None:
    result = run_program(f"import os\nos.kill({os.getpid()}, 0)\n", KERNEL_ONLY)  # signal 0: only a check
    assert result.kind == "crash" and "PermissionError" in result.message


def test_files_inside_the_working_directory_work_and_the_folder_is_deleted() -> None:
    program = ("import os\nopen('notes.txt', 'w').write('kept')\nassert open('notes.txt').read() == 'kept'\n"
               "print(os.getcwd())\n")
    result = run_program(program, FAST)
    assert result.kind == "passed"
    assert not Path(result.stdout.strip()).exists()


def test_os_system_and_subprocess_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    programs = [f"import os\nos.system('touch {marker}')\n",
                f"import subprocess\nsubprocess.run(['touch', {str(marker)!r}])\n"]
    for result in run_programs(programs, FAST, workers=2):
        assert result.kind == "crash" and "disabled" in result.message
    assert not marker.exists()


def test_exit_before_the_tests_end_is_not_a_pass() -> None:
    hard, soft = run_programs(["import os\nos._exit(0)\nassert False\n", "import sys\nsys.exit(0)\n"], FAST)
    assert hard.kind == soft.kind == "crash"
    assert "before its tests ended" in hard.message and "exit(0)" in soft.message


def test_output_is_capped_and_the_environment_is_clean() -> None:
    program = ("import os, sys\nprint('x' * 100_000)\nassert 'PYTHONPATH' not in os.environ\n"
               "assert os.environ['PATH'] == '/usr/bin:/bin'\nassert sys.flags.isolated\n")
    result = run_program(program, SandboxLimits(wall_s=5.0, output_chars=1000))
    assert result.kind == "passed" and result.stdout == "x" * 1000


def test_other_exceptions_are_crashes_with_their_type() -> None:
    result = run_program("def f():\n    raise KeyError('missing')\nf()\n", FAST)
    assert result.kind == "crash" and result.message.startswith("KeyError: 'missing'") and "line 2" in result.message


def test_isolation_layers_name_what_holds_here() -> None:
    layers = isolation_layers(SandboxLimits())
    assert ("unshare" in layers["network"]) == NAMESPACE
    assert ("Landlock" in layers["files"]) == bool(LANDLOCK)
    assert ("root ignores" in layers["processes"]) == (os.geteuid() == 0)


def _parent(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1

"""Workers sharing one PostgreSQL study, as on several machines: two `tunelab sweep` processes against a
`postgresql://` URL, one SIGKILLed mid-trial and replaced, finish every trial exactly once.

The test makes its own role and database through psql as the server's superuser (the URL in
TUNELAB_TEST_PG_ADMIN, or `runuser -u postgres` when run as root, as in CI) and drops them afterwards.
Without a reachable server it skips on a developer machine and fails under CI=true (.ci/run installs and
starts PostgreSQL), so a green CI always includes it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from tests.trials.sweep_workers import finished_once, study_name, sweep_command, sweep_folder, wait_for
from tunelab.rundir import read_jsonl

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
ADMIN_URL = os.environ.get("TUNELAB_TEST_PG_ADMIN")


def psql(sql: str) -> subprocess.CompletedProcess:
    """One statement as the superuser: through the admin URL, or as the postgres OS user (peer auth)."""
    if ADMIN_URL:
        prefix = ["psql", ADMIN_URL]
    else:
        prefix = ["runuser", "-u", "postgres", "--", "psql"] if os.geteuid() == 0 else ["psql", "-U", "postgres"]
    return subprocess.run([*prefix, "-v", "ON_ERROR_STOP=1", "-Atqc", sql], capture_output=True, text=True,
                          timeout=30)


def server_address() -> tuple[str, int]:
    """Where the workers connect over TCP (password auth): the admin URL's host, else localhost:PGPORT."""
    if ADMIN_URL:
        from sqlalchemy.engine import make_url

        url = make_url(ADMIN_URL)
        if url.host:
            return url.host, url.port or 5432
    return "127.0.0.1", int(os.environ.get("PGPORT", "5432"))


def unreachable_reason() -> str | None:
    if shutil.which("psql") is None:
        return "psql is not installed (Debian package postgresql)"
    if not ADMIN_URL and os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing (needed to run psql as the postgres user)"
    try:
        probe = psql("SELECT 1")
    except subprocess.TimeoutExpired:
        return "psql timed out"
    if probe.returncode != 0:
        return f"psql as superuser failed: {(probe.stderr.strip().splitlines() or ['?'])[0]}"
    try:
        import psycopg  # noqa: F401 - the driver SQLAlchemy picks for postgresql:// URLs
    except ImportError:
        return "the psycopg driver is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh role + database for this test; the URL every worker is given."""
    reason = unreachable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI: no PostgreSQL server reachable ({reason}); .ci/run installs and starts one")
        pytest.skip(f"no PostgreSQL server reachable: {reason}")
    name, password = f"tunelab_test_{secrets.token_hex(4)}", secrets.token_hex(12)
    for sql in (f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f"CREATE DATABASE {name} OWNER {name}"):
        created = psql(sql)
        assert created.returncode == 0, created.stderr
    host, port = server_address()
    try:
        yield f"postgresql://{name}:{password}@{host}:{port}/{name}"
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql(f"DROP ROLE IF EXISTS {name}")


def test_postgres_workers_killed_and_replaced_finish_each_trial_once(tmp_path, postgres_url):
    steps = [3, 24, 3, 3]  # slot 1 trains long enough for the kill to land mid-training, after a checkpoint
    command = sweep_command(tmp_path, "--grid", f"train.max_steps={steps}", "--storage", postgres_url)
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        wait_for(workers[0], "demo/sweep-*/trial-001/checkpoints/last", tmp_path)
        folder = sweep_folder(tmp_path)
        owner = next(e["worker"] for e in read_jsonl(folder / "events.jsonl")
                     if e["event"] == "start" and e["slot"] == 1)
        victim = next(w for w in workers if owner.endswith(f":{w.pid}"))
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert not (folder / "trial-001" / "summary.json").exists()  # killed mid-trial, not after it
        workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = {w.pid: w.communicate(timeout=300) for w in workers if w is not victim}
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert all(w.returncode == 0 for w in workers if w is not victim), [err[-3000:] for _, err in outputs.values()]
    events = finished_once(folder, steps)
    starts = sorted((e["slot"], e["resume"] or "") for e in events if e["event"] == "start")
    assert starts == [(0, ""), (1, ""), (1, "checkpoint"), (2, ""), (3, "")]  # only the killed trial re-ran
    study = optuna.load_study(study_name=study_name(folder), storage=postgres_url)
    complete = Counter(t.user_attrs["slot"] for t in study.trials if t.state == TrialState.COMPLETE)
    assert complete == Counter(range(len(steps)))  # each slot COMPLETE exactly once
    failed = [(t.user_attrs["slot"], t.user_attrs.get("stale")) for t in study.trials if t.state == TrialState.FAIL]
    assert failed == [(1, True)]  # the killed attempt, recovered as stale; no surplus or duplicate trials
    assert len(study.trials) == len(steps) + 1
    assert not (folder / "study.db").exists()  # the PostgreSQL study was used, not the SQLite default
    ran = sum(int(out.split("this worker ran ")[1].split()[0]) for out, _ in outputs.values())
    by_victim = sum(1 for e in events if e["event"] == "finish" and e["worker"] == owner)
    assert ran + by_victim == len(steps)  # every trial counted once, by the worker that finished it

"""Shared pytest fixtures for keygate's integration tests.

Run from the repo root: `.venv/bin/pytest tests` (add `-n 2` for pytest-xdist).
Set KEYGATE_SKIP_BUILD=1 to skip `cargo build --workspace` (e.g. when the
binaries are prebuilt, or KEYGATE_BIN / MOCK_PROVIDER_BIN point elsewhere).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from harness import leaks  # noqa: E402
from harness.paths import REPO_ROOT, target_dir  # noqa: E402
from harness.procs import live_procs, stop_all  # noqa: E402

BUILD_TIMEOUT_S = 1800


def _cargo() -> str:
    found = shutil.which("cargo")
    if found:
        return found
    fallback = Path.home() / ".cargo" / "bin" / "cargo"
    if fallback.exists():
        return str(fallback)
    pytest.fail("cargo not found on PATH (set KEYGATE_SKIP_BUILD=1 to use prebuilt binaries)")


def _run_id() -> str:
    """Identifies this pytest run; shared by all xdist workers of one run."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"


@pytest.fixture(scope="session")
def cargo_build() -> Path:
    """Build the workspace (keygate + mock-provider) once per test run; return the repo root.

    Under pytest-xdist every worker asks for this fixture; a file lock in the target
    dir serialises them and a stamp holding the run id makes all but the first a no-op.
    Skipped entirely when KEYGATE_SKIP_BUILD=1.
    """
    if os.environ.get("KEYGATE_SKIP_BUILD") == "1":
        return REPO_ROOT
    target = target_dir()
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / ".keygate-tests-build.stamp"
    log_path = target / ".keygate-tests-build.log"
    with open(target / ".keygate-tests-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            previous = stamp.read_text().strip() if stamp.exists() else ""
            if previous == f"ok {_run_id()}":
                return REPO_ROOT
            if previous == f"failed {_run_id()}":  # another xdist worker already tried
                pytest.fail(f"cargo build --workspace failed (full log: {log_path})", pytrace=False)
            with open(log_path, "wb") as log:
                result = subprocess.run(
                    [_cargo(), "build", "--workspace"],
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT_S,
                    check=False,
                )
            if result.returncode != 0:
                stamp.write_text(f"failed {_run_id()}")
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
                pytest.fail(f"cargo build --workspace failed (full log: {log_path}):\n{tail}", pytrace=False)
            stamp.write_text(f"ok {_run_id()}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return REPO_ROOT


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh per-test directory for process logs, rendered configs and sockets."""
    return tmp_path


@pytest.fixture(autouse=True)
def _stop_leftover_procs() -> Iterator[None]:
    """Safety net: stop every harness Proc a test started and did not stop, pass or fail."""
    before = set(map(id, live_procs()))
    yield
    leftovers = [p for p in live_procs() if id(p) not in before]
    stop_all(leftovers)


@pytest.fixture
def leak_scan(workdir: Path) -> Iterator[None]:
    """The leak scan for a test that starts keygate (or Envoy) in `workdir` without a Stack or
    Replicas (whose stop() scans): when the test ends, stop every harness Proc it started, then
    assert that no registered secret (harness.leaks) is in any keygate or Envoy log under
    `workdir`, restarted processes included. Use it with `pytest.mark.usefixtures("leak_scan")`."""
    before = set(map(id, live_procs()))
    yield
    stop_all([p for p in live_procs() if id(p) not in before])
    leaks.assert_no_leaks(workdir)

"""Background processes for integration tests, with log files and reliable cleanup."""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Mapping, Sequence

LOG_TAIL_LINES = 40

# Every Proc that was started and not yet stopped. Used by the conftest safety
# net (stop_procs_started_since) and at interpreter exit.
_LIVE: list["Proc"] = []


class ProcError(RuntimeError):
    """A managed process exited early or never became ready."""


class Proc:
    """A command running in the background, with stdout+stderr going to a log file.

    The process gets its own session (process group), so stop()/kill() also reach
    any children it spawned. Use it as a context manager, or call stop(); tests
    get a safety net from conftest.py that stops anything left running.

    >>> with Proc(["sleep", "60"], workdir, name="sleeper") as p:
    ...     assert p.alive()
    """

    def __init__(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        workdir: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.cmd: list[str] = [os.fspath(c) for c in cmd]
        self.name: str = name or Path(self.cmd[0]).name
        self.env: dict[str, str] = dict(env or {})  # what the caller added, to restart alike
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = _unique_log_path(workdir, self.name)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self._log: IO[bytes] = open(self.log_path, "wb")
        try:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=os.fspath(cwd) if cwd else None,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise
        _LIVE.append(self)

    # -- context manager -------------------------------------------------

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} alive={self.alive()} log={self.log_path}>"

    # -- state -----------------------------------------------------------

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status (negative: killed by that signal), or None while running."""
        return self.popen.poll()

    def alive(self) -> bool:
        """True while the process is running."""
        return self.popen.poll() is None

    def log_text(self) -> str:
        """Everything the process wrote to stdout/stderr so far."""
        self._flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- waiting ---------------------------------------------------------

    def wait_for_line(self, regex: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Wait until the log contains a line matching `regex`; return the match.

        The pattern is searched per line (re.MULTILINE), from the start of the log.
        Raises ProcError if the process exits first, TimeoutError after `timeout` s;
        both messages include the log tail.
        """
        pattern = re.compile(regex, re.MULTILINE) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.log_text())
            if match:
                return match
            self._check_alive(f"waiting for log line /{pattern.pattern}/")
            if time.monotonic() >= deadline:
                raise TimeoutError(self._describe(f"no log line matching /{pattern.pattern}/ after {timeout}s"))
            time.sleep(0.05)

    def wait_http(self, url: str, timeout: float = 10.0, expect_status: int | None = None) -> int:
        """Poll GET `url` until it answers (with `expect_status`, if given); return the status.

        Any HTTP response counts when expect_status is None. Connection errors are
        retried. Raises ProcError if the process exits first, TimeoutError otherwise.
        """
        deadline = time.monotonic() + timeout
        last: str = "no attempt"
        while True:
            self._check_alive(f"waiting for {url}")
            status = http_status(url)
            if isinstance(status, int) and (expect_status is None or status == expect_status):
                return status
            last = f"status {status}" if isinstance(status, int) else status
            if time.monotonic() >= deadline:
                want = f" with status {expect_status}" if expect_status is not None else ""
                raise TimeoutError(self._describe(f"{url} did not answer{want} within {timeout}s (last: {last})"))
            time.sleep(0.05)

    # -- stopping --------------------------------------------------------

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, wait up to `grace` s, then SIGKILL. Idempotent.

        Returns the exit status.
        """
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout=grace)
        self._finish()
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the process group immediately and reap it. Idempotent."""
        if self.alive():
            self._signal(signal.SIGKILL)
            self.popen.wait(timeout=5.0)
        self._finish()
        return self.popen.returncode

    # -- internals -------------------------------------------------------

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.popen.send_signal(sig)

    def _finish(self) -> None:
        # Only ever signal the group while its leader is un-reaped (alive() above),
        # so a recycled pid can never be hit.
        if not self._log.closed:
            self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)

    def _flush(self) -> None:
        if not self._log.closed:
            self._log.flush()

    def _check_alive(self, doing: str) -> None:
        if not self.alive():
            raise ProcError(self._describe(f"exited with status {self.popen.returncode} while {doing}"))

    def _describe(self, what: str) -> str:
        return (
            f"{self.name} (pid {self.pid}) {what}\n"
            f"command: {' '.join(self.cmd)}\n"
            f"log: {self.log_path}\n"
            f"--- last {LOG_TAIL_LINES} log lines ---\n{self.log_tail()}"
        )


def http_status(url: str, timeout: float = 2.0) -> int | str:
    """GET `url` and return its HTTP status, or a string describing the connection error."""
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback only)
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError) as err:
        return f"{type(err).__name__}: {err}"


def live_procs() -> list[Proc]:
    """Procs started and not yet stopped, oldest first."""
    return list(_LIVE)


def stop_all(procs: Sequence[Proc] | None = None) -> None:
    """Stop the given procs (default: every live one), newest first. Never raises."""
    for proc in reversed(list(_LIVE if procs is None else procs)):
        try:
            proc.stop()
        except Exception:  # noqa: BLE001 - cleanup must continue
            try:
                proc.kill()
            except Exception:  # noqa: BLE001
                pass


def _unique_log_path(workdir: Path, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "proc"
    path = workdir / f"{safe}.log"
    n = 1
    while path.exists():
        n += 1
        path = workdir / f"{safe}.{n}.log"
    return path


atexit.register(stop_all)

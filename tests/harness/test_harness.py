"""Self-tests for the harness: process lifecycle, log waiting, ports."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from harness.ports import free_port, port_open, wait_port
from harness.procs import Proc, ProcError, live_procs

PY = sys.executable


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_port(workdir: Path) -> None:
    port = free_port()
    with pytest.raises(TimeoutError):
        wait_port(port, timeout=0.2)
    server = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(30)"
    with Proc([PY, "-c", server], workdir, name="listener"):
        wait_port(port, timeout=10)
        assert port_open(port)


def test_wait_for_line_and_log(workdir: Path) -> None:
    code = "import sys,time; print('warming up', flush=True); time.sleep(0.3); print('ready on 1234', flush=True); sys.stderr.write('err line\\n'); time.sleep(30)"
    with Proc([PY, "-c", code], workdir, name="printer") as proc:
        match = proc.wait_for_line(r"ready on (\d+)", timeout=10)
        assert match.group(1) == "1234"
        proc.wait_for_line("^err line$", timeout=10)  # stderr goes to the same log
        assert proc.alive()
        assert proc.log_path.parent == workdir
    assert not proc.alive()
    assert "warming up" in proc.log_text()


def test_early_exit_reports_log_tail(workdir: Path) -> None:
    proc = Proc([PY, "-c", "print('boom: bad flag'); raise SystemExit(3)"], workdir, name="crasher")
    with pytest.raises(ProcError) as err:
        proc.wait_for_line("never", timeout=10)
    assert "boom: bad flag" in str(err.value)
    assert "status 3" in str(err.value)
    with pytest.raises(ProcError):
        proc.wait_http(f"http://127.0.0.1:{free_port()}/", timeout=1)
    proc.stop()


def test_wait_for_line_timeout(workdir: Path) -> None:
    with Proc([PY, "-c", "print('hello', flush=True); import time; time.sleep(30)"], workdir) as proc:
        with pytest.raises(TimeoutError) as err:
            proc.wait_for_line("never", timeout=0.5)
        assert "hello" in str(err.value)


def test_stop_escalates_to_sigkill(workdir: Path) -> None:
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(60)"
    proc = Proc([PY, "-c", code], workdir, name="stubborn")
    proc.wait_for_line("armed", timeout=10)
    started = time.monotonic()
    status = proc.stop(grace=0.5)
    assert status == -9
    assert time.monotonic() - started < 5
    assert proc not in live_procs()
    assert proc.stop() == -9  # idempotent


def test_kill(workdir: Path) -> None:
    proc = Proc([PY, "-c", "import time; time.sleep(60)"], workdir, name="victim")
    assert proc.kill() == -9
    assert not proc.alive()


def test_log_names_are_unique(workdir: Path) -> None:
    a = Proc([PY, "-c", "pass"], workdir, name="same")
    b = Proc([PY, "-c", "pass"], workdir, name="same")
    assert a.log_path != b.log_path
    a.stop()
    b.stop()


def test_wait_http(workdir: Path) -> None:
    port = free_port()
    with Proc([PY, "-m", "http.server", "--bind", "127.0.0.1", str(port)], workdir, name="http", cwd=workdir) as proc:
        assert proc.wait_http(f"http://127.0.0.1:{port}/", timeout=10, expect_status=200) == 200
        with pytest.raises(TimeoutError):
            proc.wait_http(f"http://127.0.0.1:{port}/missing", timeout=0.3, expect_status=200)


def test_leak_scan_finds_registered_secrets_in_keygate_and_envoy_logs(workdir: Path) -> None:
    """The scan behind Stack.stop() fails on a registered secret in a keygate or Envoy log
    (restarted processes' logs too), names file and line but not the secret, and ignores
    the mock provider's log (it plays the provider, which receives the provider key)."""
    from harness import leaks

    secret = "kg_live_selftestSECRETselftest000_abcdef"
    leaks.register(secret)
    (workdir / "mock-provider.log").write_text(f"got {secret}\n")
    (workdir / "keygate.log").write_text("clean\n")
    assert leaks.assert_no_leaks(workdir) == 1
    (workdir / "sub").mkdir()
    (workdir / "sub" / "keygate.2.log").write_text(f"line one\nkey={secret}\n")
    with pytest.raises(AssertionError) as err:
        leaks.assert_no_leaks(workdir)
    assert "keygate.2.log line 2" in str(err.value)
    assert secret not in str(err.value)
    (workdir / "sub" / "keygate.2.log").write_text("clean\n")
    (workdir / "envoy.log").write_text("unregistered-but-passed-in\n")
    with pytest.raises(AssertionError):
        leaks.assert_no_leaks(workdir, ["unregistered-but-passed-in"])

"""A rotation killed halfway is finished or undone by the next run, and leaves no key orphaned
at the provider (docs/rotation.md, "Failure modes"):

- killed after minting (the new key exists at the mock, its value died with the process): the
  re-run revokes it at the mock, then rotates;
- killed after storing (the new key is the current KV version, the switch was under way): the
  re-run health-checks the stored key, switches every replica and finishes;
- a replica never confirms the switch: the previous version is current again, but the new key
  stays valid while that replica cannot confirm the old one (counted failed); a re-run finishes
  the rollback and revokes the new key;
- the admin credential is refused: the run stops before it starts, and rotates once it is fixed.

The process is SIGKILLed while the provider holds its health check (after minting) or while a
replica that never answers holds its switch (after storing), each seen in the rotation record
in Vault, so the kill lands exactly there."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.mock import mock_keys, mock_seed
from harness.rotation_stack import OPENAI_ADMIN_KEY, ORIGINAL_KEY, RotationStack, start_rotation_stack
from harness.vault_stack import wait_until


@pytest.fixture
def stack(cargo_build, workdir: Path) -> Iterator[RotationStack]:
    s = start_rotation_stack(workdir, grace="1s")
    yield s
    s.stop()


def kill_at(stack: RotationStack, run: subprocess.Popen[str], phase: str) -> str:
    """SIGKILLs `run` once the rotation record shows `phase`; returns the rotation id."""
    try:
        record = wait_until(lambda: (r := stack.record()).get("phase") == phase and r, timeout=20)
    finally:
        run.send_signal(signal.SIGKILL)
        output = run.communicate(timeout=10)[0]
    assert run.returncode == -signal.SIGKILL, output
    return record["attempt"]["id"]


def assert_nothing_orphaned(stack: RotationStack) -> None:
    """Once the grace period is over and a scheduled run revoked the old key, the mock has
    exactly one live key of the project: the one Vault holds."""
    time.sleep(1.2)
    due = stack.cli("rotate", "--due")
    assert due.returncode == 0, due.stdout + due.stderr
    live = [k["value"] for k in mock_keys(stack.mock_port) if k["status"] == "active"]
    assert live == [stack.current_key()], "every key but the current one is revoked at the provider"
    assert ORIGINAL_KEY not in live
    assert stack.request() == 200


def test_killed_after_minting_a_rerun_revokes_the_minted_key_and_rotates(stack: RotationStack) -> None:
    mock_seed(stack.mock_port, minted_latency_ms=30_000)
    run = stack.popen("rotate", "openai/production")
    first = kill_at(stack, run, "minted")
    [orphan] = [k for k in mock_keys(stack.mock_port) if k["minted"]]
    assert orphan["status"] == "active", "minted, never stored"
    assert stack.current_key() == ORIGINAL_KEY

    mock_seed(stack.mock_port, minted_latency_ms=0)
    out = stack.cli("rotate", "openai/production")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"taking over rotation {first} (left at `minted`" in out.stdout, out.stdout
    assert f"revoked the new key {orphan['id']} at the provider" in out.stdout, out.stdout
    assert next(k for k in mock_keys(stack.mock_port) if k["id"] == orphan["id"])["status"] == "deleted"
    assert stack.current_key() not in (ORIGINAL_KEY, orphan["value"])
    assert stack.record()["counts"] == {"rolled_back": 1, "ok": 1}
    assert_nothing_orphaned(stack)


def test_killed_after_storing_a_rerun_finishes_the_switch(stack: RotationStack) -> None:
    with socket.socket() as silent:
        # A replica that accepts connections and never answers holds the switch.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        targets = f"{stack.targets},127.0.0.1:{silent.getsockname()[1]}"
        run = stack.popen("rotate", "openai/production", targets=targets)
        first = kill_at(stack, run, "stored")
    stored = stack.current_key()
    assert stored != ORIGINAL_KEY and stack.credential()["metadata"]["version"] == 2

    out = stack.cli("rotate", "openai/production")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"taking over rotation {first} (left at `stored`" in out.stdout, out.stdout
    assert "health check of the stored key: ok" in out.stdout
    assert "2 replica(s) confirmed" in out.stdout
    assert stack.current_key() == stored, "the re-run finished the rotation, it did not start another"
    assert [k["value"] for k in mock_keys(stack.mock_port) if k["minted"]] == [stored]
    record = stack.record()
    assert record["counts"] == {"ok": 1} and record["phase"] in ("grace", "idle")
    assert stack.request() == 200
    assert_nothing_orphaned(stack)


def test_a_replica_that_cannot_confirm_the_switch_fails_safe_until_a_rerun_rolls_back(stack: RotationStack) -> None:
    """The new key is stored but one replica never confirms it: the rotation rolls back, but
    while that replica cannot confirm the old key either, the new key stays valid (it may be
    serving it) and the rotation counts as failed. A re-run with the replicas that answer
    finishes the rollback: the previous key is current again and the new key revoked."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        targets = f"{stack.targets},127.0.0.1:{silent.getsockname()[1]}"
        out = stack.cli("rotate", "openai/production", targets=targets)
    assert out.returncode != 0, out.stdout
    assert "switch failed" in out.stdout and "FAILED at switch" in out.stdout, out.stdout
    [minted] = [k for k in mock_keys(stack.mock_port) if k["minted"]]
    assert minted["status"] == "active", "not revoked while a replica may still use it"
    assert stack.current_key() == ORIGINAL_KEY, "the previous version is current again"
    record = stack.record()
    assert record["phase"] == "rolling_back" and record["counts"] == {"failed": 1}
    assert stack.request() == 200

    again = stack.cli("rotate", "--due")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"revoked the new key {minted['id']} at the provider" in again.stdout, again.stdout
    assert next(k for k in mock_keys(stack.mock_port) if k["id"] == minted["id"])["status"] == "deleted"
    record = stack.record()
    assert record["phase"] == "idle" and record["counts"] == {"failed": 1, "rolled_back": 1}
    assert stack.current_key() == ORIGINAL_KEY and stack.request() == 200


def test_a_refused_admin_credential_stops_the_rotation_before_it_starts(stack: RotationStack) -> None:
    """The admin credential in Vault is wrong: the run asks the provider's admin API about the
    key in use before anything else, so it stops there; nothing is minted, recorded or
    switched. Once the admin credential is fixed, a re-run rotates."""
    stack.bao.kv_put("ai-providers-admin/openai", {"api_key": "sk-admin-wrong-rotation-000000000000"})
    out = stack.cli("rotate", "openai/production")
    assert out.returncode != 0, out.stdout
    assert "keygate: error: openai: list project keys: HTTP 401" in out.stderr, out.stderr
    assert [k for k in mock_keys(stack.mock_port) if k["minted"]] == []
    assert stack.current_key() == ORIGINAL_KEY and stack.request() == 200
    assert not stack.record().get("counts") and stack.record().get("phase", "idle") == "idle"

    stack.bao.kv_put("ai-providers-admin/openai", {"api_key": OPENAI_ADMIN_KEY})
    fixed = stack.cli("rotate", "openai/production")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert stack.current_key() != ORIGINAL_KEY and stack.request() == 200

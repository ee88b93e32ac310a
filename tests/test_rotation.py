"""`keygate rotate` against real OpenBao, the mock provider (enforcing provider keys, serving
OpenAI's admin API) and two keygate replicas behind Envoy (docs/rotation.md).

- Under continuous traffic: no request fails, the upstream sees the old key until the switch
  and only the new key after it; the new key is a new KV version with rotated_at, rotated_by,
  the provider's key id and the previous version; the old key is revoked at the mock only
  after the grace period, by whichever run comes first, exactly once.
- The health check fails: rolled back, traffic never saw the bad key, the minted key is
  revoked at the mock, keygate_rotation_total{result="rolled_back"} moved on every replica.
- Two rotations of one credential started at once: exactly one rotation.
Every command's output and every keygate and Envoy log is scanned for every key (old, new,
admin) and token."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.keygate import counter
from harness.mock import mock_clear, mock_console_key, mock_keys, mock_seed
from harness.rotation_stack import CREDENTIAL_PATH, ORIGINAL_KEY, RotationStack, Traffic, start_rotation_stack
from harness.vault_stack import wait_until

GRACE = 4.0
ROLLED_BACK_ZERO = re.compile(
    r'^keygate_rotation_total\{(?=[^}]*credential="openai/production")(?=[^}]*result="rolled_back")[^}]*\} 0$', re.M)


@pytest.fixture
def stack(cargo_build, workdir: Path) -> Iterator[RotationStack]:
    s = start_rotation_stack(workdir, grace=f"{GRACE:.0f}s")
    yield s
    s.stop()


@pytest.fixture
def on_demand_stack(cargo_build, workdir: Path) -> Iterator[RotationStack]:
    """A credential with a rotation policy but no schedule (no `every`): rotated on demand."""
    s = start_rotation_stack(workdir, grace=f"{GRACE:.0f}s", every=None)
    yield s
    s.stop()


def live_minted(stack: RotationStack) -> list[dict]:
    return [k for k in mock_keys(stack.mock_port) if k["minted"] and k["status"] == "active"]


def test_rotation_under_traffic_switches_both_replicas_without_a_failed_request(stack: RotationStack) -> None:
    assert stack.request() == 200
    # The replicas' own Vault token reads the credential only: the admin credential has its
    # own path, which only the rotator's policy reads, and only the rotator writes keys.
    assert stack.bao.api("GET", "secret/data/ai-providers-admin/openai", token=stack.reader_token)[0] == 403
    assert stack.bao.api("GET", "secret/data/ai-providers-admin/openai", token=stack.rotator_token)[0] == 200
    assert stack.bao.api("POST", f"secret/data/{CREDENTIAL_PATH}", {"data": {"api_key": "x"}},
                         token=stack.reader_token)[0] == 403
    mock_clear(stack.mock_port)
    traffic = Traffic(stack)
    time.sleep(0.5)
    started = time.monotonic()
    out = stack.cli("rotate", "openai/production")
    finished = time.monotonic()
    seen_at_finish = len(stack.upstream_keys())
    time.sleep(0.5)
    results = traffic.stop()
    print(f"\nrotate took {finished - started:.2f}s; {len(results)} requests\n{out.stdout}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "openai/production: rotated" in out.stdout
    assert "2 replica(s) confirmed" in out.stdout
    # A rotation that goes well says nothing on stderr (the Vault client's error line for the
    # record that does not exist yet, a 404, stays out).
    assert out.stderr == "", out.stderr
    failed = [s for _, s in results if s != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {sorted(set(failed))}"

    new_key = stack.current_key()
    assert new_key != ORIGINAL_KEY and new_key.startswith("sk-svcacct-")
    keys = stack.upstream_keys()
    assert set(keys) == {ORIGINAL_KEY, new_key}, "only the old and the new key ever went upstream"
    first_new = keys.index(new_key)
    assert all(k == ORIGINAL_KEY for k in keys[:first_new]), "old key until the switch"
    assert all(k == new_key for k in keys[seen_at_finish:]), "only the new key once the command returned"
    assert len(keys) > seen_at_finish, "traffic went on after the switch"

    entry = stack.credential()
    data, version = entry["data"], entry["metadata"]["version"]
    [minted] = live_minted(stack)
    assert version == 2
    assert data["previous_version"] == "1" and data["rotated_by"] == "oncall"
    assert data["key_id"] == minted["id"] and data["key_owner"].startswith("svc_acct_")
    assert data["rotated_at"].endswith("Z") and data["owner"] == "ml-platform"
    assert "previous_key" not in data and ORIGINAL_KEY not in str(data), "the old key is only in version 1"

    record = stack.record()
    assert record["phase"] == "grace" and record["counts"] == {"ok": 1}
    assert record["last_health_check"]["ok"] is True
    for kg in stack.keygates:
        metrics = kg.metrics()
        assert counter(metrics, "keygate_rotation_total", credential="openai/production", result="ok") == 1
        assert counter(metrics, "keygate_credential_rotated_timestamp_seconds", credential="openai/production") > time.time() - 60

    # Inside the grace period the old key still works at the provider, and a scheduled run
    # leaves it alone.
    original = next(k for k in mock_keys(stack.mock_port) if k["value"] == ORIGINAL_KEY)
    assert original["status"] == "active"
    early = stack.cli("rotate", "--due")
    assert early.returncode == 0, early.stdout + early.stderr
    assert "not due: the last rotation's old key is revoked after" in early.stdout
    assert next(k for k in mock_keys(stack.mock_port) if k["value"] == ORIGINAL_KEY)["status"] == "active"

    # After it, two runs race to revoke it: one does, exactly once.
    time.sleep(max(0.0, GRACE - (time.monotonic() - finished)) + 0.2)
    runs = [stack.popen("rotate", "--due") for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in runs]
    assert all(p.returncode == 0 for p in runs), outputs
    revoked_lines = [o for o in outputs if "revoked at the provider" in o]
    assert len(revoked_lines) == 1, outputs
    original = next(k for k in mock_keys(stack.mock_port) if k["value"] == ORIGINAL_KEY)
    assert original["status"] == "deleted"
    assert original["revoked_at"] >= time.time() - (time.monotonic() - finished) + GRACE - 0.5
    assert stack.record()["phase"] == "idle"
    assert stack.request() == 200
    [rotated] = stack.audit("credential_rotated")
    # Audited as the authenticated admin identity (the shared token); Vault's record says who ran it.
    assert rotated["actor"] == "shared-token" and rotated["rotation"].startswith("rot_")
    assert len(stack.audit("old_key_revoked")) == 1, "revoked (and audited) exactly once"
    wait_until(lambda: stack.notices("credential_rotated") and stack.notices("old_key_revoked"), timeout=5)


def test_a_failing_health_check_rolls_back_and_revokes_the_minted_key(on_demand_stack: RotationStack) -> None:
    stack = on_demand_stack
    # The provider mints keys that do not work (as a key minted in the wrong project would not).
    mock_seed(stack.mock_port, refuse_minted=True)
    mock_clear(stack.mock_port)
    # KeygateRotationFailed is `increase(keygate_rotation_total{result=~"rolled_back|failed"}[1h]) > 0`:
    # the series is there at 0 before the first failure (any credential with a rotation policy,
    # scheduled or not), so the rollback is an increase.
    for kg in stack.keygates:
        assert ROLLED_BACK_ZERO.search(kg.metrics()), "no keygate_rotation_total{result=\"rolled_back\"} 0 series"
    traffic = Traffic(stack)
    out = stack.cli("rotate", "openai/production")
    results = traffic.stop()
    assert out.returncode != 0, out.stdout
    assert "health check failed" in out.stdout and "rolled back" in out.stdout, out.stdout
    assert all(s == 200 for _, s in results)
    assert set(stack.upstream_keys()) == {ORIGINAL_KEY}, "traffic never saw the minted key"
    assert stack.current_key() == ORIGINAL_KEY and stack.credential()["metadata"]["version"] == 1
    assert live_minted(stack) == [], "the minted key is revoked at the provider"
    record = stack.record()
    assert record["phase"] == "idle" and record["counts"] == {"rolled_back": 1}
    assert record["last"]["step"] == "health_check"
    for kg in stack.keygates:
        assert counter(kg.metrics(), "keygate_rotation_total", credential="openai/production", result="rolled_back") == 1
    [line] = stack.audit("rotation_rolled_back")
    assert line["result"] == "error" and "list models: HTTP 401" in line["reason"], line
    wait_until(lambda: stack.notices("rotation_rolled_back"), timeout=5)
    assert stack.notices("rotation_rolled_back")[0]["severity"] == "critical"


def test_two_rotations_started_at_once_rotate_once(stack: RotationStack) -> None:
    # The provider answers the new key's health check slowly, so both runs are surely under
    # way together: whichever claims the record first rotates, the other sees it.
    mock_seed(stack.mock_port, minted_latency_ms=1500)
    runs = [stack.popen("rotate", "openai/production") for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in runs]
    codes = sorted(p.returncode for p in runs)
    assert codes == [0, 1], outputs
    loser = outputs[[p.returncode for p in runs].index(1)]
    assert "a rotation is under way" in loser or "another run took over" in loser, loser
    minted = [k for k in mock_keys(stack.mock_port) if k["minted"]]
    assert len(minted) == 1, "exactly one key minted"
    assert stack.credential()["metadata"]["version"] == 2
    assert stack.record()["counts"] == {"ok": 1}
    wait_until(lambda: stack.request() == 200)


def test_anthropic_accepts_the_operators_key_and_deactivates_the_old_one(cargo_build, workdir: Path) -> None:
    """Anthropic's admin API cannot create keys: the operator makes one in the Console and hands
    it in on stdin; keygate health-checks it, switches, and deactivates the old key through the
    admin API once the grace period is over."""
    stack = start_rotation_stack(workdir, grace="1s", replicas=1, anthropic=True)
    try:
        old = stack.bao.ok("GET", "secret/data/ai-providers/anthropic/production")["data"]["data"]["api_key"]
        refused = stack.cli("rotate", "anthropic/production")
        assert refused.returncode != 0 and "--new-key-file" in refused.stderr, refused.stderr
        new = mock_console_key(stack.mock_port, "anthropic", "made by oncall")
        out = stack.cli("rotate", "anthropic/production", "--new-key-stdin", stdin=new["value"] + "\n")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"({new['id']})" in out.stdout, "the handed-in key was found through the admin API"
        stored = stack.bao.ok("GET", "secret/data/ai-providers/anthropic/production")["data"]["data"]
        assert stored["api_key"] == new["value"] and stored["key_id"] == new["id"]
        time.sleep(1.2)
        due = stack.cli("rotate", "--due")
        assert due.returncode == 0, due.stdout + due.stderr
        statuses = {k["value"]: k["status"] for k in mock_keys(stack.mock_port)}
        assert statuses[old] == "inactive" and statuses[new["value"]] == "active"
        listed = json.loads(stack.cli("credentials", "list", "--json").stdout)["credentials"]
        claude = next(c for c in listed if c["reference"] == "anthropic/production")
        assert claude["consumers"] == ["rotation-claude"] and claude["rotation_phase"] == "idle"
        assert claude["metadata"]["key_id"] == new["id"] and claude["last_health_check_ok"] is True
    finally:
        stack.stop()

"""Emergency revocation of a provider key (`keygate credentials revoke`), under continuous
traffic through Envoy and two replicas (docs/rotation.md, "Emergency"):

- without a replacement: one second after the command, no request reaches the provider with
  the revoked key; every request gets keygate's 503 `credential_revoked`; the key is revoked at
  the mock; Vault's newest version is a tombstone saying who and why; the audit log and the
  webhook say who and why; `keygate rotate` then restores service;
- with `--rotate` (and `--provider openai`): the consumers switch to the minted replacement
  without a failed request, and the old key is revoked at the mock at once.
The replicas share no Redis and no state file: the command reaches each one."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from harness import leaks
from harness.mock import header_values, mock_keys, mock_requests
from harness.paths import keygate_bin
from harness.replicas import Replicas
from harness.stack import SECRETS
from harness.rotation_stack import ORIGINAL_KEY, RotationStack, Traffic, start_rotation_stack
from harness.vault_stack import wait_until

BOUND = 1.0
ADMIN_TOKEN = "admin-token-file-revoke-2b7d41"


@pytest.fixture
def stack(cargo_build, workdir: Path) -> Iterator[RotationStack]:
    s = start_rotation_stack(workdir, grace="1h")
    yield s
    s.stop()


def upstream_with(stack: RotationStack, key: str) -> list[float]:
    """When the mock received each inference request made with `key`."""
    return [r["at"] for r in mock_requests(stack.mock_port)
            if r["path"].startswith("/v1/chat/") and header_values(r, "authorization") == [f"Bearer {key}"]]


def test_emergency_revoke_stops_every_replica_within_a_second(stack: RotationStack) -> None:
    traffic = Traffic(stack)
    time.sleep(0.5)
    issued = time.time()
    out = stack.cli("credentials", "revoke", "openai/production", "--reason", "pasted in a public gist")
    returned = time.time()
    time.sleep(1.5)
    results = traffic.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "revoked on 2 replica(s)" in out.stdout and "revoked at the provider" in out.stdout, out.stdout

    last_old = max(upstream_with(stack, ORIGINAL_KEY))
    print(f"\ncommand {returned - issued:.3f}s; last request with the revoked key {last_old - issued:.3f}s after "
          f"the command was issued\n{out.stdout}")
    assert last_old < issued + BOUND, f"the revoked key went upstream {last_old - issued:.2f}s after the command"
    after = [status for at, status in results if at > time.monotonic() - (time.time() - issued) + BOUND]
    assert after and set(after) == {503}, sorted(set(after))

    body = _denial(stack)
    assert body["error"]["code"] == "credential_revoked", body
    original = next(k for k in mock_keys(stack.mock_port) if k["value"] == ORIGINAL_KEY)
    assert original["status"] == "deleted" and original["revoked_at"] < issued + 5

    tombstone = stack.credential()
    assert "api_key" not in tombstone["data"] and tombstone["data"]["revoked"] is True
    assert tombstone["data"]["revoked_by"] == "oncall" and tombstone["data"]["revoked_reason"] == "pasted in a public gist"
    revoked = stack.audit("credential_revoked")
    assert len(revoked) == 2, "each replica audits the revocation it applied"
    for line in revoked:
        # The audit names the authenticated admin identity (the shared token here), never the
        # --actor/$USER the CLI writes into Vault's record.
        assert line["actor"] == "shared-token" and line["reason"] == "pasted in a public gist"
        assert line["credential"] == "openai/production" and line["fingerprint"].startswith("fp_")
    wait_until(lambda: stack.notices("credential_revoked"), timeout=5)
    notice = stack.notices("credential_revoked")[0]
    assert notice["actor"] == "shared-token" and notice["reason"] == "pasted in a public gist"
    assert notice["severity"] == "critical" and "openai/production" in notice["credential"]

    # The inventory says so; a rotation brings the credential back.
    listed = stack.cli("credentials", "list", "--json")
    [entry] = json.loads(listed.stdout)["credentials"]
    assert entry["state"] == "revoked" and entry["fingerprint"] == ""
    restored = stack.cli("rotate", "openai/production")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    wait_until(lambda: stack.request() == 200, timeout=5)


def test_emergency_revoke_with_rotate_switches_to_a_replacement(stack: RotationStack) -> None:
    traffic = Traffic(stack)
    time.sleep(0.3)
    issued = time.time()
    out = stack.cli("credentials", "revoke", "--provider", "openai", "--rotate", "--reason", "leaked CI log")
    time.sleep(1.5)
    results = traffic.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "replaced, revoked at the provider" in out.stdout, out.stdout
    failed = [s for _, s in results if s != 200]
    assert not failed, f"{len(failed)} of {len(results)} failed: {sorted(set(failed))}\n{out.stdout}"
    replacement = stack.current_key()
    assert replacement != ORIGINAL_KEY
    assert max(upstream_with(stack, ORIGINAL_KEY)) < issued + BOUND
    original = next(k for k in mock_keys(stack.mock_port) if k["value"] == ORIGINAL_KEY)
    assert original["status"] == "deleted", "revoked at once: no grace period in an emergency"
    record = stack.record()
    assert record["phase"] == "idle" and record["revocations"][-1]["reason"] == "leaked CI log"
    assert stack.request() == 200


def test_emergency_revoke_without_vault_stops_the_replicas_serving_the_secrets_files_key(cargo_build, workdir: Path) -> None:
    """With a secrets file there is no Vault to write and no rotator: the command revokes the
    key every replica serves, by its fingerprint, and says the rest is the operator's. A new
    key in the secrets file brings the credential back."""
    leaks.register(ADMIN_TOKEN)
    r = Replicas(workdir, None, extra={"admin": {"state_file": str(workdir / "state.yaml")}},
                 env={"KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        openai_key = r.keys["openai"].key
        assert set(r.statuses_with(openai_key, 6)) == {200}
        targets = ",".join(f"127.0.0.1:{port}" for port in r.admin_ports)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN, "USER": "oncall"}
        out = subprocess.run([str(keygate_bin()), "credentials", "revoke", "openai/production", "--reason", "leaked",
                              "--targets", targets], capture_output=True, text=True, timeout=30, env=env)
        leaks.assert_absent(out.stdout + out.stderr, "the output of keygate credentials revoke")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "revoked on 3 replica(s)" in out.stdout and "REVOKE IT AT THE PROVIDER BY HAND" in out.stdout, out.stdout
        assert set(r.statuses_with(openai_key, 6)) == {503}
        request = urllib.request.Request(f"http://127.0.0.1:{r.envoy_port}/v1/models",
                                         headers={"authorization": f"Bearer {openai_key}"})
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 (loopback)
        assert json.loads(denied.value.read())["error"]["code"] == "credential_revoked"
        for kg in r.keygates:
            kg.write_secrets({**SECRETS, "openai/production": "sk-proj-replacement-after-revocation-77"})
        wait_until(lambda: set(r.statuses_with(openai_key, 6)) == {200}, timeout=10)
    finally:
        r.stop()


def _denial(stack: RotationStack) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.envoy_port}/v1/chat/completions", method="POST",
        data=b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
        headers={"authorization": f"Bearer {stack.key}", "content-type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 (loopback)
    except urllib.error.HTTPError as e:
        assert e.code == 503
        return json.loads(e.read())
    raise AssertionError("the request was not denied")

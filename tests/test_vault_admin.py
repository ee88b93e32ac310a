"""Admin commands made durable in the Vault consumer store: `keygate suspend|resume|revoke
--config …` acts on the running keygates at once and writes the change to the consumer's KV
entry with the operator's Vault identity, so it outlives every replica and its state file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from harness import keygate_bin, leaks
from harness.bao import READ_POLICY, Bao, start_bao
from harness.keygate import mint_key
from harness.ports import free_port
from harness.procs import Proc
from harness.vault_stack import KEY_V1, VaultStack, assert_no_secrets, start_vault_stack, vault_credentials, wait_until

ADMIN_TOKEN = "admin-token-vault-store-7d2e"
ENTRY = "keygate/consumers/team-a"

# When each test ends, every keygate and Envoy log in its work directory (the restarted
# replica's too) is scanned for every registered secret: the admin token, the Vault tokens, the
# provider key and the consumer keys (conftest.py `leak_scan`).
pytestmark = pytest.mark.usefixtures("leak_scan")


@pytest.fixture
def stack(cargo_build, workdir) -> Iterator[tuple[Bao, VaultStack]]:
    leaks.register(ADMIN_TOKEN)
    bao = start_bao(workdir)
    bao.kv_put("ai-providers/openai/production", {"api_key": KEY_V1})
    bao.policy("keygate", READ_POLICY)
    key = mint_key("team-a")
    bao.kv_put(ENTRY, {"environment": "production", "provider": "openai", "keys": [{"hash": key.hash}],
                       "scope": {"routes": ["POST /v1/chat/completions"]}})
    # The replica reads with a read-only token; only the operator's CLI may write the store.
    reader = bao.token(["keygate"], ttl="1h")
    consumers = {"source": "vault", "path": "keygate/consumers", "refresh": "300ms"}
    admin = {"listen": f"127.0.0.1:{free_port()}", "state_file": str(workdir / "state.yaml")}
    s = start_vault_stack(workdir, bao, vault_credentials(bao.address), {"VAULT_TOKEN": reader,
                          "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN}, consumers, extra={"admin": admin})
    s.key = key.key
    yield bao, s
    bao.stop()


def cli(s: VaultStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN,
           "USER": "oncall", "VAULT_TOKEN": "root"}
    target = s.keygate.config["admin"]["listen"]
    out = subprocess.run([str(keygate_bin()), *args, "--targets", target, "--config", str(s.keygate.config_path)],
                         capture_output=True, text=True, timeout=30, env=env)
    leaks.assert_absent(out.stdout + out.stderr, f"the output of keygate {' '.join(args)}")
    return out


def stored(bao: Bao) -> dict:
    return bao.ok("GET", f"secret/data/{ENTRY}")["data"]["data"]


def restart_without_state(s: VaultStack, workdir: Path) -> None:
    """A replica rescheduled on a fresh node: no state file, only the store."""
    s.keygate.proc.stop()
    (workdir / "state.yaml").unlink(missing_ok=True)
    s.keygate.proc = Proc([keygate_bin(), "serve", "--config", s.keygate.config_path], workdir, name="keygate",
                          env=s.keygate.proc.env)
    s.keygate.proc.wait_http(f"http://127.0.0.1:{s.keygate.admin_port}/readyz", timeout=20, expect_status=200)


def test_suspend_and_resume_are_written_to_the_vault_store(stack, workdir: Path) -> None:
    bao, s = stack
    assert s.status() == 200
    out = cli(s, "suspend", "team-a", "--reason", "spend spike")
    assert out.returncode == 0, out.stderr
    assert "store: vault secret/keygate/consumers/team-a" in out.stdout
    assert s.status() == 403, "in force at once, through the admin API"
    assert stored(bao)["status"] == "suspended"

    restart_without_state(s, workdir)
    assert s.status() == 403, "the store, not the lost state file, keeps it suspended"

    out = cli(s, "resume", "team-a", "--reason", "false alarm")
    assert out.returncode == 0, out.stderr
    assert stored(bao)["status"] == "active"
    wait_until(lambda: s.status() == 200, timeout=5)
    assert_no_secrets(s)


def test_revocations_are_written_to_the_vault_store_and_are_final(stack, workdir: Path) -> None:
    bao, s = stack
    second = mint_key("team-a")
    entry = stored(bao)
    bao.kv_put(ENTRY, {**entry, "keys": [*entry["keys"], {"hash": second.hash}]})
    wait_until(lambda: s.status(key=second.key) == 200, timeout=5)

    listing = cli(s, "consumers", "list")
    assert listing.returncode == 0, listing.stderr
    first_id = listing.stdout.split("keys ")[-1].split(",")[0].strip()
    out = cli(s, "revoke", "key", first_id, "--reason", "pasted in a ticket")
    assert out.returncode == 0, out.stderr
    assert [k["hash"] for k in stored(bao)["keys"]] == [second.hash]
    assert s.status() == 401 and s.status(key=second.key) == 200

    out = cli(s, "revoke", "consumer", "team-a", "--reason", "leaked")
    assert out.returncode == 0, out.stderr
    assert stored(bao)["status"] == "revoked"
    restart_without_state(s, workdir)
    assert s.status(key=second.key) == 403

    out = cli(s, "resume", "team-a", "--reason", "oops")
    assert out.returncode != 0
    assert "revocation is final" in out.stderr
    assert stored(bao)["status"] == "revoked"
    assert s.status(key=second.key) == 403

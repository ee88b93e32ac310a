"""`scripts/demo --rotation`: the demo with its provider keys in OpenBao (`bao server -dev`) and
the mock provider playing OpenAI's admin API and enforcing keys, so that `keygate rotate`
rotates the demo credential end to end: mint, health check, a new KV version, the switch,
then the old key revoked at the (mock) provider after a one-minute grace period.

Everything here is a demo: the tokens and keys below are published, OpenBao keeps nothing on
disk, and the admin API listens on loopback only.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import free_port, keygate_bin
from harness.bao import READ_POLICY, Bao, start_bao
from harness.mock import mock_seed

HOST = "127.0.0.1"
CREDENTIAL = "openai/development"
ADMIN_TOKEN = "demo-admin-token-not-a-secret"
OPENAI_ADMIN_KEY = "sk-admin-demo-not-a-real-admin-key"
PROJECT = "proj_demo"
GRACE = "1m"
ROTATOR_POLICY = """
path "secret/data/ai-providers/*"        { capabilities = ["create", "read", "update"] }
path "secret/metadata/ai-providers/*"    { capabilities = ["read"] }
path "secret/data/ai-providers-admin/*"  { capabilities = ["read"] }
"""


@dataclass
class RotationDemo:
    bao: Bao
    admin_port: int
    config: Path
    reader_token: str
    rotator_token: str

    def keygate_env(self) -> dict[str, str]:
        """What `keygate serve` runs with: the read-only Vault token and the admin token."""
        return {"VAULT_TOKEN": self.reader_token, "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN}

    def operator_env(self) -> dict[str, str]:
        """What the operator's `keygate rotate` / `keygate credentials` run with."""
        return {"VAULT_TOKEN": self.rotator_token, "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN,
                "KEYGATE_CONFIG": str(self.config), "KEYGATE_ADMIN_TARGETS": f"{HOST}:{self.admin_port}"}

    def snippet(self, kg: str) -> str:
        exports = " \\\n    ".join(f"{k}={v}" for k, v in self.operator_env().items())
        return f"""
Rotation: the provider keys are in OpenBao ({self.bao.address}), the mock provider plays
OpenAI's admin API (project {PROJECT}) and refuses unknown or revoked keys. In another terminal:

  export {exports}
  {kg} credentials list                  # the inventory
  {kg} rotate {CREDENTIAL}       # mint, health check, store, switch: requests keep working
  {kg} rotate --due                      # after the {GRACE} grace period: revokes the old key at the provider
"""

    def stop(self) -> None:
        self.bao.stop()


def token(bao: Bao, policy: str) -> str:
    """A token with `policy` that lives as long as a demo does (renewed by keygate)."""
    out = bao.ok("POST", "auth/token/create", {"policies": [policy], "ttl": "24h", "renewable": True})
    return out["auth"]["client_token"]


def replace_block(text: str, key: str, block: str) -> str:
    """Replace the top-level `key:` block of a YAML text (its line and the indented, blank or
    comment lines after it) with `block`, or append `block`; other lines stay as they were."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"{key}:\s*(#.*)?$", line)), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + block
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " #"):
        end += 1
    return "\n".join([*lines[:start], *block.rstrip("\n").splitlines(), "", *lines[end:]]) + "\n"


def start(work: Path, config: Path, mock_port: int) -> RotationDemo:
    """OpenBao with the demo's credentials (from the secrets file the config names), the mock's
    key store, and the config switched to Vault with an admin API and a rotation policy."""
    parsed: dict[str, Any] = yaml.safe_load(config.read_text())
    creds = parsed.get("credentials") or {}
    if creds.get("source", "file") != "file" or CREDENTIAL not in str(parsed.get("providers")):
        raise ValueError(f"--rotation needs a config with a secrets file and a provider using {CREDENTIAL}")
    secrets: dict[str, dict[str, Any]] = yaml.safe_load((config.parent / creds["path"]).read_text())
    bao = start_bao(work)
    try:
        bao.policy("keygate", READ_POLICY)
        bao.policy("rotator", ROTATOR_POLICY)
        for reference, entry in secrets.items():
            bao.kv_put(f"ai-providers/{reference}", entry)
        bao.kv_put("ai-providers-admin/openai", {"api_key": OPENAI_ADMIN_KEY})
        demo = RotationDemo(bao, free_port(), config, token(bao, "keygate"), token(bao, "rotator"))
    except BaseException:
        bao.stop()
        raise
    kinds = {name: p.get("kind") for name, p in (parsed.get("providers") or {}).items()}
    keys = []
    for reference, entry in secrets.items():
        provider = kinds.get(reference.split("/", 1)[0])
        if provider in ("openai", "anthropic"):
            keys.append({"id": f"key_demo_{len(keys)}", "value": entry["api_key"], "provider": provider,
                         "project": PROJECT if provider == "openai" else None, "name": "demo"})
    mock_seed(mock_port, enforce=True, admin_keys=[OPENAI_ADMIN_KEY], keys=keys)
    text = replace_block(config.read_text(), "credentials", f"""credentials:               # --rotation: the provider keys are in OpenBao
  source: vault
  vault:
    address: {bao.address}
    auth: {{method: token, token_env: VAULT_TOKEN}}   # keygate's own token: read only
  path_template: ai-providers/{{reference}}
""")
    text = replace_block(text, "admin", f"""admin:                     # --rotation: the admin API (KEYGATE_ADMIN_TOKEN), for keygate rotate
  listen: {HOST}:{demo.admin_port}
  state_file: admin-state.yaml
  audit_log: audit.jsonl
""")
    text = replace_block(text, "rotation", f"""rotation:
  credentials:
    {CREDENTIAL}:
      every: 30d
      grace: {GRACE}                    # a demo: revoke the old key a minute after the switch
      admin_credential: ai-providers-admin/openai
      settings: {{project: {PROJECT}, api_base: "http://{HOST}:{mock_port}"}}
""")
    config.write_text(text)
    return demo


def self_test(demo: RotationDemo, request: Any, mock_port: int) -> None:
    """The snippet's commands, with requests before and after. The grace period is cut to 2s in
    the working config first (as a user may edit it), so that `rotate --due` revokes the old key
    at the mock, which then refuses it."""
    import os
    import time
    import urllib.error
    import urllib.request

    old_key = yaml.safe_load((demo.config.parent / "secrets.yaml").read_text())[CREDENTIAL]["api_key"]
    demo.config.write_text(demo.config.read_text().replace(f"grace: {GRACE} ", "grace: 2s "))
    request()
    env = {**os.environ, **demo.operator_env()}

    def keygate(*args: str) -> str:
        out = subprocess.run([str(keygate_bin()), *args], capture_output=True, text=True, timeout=120, env=env,
                             check=False)
        print(out.stdout, end="", flush=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    assert f"{CREDENTIAL}: rotated" in keygate("rotate", CREDENTIAL)
    request()
    listed = keygate("credentials", "list")
    assert f"{CREDENTIAL}  ok" in listed and " v2" in listed, listed
    time.sleep(2.5)
    assert "revoked at the provider" in keygate("rotate", "--due")
    upstream = urllib.request.Request(f"http://{HOST}:{mock_port}/v1/models",
                                      headers={"authorization": f"Bearer {old_key}"})
    try:
        urllib.request.urlopen(upstream, timeout=5)  # noqa: S310 (loopback)
        raise AssertionError("the mock provider still accepts the old key")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
    request()
    print("demo rotation self-test: ok", flush=True)

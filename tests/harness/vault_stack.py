"""A keygate + Envoy + mock provider stack whose credentials come from a real OpenBao, and the
checks the Vault tests share."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import leaks
from .bao import Bao
from .envoy_config import render, start_envoy
from .keygate import Keygate, mint_key, start_keygate
from .mock import header_values, mock_requests, start_mock
from .paths import REPO_ROOT
from .ports import free_port
from .procs import Proc
from .stack import KEYGATE_LOG, consumer, providers

KEY_V1 = "sk-proj-vault-version-one-111"
KEY_V2 = "sk-proj-vault-version-two-222"
ANT_KEY = "sk-ant-vault-anthropic-333"


@dataclass
class VaultStack:
    bao: Bao
    keygate: Keygate
    envoy: Proc
    envoy_port: int
    mock_port: int
    key: str

    def status(self, conn: http.client.HTTPConnection | None = None, key: str | None = None) -> int:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.envoy_port, timeout=10)
        try:
            conn.request(
                "POST", "/v1/chat/completions", body=b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
                headers={"authorization": f"Bearer {key or self.key}", "content-type": "application/json"},
            )
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            if own:
                conn.close()

    def upstream_keys(self) -> list[str]:
        return [header_values(r, "authorization")[0] for r in mock_requests(self.mock_port)]


def vault_credentials(address: str, **overrides: Any) -> dict[str, Any]:
    creds: dict[str, Any] = {
        "source": "vault",
        "vault": {"address": address, "auth": {"method": "token"}, "timeout": "1s"},
        "refresh_interval": "300ms",
        "max_stale": "1h",
        "startup_timeout": "10s",
    }
    creds.update(overrides)
    return creds


def start_vault_stack(
    workdir: Path, bao: Bao, credentials: dict[str, Any], env: dict[str, str], consumers: Any = None,
    extra: dict[str, Any] | None = None,
) -> VaultStack:
    mock, mock_port = start_mock(workdir)
    key = mint_key("vault-team")
    if consumers is None:
        consumers = [consumer("vault-team", "openai", ["POST /v1/chat/completions"], key)]
    kg = start_keygate(
        workdir,
        {"credentials": credentials, "providers": providers(), "consumers": consumers, **(extra or {})},
        {},
        env={"KEYGATE_LOG": KEYGATE_LOG, **env},
    )
    envoy_port = free_port()
    config = render(
        REPO_ROOT / "envoy" / "ext_proc.yaml", workdir / "envoy.yaml", listen_port=envoy_port,
        admin_port=free_port(), keygate_port=kg.grpc_port, upstream_port=mock_port,
    )
    return VaultStack(bao, kg, start_envoy(config, workdir), envoy_port, mock_port, key.key)


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def assert_no_secrets(stack: VaultStack, *extra: str) -> None:
    """No Vault-served provider key, consumer key or registered secret (harness.leaks) is in
    keygate's or Envoy's log."""
    text = stack.keygate.proc.log_text() + stack.envoy.log_text()
    for secret in dict.fromkeys((KEY_V1, KEY_V2, ANT_KEY, stack.key, *extra, *leaks.registered())):
        assert secret not in text, f"{leaks.redacted(secret)} is in keygate's or Envoy's log"

"""A full request path for a test: mock provider ← Envoy (ext_proc or ext_authz) → keygate."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import leaks
from .envoy_config import render, start_envoy
from .keygate import Keygate, MintedKey, mint_key, start_keygate
from .mock import start_mock
from .paths import REPO_ROOT
from .ports import HOST, free_port
from .procs import Proc

OPENAI_SECRET = "sk-proj-UPSTREAM-openai-9f8e7d6c5b4a"
ANTHROPIC_SECRET = "sk-ant-UPSTREAM-anthropic-1a2b3c4d5e6f"
SECRETS = {"openai/production": OPENAI_SECRET, "anthropic/production": ANTHROPIC_SECRET}

KEYGATE_LOG = "debug,h2=info,hyper=info,tonic=info,tower=info,hyper_util=info"


@dataclass
class Stack:
    mode: str
    mock: Proc
    mock_port: int
    keygate: Keygate
    envoy: Proc
    envoy_port: int
    keys: dict[str, MintedKey] = field(repr=False)
    workdir: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.envoy_port}"

    def secrets(self) -> list[str]:
        """Every secret that must never show up in a log: the provider keys, this stack's
        consumer keys, and every key registered with harness.leaks (minted in a test, too)."""
        return list(dict.fromkeys([*SECRETS.values(), *(k.key for k in self.keys.values()), *leaks.registered()]))

    def logs(self) -> dict[str, str]:
        return {"keygate": self.keygate.proc.log_text(), "envoy": self.envoy.log_text()}

    def stop(self, scan: bool = True) -> None:
        """Stop Envoy, keygate and the mock; then (unless `scan=False`, which a test must
        justify) assert that no secret is in any keygate or Envoy log under the work
        directory, including those of processes the test restarted."""
        for p in (self.envoy, self.keygate.proc, self.mock):
            p.stop()
        if scan:
            leaks.assert_no_leaks(self.workdir, self.secrets())


def consumer(name: str, provider: str, routes: list[str], key: MintedKey, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "team": "tests",
        "environment": "production",
        "provider": provider,
        "keys": [{"hash": key.hash, **extra.pop("key_fields", {})}],
        "scope": {"routes": routes},
    }
    entry.update(extra)
    return entry


def standard_consumers() -> tuple[dict[str, MintedKey], list[dict[str, Any]]]:
    """The consumer set the spine tests use: one per outcome."""
    keys = {n: mint_key(n) for n in ["openai", "anthropic", "suspended", "revoked", "expired", "wide"]}
    chat = ["POST /v1/chat/completions", "POST /v1/embeddings", "GET /v1/models", "GET /v1/models/*"]
    consumers = [
        consumer("team-openai", "openai", chat, keys["openai"]),
        consumer("team-anthropic", "anthropic", ["POST /v1/messages"], keys["anthropic"]),
        consumer("team-suspended", "openai", chat, keys["suspended"], status="suspended"),
        consumer("team-revoked", "openai", chat, keys["revoked"], status="revoked"),
        consumer("team-expired", "openai", chat, keys["expired"], key_fields={"expires": "2020-01-01T00:00:00Z"}),
        consumer("team-wide", "openai", ["* /v1/**"], keys["wide"]),
    ]
    return keys, consumers


def providers() -> dict[str, Any]:
    return {
        "openai": {"kind": "openai", "credentials": {"production": "openai/production"}},
        "anthropic": {"kind": "anthropic", "credentials": {"production": "anthropic/production"}},
    }


def start_stack(
    workdir: Path,
    mode: str,
    extra: dict[str, Any] | None = None,
    provider_limits: dict[str, dict[str, Any]] | None = None,
    canaries: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Stack:
    """Start mock, keygate and Envoy (`mode` is "ext_proc" or "ext_authz") on free ports.
    `extra` is merged into keygate's config (e.g. `usage`); `provider_limits` sets a
    provider's `limits` defaults."""
    mock, mock_port = start_mock(workdir)
    keys, consumers = standard_consumers()
    for name in canaries:
        keys[name] = mint_key(name)
        consumers.append(consumer(name, "openai", ["* /v1/**"], keys[name], canary=True))
    provs = providers()
    for name, limits in (provider_limits or {}).items():
        provs[name]["limits"] = limits
    kg = start_keygate(
        workdir,
        {"providers": provs, "consumers": consumers, **(extra or {})},
        SECRETS,
        env={"KEYGATE_LOG": KEYGATE_LOG, **(env or {})},
    )
    envoy_port = free_port()
    config = render(
        REPO_ROOT / "envoy" / f"{mode}.yaml",
        workdir / f"envoy-{mode}.yaml",
        listen_port=envoy_port,
        admin_port=free_port(),
        keygate_port=kg.grpc_port,
        upstream_port=mock_port,
    )
    envoy = start_envoy(config, workdir)
    return Stack(mode, mock, mock_port, kg, envoy, envoy_port, keys, workdir)

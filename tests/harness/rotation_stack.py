"""A stack for provider-key rotation: real OpenBao (the credential and its rotation record), the
mock provider enforcing provider keys and serving the admin APIs, two keygate replicas with the
admin API behind one Envoy (round robin), and the `keygate rotate` / `keygate credentials`
commands run as an operator would, with a rotator Vault token that may write the credentials
and read the admin credential (keygate's own token stays read-only)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import leaks
from .bao import READ_POLICY, Bao, start_bao
from .envoy_config import hold_responses, render, start_envoy
from .keygate import Keygate, mint_key, start_keygate
from .mock import header_values, mock_console_key, mock_keys, mock_requests, mock_seed, start_mock
from .paths import REPO_ROOT, keygate_bin
from .ports import free_port
from .procs import Proc
from .stack import KEYGATE_LOG, consumer, providers
from .vault_stack import vault_credentials
from .webhook import WebhookReceiver

ADMIN_TOKEN = "admin-token-rotation-5c1e9a"
OPENAI_ADMIN_KEY = "sk-admin-openai-rotation-0a9b8c7d6e5f4a3b"
ORIGINAL_KEY = "sk-proj-rotation-original-0001112223334445"
ANTHROPIC_ADMIN_KEY = "sk-ant-admin01-rotation-9f8e7d6c5b4a3210"
PROJECT = "proj_rotation"
CREDENTIAL = "openai/production"
CREDENTIAL_PATH = f"ai-providers/{CREDENTIAL}"
RECORD_PATH = f"{CREDENTIAL_PATH}.rotation"

ROTATOR_POLICY = """
path "secret/data/ai-providers/*"        { capabilities = ["create", "read", "update"] }
path "secret/metadata/ai-providers/*"    { capabilities = ["read"] }
path "secret/data/ai-providers-admin/*"  { capabilities = ["read"] }
"""


@dataclass
class RotationStack:
    workdir: Path
    bao: Bao
    mock: Proc
    mock_port: int
    keygates: list[Keygate]
    envoy: Proc
    envoy_port: int
    key: str
    rotator_token: str
    config_path: Path
    config: dict[str, Any] = field(repr=False)
    hook: WebhookReceiver | None = None
    reader_token: str = field(default="", repr=False)  # the replicas' own (read-only) Vault token

    @property
    def targets(self) -> str:
        return ",".join(k.config["admin"]["listen"] for k in self.keygates)

    def cli(self, *args: str, timeout: float = 60, stdin: str | None = None, env: dict[str, str] | None = None,
            targets: str | None = None) -> subprocess.CompletedProcess[str]:
        """Runs `keygate ARGS` as the operator (rotator Vault token, admin token, every replica
        as a target); its output must hold no registered secret."""
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN,
                    "USER": "oncall", "VAULT_TOKEN": self.rotator_token, **(env or {})}
        out = subprocess.run([str(keygate_bin()), *args, "--targets", targets or self.targets,
                              "--config", str(self.config_path)],
                             capture_output=True, text=True, timeout=timeout, env=full_env, input=stdin)
        leaks.assert_absent(out.stdout + out.stderr, f"the output of keygate {' '.join(args)}")
        return out

    def popen(self, *args: str, targets: str | None = None) -> subprocess.Popen[str]:
        """`keygate ARGS` in the background (to kill it halfway)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN,
               "USER": "oncall", "VAULT_TOKEN": self.rotator_token}
        return subprocess.Popen([str(keygate_bin()), *args, "--targets", targets or self.targets,
                                 "--config", str(self.config_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def credential(self) -> dict[str, Any]:
        return self.bao.ok("GET", f"secret/data/{CREDENTIAL_PATH}")["data"]

    def record(self) -> dict[str, Any]:
        status, out = self.bao.api("GET", f"secret/data/{RECORD_PATH}")
        return out["data"]["data"] if status == 200 else {}

    def current_key(self) -> str:
        key = self.credential()["data"].get("api_key", "")
        leaks.register(key)
        return key

    def upstream_keys(self) -> list[str]:
        """The provider key of every inference request the mock received, in order."""
        return [header_values(r, "authorization")[0].removeprefix("Bearer ")
                for r in mock_requests(self.mock_port) if r["path"].startswith("/v1/chat/")]

    def request(self, conn: http.client.HTTPConnection | None = None) -> int:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.envoy_port, timeout=10)
        try:
            conn.request("POST", "/v1/chat/completions", body=b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
                         headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            if own:
                conn.close()

    def stop(self) -> None:
        """Stops everything, then scans every keygate and Envoy log, and every replica's audit
        log, for every key the mock ever issued (old, minted, admin) and every token."""
        try:
            mock_keys(self.mock_port)  # registers every minted key for the scan
        except OSError:
            pass
        for p in (self.envoy, *(k.proc for k in self.keygates), self.mock):
            p.stop()
        self.bao.stop()
        leaks.assert_no_leaks(self.workdir, [self.key])
        for audit in self.workdir.rglob("audit.jsonl"):
            leaks.assert_absent(audit.read_text(), str(audit))
        if self.hook:
            self.hook.close()
            for body in self.hook.raw:
                leaks.assert_absent(body.decode(errors="replace"), "a webhook body")

    def audit(self, event: str) -> list[dict[str, Any]]:
        """Every replica's audit lines of `event`."""
        return [line for kg in self.keygates
                for line in map(json.loads, (kg.config_path.parent / "audit.jsonl").read_text().splitlines())
                if line["event"] == event]

    def notices(self, event: str) -> list[dict[str, Any]]:
        assert self.hook, "the stack has no webhook"
        return [n for n in self.hook.received if n.get("event") == event]


class Traffic:
    """Requests through Envoy, one after another on two connections, until stopped; each
    status is kept with the time it came back."""

    def __init__(self, stack: RotationStack, pause: float = 0.005) -> None:
        self.stack, self.pause = stack, pause
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.envoy_port, timeout=10)
        while not self._stop.is_set():
            try:
                status = self.stack.request(conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.stack.envoy_port, timeout=10)
                status = 0
            self.results.append((time.monotonic(), status))
            time.sleep(self.pause)
        conn.close()

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        return sorted(self.results)


def start_rotation_stack(workdir: Path, *, grace: str = "1h", every: str | None = "30d",
                         replicas: int = 2, policy: dict[str, Any] | None = None,
                         config_extra: dict[str, Any] | None = None, anthropic: bool = False) -> RotationStack:
    """The stack, with a webhook receiving every replica's notifications. With `anthropic`, an
    Anthropic consumer too, whose credential (a key made in the mock's console) has a policy."""
    leaks.register(ADMIN_TOKEN, OPENAI_ADMIN_KEY, ORIGINAL_KEY, ANTHROPIC_ADMIN_KEY)
    hook = WebhookReceiver()
    try:
        return _start(workdir, grace, every, replicas, policy, config_extra, hook, anthropic)
    except BaseException:
        hook.close()
        raise


def _start(workdir: Path, grace: str, every: str | None, replicas: int, policy: dict[str, Any] | None,
           config_extra: dict[str, Any] | None, hook: WebhookReceiver, anthropic: bool) -> RotationStack:
    bao = start_bao(workdir)
    try:
        bao.policy("keygate", READ_POLICY)
        bao.policy("rotator", ROTATOR_POLICY)
        reader = bao.token(["keygate"], ttl="1h")
        rotator = bao.token(["rotator"], ttl="1h")
        bao.kv_put(CREDENTIAL_PATH, {"api_key": ORIGINAL_KEY, "owner": "ml-platform"})
        bao.kv_put("ai-providers-admin/openai", {"api_key": OPENAI_ADMIN_KEY})
        mock, mock_port = start_mock(workdir)
    except BaseException:
        bao.stop()
        raise
    mock_seed(mock_port, enforce=True, admin_keys=[OPENAI_ADMIN_KEY, ANTHROPIC_ADMIN_KEY],
              keys=[{"id": "key_original", "value": ORIGINAL_KEY, "provider": "openai", "project": PROJECT,
                     "name": "original"}])
    key = mint_key("rotation-team")
    extra_consumers: list[dict[str, Any]] = []
    extra_policies: dict[str, Any] = {}
    if anthropic:
        console = mock_console_key(mock_port, "anthropic", "original")
        bao.kv_put("ai-providers/anthropic/production", {"api_key": console["value"], "owner": "ml-platform"})
        bao.kv_put("ai-providers-admin/anthropic", {"api_key": ANTHROPIC_ADMIN_KEY})
        extra_consumers.append(consumer("rotation-claude", "anthropic", ["POST /v1/messages"], mint_key("rotation-claude")))
        extra_policies["anthropic/production"] = {
            "grace": grace, "admin_credential": "ai-providers-admin/anthropic",
            "settings": {"api_base": f"http://127.0.0.1:{mock_port}"}}
    rotation_policy = {"grace": grace, "admin_credential": "ai-providers-admin/openai",
                       "settings": {"project": PROJECT, "api_base": f"http://127.0.0.1:{mock_port}"}, **(policy or {})}
    if every:
        rotation_policy["every"] = every
    config: dict[str, Any] = {
        "credentials": vault_credentials(bao.address, refresh_interval="1h"),
        "providers": providers(),
        "consumers": [consumer("rotation-team", "openai", ["POST /v1/chat/completions", "GET /v1/models"], key),
                      *extra_consumers],
        "rotation": {"lease": "30s", "credentials": {CREDENTIAL: rotation_policy, **extra_policies}},
        "notify": {"webhooks": [{"url": hook.url, "format": "generic"}]},
        **(config_extra or {}),
    }
    keygates: list[Keygate] = []
    for i in range(replicas):
        sub = workdir / f"replica{i}"
        sub.mkdir()
        replica = {**config, "admin": {"listen": f"127.0.0.1:{free_port()}", "state_file": str(sub / "state.yaml"),
                                       "audit_log": str(sub / "audit.jsonl")}}
        keygates.append(start_keygate(sub, replica, {}, env={"KEYGATE_LOG": KEYGATE_LOG, "VAULT_TOKEN": reader,
                                                            "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN}))
    envoy_port = free_port()
    rendered = render(REPO_ROOT / "envoy" / "ext_proc.yaml", workdir / "envoy.yaml", listen_port=envoy_port,
                      admin_port=free_port(), keygate_port=keygates[0].grpc_port, upstream_port=mock_port)
    # One Envoy, several keygates: the response observer's stream could reach another one.
    envoy_config = hold_responses(yaml.safe_load(rendered.read_text()))
    cluster = next(c for c in envoy_config["static_resources"]["clusters"] if c["name"] == "keygate")
    cluster["lb_policy"] = "ROUND_ROBIN"
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": k.grpc_port}}}}
        for k in keygates
    ]
    rendered.write_text(yaml.safe_dump(envoy_config))
    envoy = start_envoy(rendered, workdir)
    return RotationStack(workdir, bao, mock, mock_port, keygates, envoy, envoy_port, key.key, rotator,
                         keygates[0].config_path, config, hook, reader)

"""A real OpenBao dev server (`bao server -dev`, the Vault API) for a test, plus the few API
calls tests need to set it up."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import leaks
from .paths import venv_bin
from .ports import HOST, free_port
from .procs import Proc

ROOT_TOKEN = "root"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_ACCOUNT_AUDIENCE = "vault"


@dataclass
class Bao:
    proc: Proc
    port: int
    workdir: Path
    ca_cert: Path | None = None
    namespace: str | None = None

    @property
    def address(self) -> str:
        scheme = "https" if self.ca_cert else "http"
        return f"{scheme}://{HOST}:{self.port}"

    def api(self, method: str, path: str, body: Any = None, token: str = ROOT_TOKEN) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.address}/v1/{path}", data=data, method=method)
        req.add_header("X-Vault-Token", token)
        if self.namespace:
            req.add_header("X-Vault-Namespace", self.namespace)
        context = ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else None
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as r:  # noqa: S310 (loopback)
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.api(method, path, body)
        assert status in (200, 204), f"{method} {path}: {status} {out}"
        return out

    def kv_put(self, path: str, data: dict[str, Any], mount: str = "secret") -> int:
        """Write a KV v2 secret; a string `api_key` in it is registered for the leak scan."""
        if isinstance(data.get("api_key"), str):
            leaks.register(data["api_key"])
        return self.ok("POST", f"{mount}/data/{path}", {"data": data})["data"]["version"]

    def kv_delete(self, path: str, mount: str = "secret") -> None:
        self.ok("DELETE", f"{mount}/metadata/{path}")

    def policy(self, name: str, hcl: str) -> None:
        self.ok("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def token(self, policies: list[str], ttl: str, renewable: bool = True) -> str:
        """A new token (registered for the leak scan)."""
        out = self.ok(
            "POST", "auth/token/create",
            {"policies": policies, "ttl": ttl, "renewable": renewable, "explicit_max_ttl": "1h", "no_default_policy": False},
        )
        token = out["auth"]["client_token"]
        leaks.register(token)
        return token

    def approle(self, role: str, policies: list[str], token_ttl: str) -> tuple[str, str]:
        status, _ = self.api("POST", "sys/auth/approle", {"type": "approle"})
        assert status in (200, 204, 400), status  # 400: already enabled
        self.ok("POST", f"auth/approle/role/{role}", {"token_policies": policies, "token_ttl": token_ttl, "token_max_ttl": "1h"})
        role_id = self.ok("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.ok("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
        leaks.register(secret_id)
        return role_id, secret_id

    def service_account_auth(
        self, mount: str, issuer_public_pem: str, role: str, subject: str, policies: list[str],
        token_ttl: str, token_max_ttl: str,
    ) -> None:
        """Trust Kubernetes service-account JWTs signed by `issuer_public_pem` at
        auth/<mount>/login, with the `jwt` method validating signatures locally — the
        documented setup for Vault outside the cluster, and the same login request
        (`{role, jwt}`) the `kubernetes` method takes. Only the `kubernetes` method's
        TokenReview call to the cluster's API server is not exercised."""
        status, _ = self.api("POST", f"sys/auth/{mount}", {"type": "jwt"})
        assert status in (200, 204, 400), status
        self.trust_service_account_issuers(mount, [issuer_public_pem])
        self.ok("POST", f"auth/{mount}/role/{role}", {
            "role_type": "jwt", "user_claim": "sub", "bound_subject": subject,
            "bound_audiences": [SERVICE_ACCOUNT_AUDIENCE], "token_policies": policies,
            "token_ttl": token_ttl, "token_max_ttl": token_max_ttl,
        })

    def trust_service_account_issuers(self, mount: str, issuer_public_pems: list[str]) -> None:
        """Replace the signing keys auth/<mount> accepts: a token signed by any other key is
        refused from now on (as after the cluster's service-account signing key rotated)."""
        self.ok("POST", f"auth/{mount}/config",
                {"jwt_validation_pubkeys": issuer_public_pems, "bound_issuer": SERVICE_ACCOUNT_ISSUER})

    def stop(self) -> None:
        self.proc.stop()


def start_bao(workdir: Path, port: int | None = None, tls: bool = False) -> Bao:
    """Start `bao server -dev` on 127.0.0.1 (in-memory; KV v2 at secret/, root token "root").
    With `tls`, it serves HTTPS with a fresh CA written to <workdir>/bao-tls/vault-ca.pem."""
    port = port or free_port()
    cmd = [venv_bin("bao"), "server", "-dev", f"-dev-listen-address={HOST}:{port}",
           f"-dev-root-token-id={ROOT_TOKEN}", "-dev-no-store-token"]
    tls_dir = workdir / "bao-tls"
    if tls:
        tls_dir.mkdir(exist_ok=True)
        cmd += ["-dev-tls", f"-dev-tls-cert-dir={tls_dir}"]
    proc = Proc(cmd, workdir, name="openbao", env={"HOME": str(workdir)})
    bao = Bao(proc, port, workdir, ca_cert=tls_dir / "vault-ca.pem" if tls else None)
    deadline = time.monotonic() + 30
    while True:
        try:
            if bao.api("GET", "sys/health")[0] == 200:
                return bao
        except (OSError, ssl.SSLError):
            pass
        if time.monotonic() > deadline or not proc.alive():
            proc.stop()
            raise RuntimeError(f"OpenBao did not become healthy:\n{proc.log_tail()}")
        time.sleep(0.1)


READ_POLICY = """
path "secret/data/ai-providers/*" { capabilities = ["read"] }
path "secret/metadata/keygate/consumers/*" { capabilities = ["read", "list"] }
path "secret/metadata/keygate/consumers" { capabilities = ["list"] }
path "secret/data/keygate/consumers/*" { capabilities = ["read"] }
"""

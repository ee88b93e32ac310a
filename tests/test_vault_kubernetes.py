"""Kubernetes service-account login to a real OpenBao: keygate reads the projected token file,
logs in with `{role, jwt}`, renews, and logs in again (re-reading the file, as kubelet rotates
it) when the token reaches its max TTL. Once the file is rotated Vault refuses the first token,
so only a keygate that re-reads the file at every login keeps logging in.

OpenBao validates the JWT with its `jwt` auth method, mounted at `auth/kubernetes`, against the
issuer's public key — Vault's documented setup when it cannot reach the cluster. The login
request keygate sends is the one the `kubernetes` method takes; only that method's TokenReview
call from Vault to a Kubernetes API server is outside this test (there is none on the machine).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Iterator

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import keygate_bin, leaks
from harness.bao import READ_POLICY, SERVICE_ACCOUNT_AUDIENCE, SERVICE_ACCOUNT_ISSUER, Bao, start_bao
from harness.keygate import counter, mint_key
from harness.ports import free_port
from harness.stack import consumer
from harness.vault_stack import KEY_V1, KEY_V2, assert_no_secrets, start_vault_stack, vault_credentials, wait_until

NAMESPACE, ACCOUNT = "ai-gateway", "keygate"
SUBJECT = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"


def new_issuer() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def service_account_token(issuer: rsa.RSAPrivateKey, subject: str = SUBJECT) -> str:
    """A projected service-account token as kubelet writes it (audience `vault`)."""
    now = int(time.time())
    claims = {
        "iss": SERVICE_ACCOUNT_ISSUER, "sub": subject, "aud": [SERVICE_ACCOUNT_AUDIENCE],
        "iat": now, "nbf": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": NAMESPACE, "serviceaccount": {"name": ACCOUNT, "uid": "0f6c"}},
    }
    return jwt.encode(claims, issuer, algorithm="RS256", headers={"kid": "test-issuer"})


@pytest.fixture
def bao(cargo_build, workdir) -> Iterator[tuple[Bao, rsa.RSAPrivateKey]]:
    b = start_bao(workdir)
    b.kv_put("ai-providers/openai/production", {"api_key": KEY_V1})
    b.policy("keygate", READ_POLICY)
    issuer = new_issuer()
    b.service_account_auth("kubernetes", public_pem(issuer), "keygate", SUBJECT, ["keygate"],
                           token_ttl="2s", token_max_ttl="4s")
    yield b, issuer
    b.stop()


def kubernetes_auth(jwt_file: Path) -> dict[str, str]:
    return {"method": "kubernetes", "role": "keygate", "jwt_file": str(jwt_file)}


def write_token(path: Path, token: str) -> None:
    """Replace the projected token file in one step, as kubelet does (it swaps a symlink), so
    keygate never reads half a token; the token is registered for the leak scan."""
    leaks.register(token)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token)
    tmp.replace(path)


@pytest.mark.usefixtures("leak_scan")
def test_service_account_login_renews_and_logs_in_again_at_max_ttl(bao, workdir: Path) -> None:
    server, issuer = bao
    jwt_file = workdir / "sa-token"
    first = service_account_token(issuer)
    write_token(jwt_file, first)
    creds = vault_credentials(server.address)
    creds["vault"]["auth"] = kubernetes_auth(jwt_file)
    stack = start_vault_stack(workdir, server, creds, {})
    logins = lambda result: counter(stack.keygate.metrics(), "keygate_vault_requests_total",  # noqa: E731
                                    operation="login", result=result)
    assert logins("ok") == 1, "keygate logged in once at startup, with the first token"

    # kubelet rotates the projected token in place, and the cluster's signing key has rotated
    # with it: from now on Vault refuses the first token. A keygate that kept the token it read
    # at startup can no longer log in (its Vault token expires at the 4 s max TTL; reads fail).
    rotated_issuer = new_issuer()
    rotated = service_account_token(rotated_issuer)
    write_token(jwt_file, rotated)
    server.trust_service_account_issuers("kubernetes", [public_pem(rotated_issuer)])
    assert server.api("POST", "auth/kubernetes/login", {"role": "keygate", "jwt": first})[0] == 400, (
        "Vault must refuse the first token once it is rotated, or this test proves nothing")

    started = time.monotonic()
    while time.monotonic() - started < 9:  # more than twice the 4 s max TTL
        assert stack.status() == 200
        time.sleep(0.1)
    server.kv_put("ai-providers/openai/production", {"api_key": KEY_V2})
    wait_until(lambda: stack.status() == 200 and stack.upstream_keys()[-1] == f"Bearer {KEY_V2}", timeout=5)

    metrics = stack.keygate.metrics()
    assert counter(metrics, "keygate_vault_requests_total", operation="login", result="ok") >= 3, (
        "two more logins at the max TTL, each with the token re-read from the rotated file")
    assert counter(metrics, "keygate_vault_requests_total", operation="login", result="error") == 0
    assert counter(metrics, "keygate_vault_requests_total", operation="renew", result="ok") >= 1
    assert counter(metrics, "keygate_vault_requests_total", operation="read", result="error") == 0
    assert "reached its max TTL" in stack.keygate.proc.log_text()
    assert_no_secrets(stack, first, rotated)


@pytest.mark.parametrize("case", ["foreign_issuer", "other_service_account"])
def test_rejected_service_account_fails_startup_with_a_clear_error(bao, workdir: Path, case: str) -> None:
    server, issuer = bao
    token = (service_account_token(new_issuer()) if case == "foreign_issuer"
             else service_account_token(issuer, subject=f"system:serviceaccount:{NAMESPACE}:intruder"))
    jwt_file = workdir / "sa-token"
    jwt_file.write_text(token)
    creds = vault_credentials(server.address, startup_timeout="1s")
    creds["vault"]["auth"] = kubernetes_auth(jwt_file)
    config = {
        "listeners": {"grpc": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"},
        "credentials": creds,
        "providers": {"openai": {"kind": "openai", "credentials": {"production": "openai/production"}}},
        "consumers": [consumer("c", "openai", ["GET /v1/models"], mint_key("c"))],
    }
    path = workdir / "keygate.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([str(keygate_bin()), "serve", "--config", str(path)],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "kubernetes" in out.stderr and "login" in out.stderr
    assert token not in out.stderr and token not in out.stdout

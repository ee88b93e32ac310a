"""Provider keys and consumers from a real Vault API server (OpenBao), through real Envoy:
rotation without a failed request, outages bounded by max_stale, AppRole and token renewal,
bad answers, the consumer store, and no Vault call per request."""

from __future__ import annotations

import http.client
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from harness import keygate_bin, leaks
from harness.bao import READ_POLICY, Bao, start_bao
from harness.faultproxy import FaultProxy
from harness.keygate import counter, mint_key
from harness.mock import mock_clear
from harness.ports import free_port
from harness.stack import consumer
from harness.vault_stack import (
    ANT_KEY, KEY_V1, KEY_V2, assert_no_secrets, start_vault_stack, vault_credentials, wait_until,
)

# Every test's keygate and Envoy logs are scanned for every registered secret when it ends
# (conftest.py `leak_scan`): the Vault-served provider keys, Vault tokens and AppRole secret
# ids (registered by harness.bao) and the consumer keys; command output is checked in place.
pytestmark = pytest.mark.usefixtures("leak_scan")


@pytest.fixture
def bao(cargo_build, workdir) -> Iterator[Bao]:
    b = start_bao(workdir)
    b.kv_put("ai-providers/openai/production", {"api_key": KEY_V1, "owner": "ml"})
    b.kv_put("ai-providers/anthropic/production", {"api_key": ANT_KEY})
    yield b
    b.stop()


# docs/vault.md: a new KV version is used "within one refresh_interval". The rotation test writes it
# just after a refresh (the worst case: the next read is a whole interval away) and allows this
# much on top for the Vault read, the request that shows it, and a loaded 2-core machine.
REFRESH_S = 1.0
PICKUP_MARGIN_S = 0.5


def test_rotation_is_picked_up_under_traffic_with_no_failed_request(bao: Bao, workdir: Path) -> None:
    stack = start_vault_stack(workdir, bao, vault_credentials(bao.address, refresh_interval=f"{REFRESH_S}s"),
                              {"VAULT_TOKEN": "root"})
    failures: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
        while not stop.is_set():
            status = stack.status(conn)
            if status != 200:
                failures.append(status)

    def refreshes() -> float:
        return counter(stack.keygate.metrics(), "keygate_secret_refresh_total", credential="openai/production", result="ok")

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        done = refreshes()
        wait_until(lambda: refreshes() > done, timeout=REFRESH_S + 2)  # a refresh has just read v1
        bao.kv_put("ai-providers/openai/production", {"api_key": KEY_V2, "owner": "ml"})
        switched = time.monotonic()
        wait_until(lambda: stack.upstream_keys()[-1] == f"Bearer {KEY_V2}", timeout=5)
        pickup = time.monotonic() - switched
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    seen = stack.upstream_keys()
    first_new = seen.index(f"Bearer {KEY_V2}")
    assert set(seen[:first_new]) == {f"Bearer {KEY_V1}"}
    assert set(seen[first_new:]) == {f"Bearer {KEY_V2}"}, "once rotated, the old key is never used again"
    assert pickup < REFRESH_S + PICKUP_MARGIN_S, f"picked up after {pickup:.2f}s with a {REFRESH_S}s refresh interval"
    print(f"rotation written just after a refresh, picked up after {pickup:.2f}s ({REFRESH_S}s refresh interval)")
    assert_no_secrets(stack)


def test_outage_is_served_from_cache_until_max_stale_then_503_then_recovers(bao: Bao, workdir: Path) -> None:
    creds = vault_credentials(bao.address, max_stale="2500ms")
    stack = start_vault_stack(workdir, bao, creds, {"VAULT_TOKEN": "root"})
    assert stack.status() == 200
    bao.proc.kill()
    killed = time.monotonic()
    statuses = []
    while time.monotonic() - killed < 1.5:
        statuses.append(stack.status())
    assert set(statuses) == {200}, "inside max_stale every request is served from the cache"

    wait_until(lambda: stack.status() == 503, timeout=6)
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=b"{}", headers={"authorization": f"Bearer {stack.key}"})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 503 and resp.getheader("content-type") == "application/json"
    assert b"credential is unavailable" in body
    wait_until(lambda: counter(stack.keygate.metrics(), "keygate_secret_stale", credential="openai/production") == 1)
    metrics = stack.keygate.metrics()
    assert counter(metrics, "keygate_secret_refresh_total", credential="openai/production", result="error") > 0
    assert stack.keygate.admin("/readyz")[0] == 503
    assert "past max_stale" in stack.keygate.proc.log_text()

    # OpenBao comes back (a dev server starts empty: the operator restores the secret).
    restarted = start_bao(workdir, port=bao.port)
    restarted.kv_put("ai-providers/openai/production", {"api_key": KEY_V2})
    wait_until(lambda: stack.status() == 200, timeout=5)
    assert stack.upstream_keys()[-1] == f"Bearer {KEY_V2}"
    assert stack.keygate.admin("/readyz")[0] == 200
    restarted.stop()
    assert_no_secrets(stack)


@pytest.mark.parametrize("method", ["approle", "short_ttl_token"])
def test_login_methods_and_token_renewal(bao: Bao, workdir: Path, method: str) -> None:
    bao.policy("keygate", READ_POLICY)
    env: dict[str, str] = {}
    if method == "approle":
        role_id, secret_id = bao.approle("keygate", ["keygate"], token_ttl="3s")
        (workdir / "secret-id").write_text(secret_id)
        auth = {"method": "approle", "role_id": role_id, "secret_id_file": str(workdir / "secret-id")}
    else:
        env["KEYGATE_VAULT_TOKEN"] = bao.token(["keygate"], ttl="3s")
        auth = {"method": "token", "token_env": "KEYGATE_VAULT_TOKEN"}
    creds = vault_credentials(bao.address)
    creds["vault"]["auth"] = auth
    stack = start_vault_stack(workdir, bao, creds, env)
    started = time.monotonic()
    while time.monotonic() - started < 7:  # more than twice the token TTL
        assert stack.status() == 200
        time.sleep(0.1)
    bao.kv_put("ai-providers/openai/production", {"api_key": KEY_V2})
    wait_until(lambda: stack.status() == 200 and stack.upstream_keys()[-1] == f"Bearer {KEY_V2}", timeout=5)
    metrics = stack.keygate.metrics()
    assert counter(metrics, "keygate_vault_requests_total", operation="renew", result="ok") >= 1
    assert counter(metrics, "keygate_vault_requests_total", operation="read", result="error") == 0
    assert_no_secrets(stack, env.get("KEYGATE_VAULT_TOKEN", "unused-token-value"))


def _bad_answers(bao: Bao, proxy: FaultProxy) -> list[tuple[str, Any, str]]:
    path = "ai-providers/openai/production"
    return [
        ("404", lambda: bao.kv_delete(path), "not found (404)"),
        ("missing api_key", lambda: bao.kv_put(path, {"owner": "ml"}), "no api_key field"),
        ("wrong type", lambda: bao.kv_put(path, {"api_key": 12345}), "api_key is not a string"),
        ("403", lambda: bao.policy("keygate", 'path "secret/data/other/*" { capabilities = ["read"] }'), "permission denied (403)"),
        ("garbage", lambda: proxy.set_mode("garbage"), "the response is not valid JSON"),
        ("timeout", lambda: proxy.set_mode("blackhole"), "timed out"),
    ]


@pytest.mark.parametrize("case", ["404", "missing api_key", "wrong type", "403", "garbage", "timeout"])
def test_bad_answers_keep_the_last_good_value(bao: Bao, workdir: Path, case: str) -> None:
    bao.policy("keygate", READ_POLICY)
    token = bao.token(["keygate"], ttl="1h")
    proxy = FaultProxy(bao.port)
    creds = vault_credentials(proxy.address)
    stack = start_vault_stack(workdir, bao, creds, {"VAULT_TOKEN": token})
    assert stack.status() == 200
    before = counter(stack.keygate.metrics(), "keygate_secret_refresh_total", result="error")
    [(_, break_it, reason)] = [c for c in _bad_answers(bao, proxy) if c[0] == case]
    break_it()
    wait_until(lambda: counter(stack.keygate.metrics(), "keygate_secret_refresh_total", result="error") >= before + 2)
    mock_clear(stack.mock_port)
    assert stack.status() == 200
    assert stack.upstream_keys() == [f"Bearer {KEY_V1}"], "the last good value is still served"
    log = stack.keygate.proc.log_text()
    assert "credential refresh failed" in log and reason in log, log[-2000:]
    assert_no_secrets(stack, token)
    proxy.close()


def test_consumers_from_vault_follow_the_store(bao: Bao, workdir: Path) -> None:
    bao.policy("keygate", READ_POLICY)
    first = mint_key("store-first")
    bao.kv_put(
        "keygate/consumers/store-first",
        {"environment": "production", "provider": "openai", "keys": [{"hash": first.hash}],
         "scope": {"routes": ["POST /v1/chat/completions"]}},
    )
    consumers = {"source": "vault", "path": "keygate/consumers", "refresh": "300ms"}
    stack = start_vault_stack(workdir, bao, vault_credentials(bao.address), {"VAULT_TOKEN": "root"}, consumers)
    assert stack.status(key=first.key) == 200

    created = subprocess.run(
        [str(keygate_bin()), "keys", "create", "--store", "vault", "--config", str(stack.keygate.config_path),
         "--consumer", "newcomer", "--provider", "openai", "--environment", "production",
         "--route", "POST /v1/chat/completions"],
        capture_output=True, text=True, timeout=30, env={"VAULT_TOKEN": "root", "PATH": "/usr/bin:/bin"},
    )
    assert created.returncode == 0, created.stderr
    new_key = created.stdout.strip()
    assert "stored kid_" in created.stderr
    wait_until(lambda: stack.status(key=new_key) == 200, timeout=5)

    # Suspended in the store → 403 after the next poll; deleted → 401.
    entry = bao.ok("GET", "secret/data/keygate/consumers/newcomer")["data"]["data"]
    bao.kv_put("keygate/consumers/newcomer", {**entry, "status": "suspended"})
    wait_until(lambda: stack.status(key=new_key) == 403, timeout=5)
    bao.kv_delete("keygate/consumers/newcomer")
    wait_until(lambda: stack.status(key=new_key) == 401, timeout=5)
    assert stack.status(key=first.key) == 200

    # An invalid entry is refused and logged; the others keep working.
    bao.kv_put("keygate/consumers/broken", {"environment": "production", "provider": "opneai", "keys": [], "scope": {"routes": ["GET /x"]}})
    wait_until(lambda: "consumer entry refused" in stack.keygate.proc.log_text(), timeout=5)
    assert 'unknown provider \\"opneai\\"' in stack.keygate.proc.log_text() or 'unknown provider "opneai"' in stack.keygate.proc.log_text()
    assert stack.status(key=first.key) == 200
    assert counter(stack.keygate.metrics(), "keygate_registry_refresh_total", result="ok") >= 2
    assert_no_secrets(stack, new_key, first.key)


def test_no_vault_call_per_request(bao: Bao, workdir: Path) -> None:
    stack = start_vault_stack(workdir, bao, vault_credentials(bao.address, refresh_interval="1s"), {"VAULT_TOKEN": "root"})
    before = counter(stack.keygate.metrics(), "keygate_vault_requests_total")
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    for _ in range(10_000):
        assert stack.status(conn) == 200
    elapsed = time.monotonic() - started
    calls = counter(stack.keygate.metrics(), "keygate_vault_requests_total") - before
    # One read per refresh interval (one credential), plus slack for a login/renew.
    assert calls <= elapsed / 1.0 + 3, f"{calls} Vault calls during {elapsed:.1f}s of traffic"


def test_tls_with_custom_ca_and_namespace(cargo_build, workdir: Path) -> None:
    bao = start_bao(workdir, tls=True)
    try:
        bao.ok("POST", "sys/namespaces/team-ns")
        bao.namespace = "team-ns"
        bao.ok("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        bao.kv_put("ai-providers/openai/production", {"api_key": KEY_V1})
        bao.kv_put("ai-providers/anthropic/production", {"api_key": ANT_KEY})
        creds = vault_credentials(bao.address)
        creds["vault"].update({"ca_cert": str(bao.ca_cert), "namespace": "team-ns"})
        stack = start_vault_stack(workdir, bao, creds, {"VAULT_TOKEN": "root"})
        assert stack.status() == 200
        assert stack.upstream_keys() == [f"Bearer {KEY_V1}"]

        # Without the CA, TLS verification fails and `keygate check` names the credential.
        config = yaml.safe_load(stack.keygate.config_path.read_text())
        del config["credentials"]["vault"]["ca_cert"]
        unverified = workdir / "no-ca.yaml"
        unverified.write_text(yaml.safe_dump(config))
        out = subprocess.run(
            [str(keygate_bin()), "check", "--config", str(unverified)],
            capture_output=True, text=True, timeout=60, env={"VAULT_TOKEN": "root", "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode != 0
        assert "openai/production" in out.stderr
        assert "root" not in out.stderr.replace("/root", "")
        leaks.assert_absent(out.stdout + out.stderr, "keygate check's output")
    finally:
        bao.stop()


def test_sighup_forces_an_immediate_refresh(bao: Bao, workdir: Path) -> None:
    stack = start_vault_stack(workdir, bao, vault_credentials(bao.address, refresh_interval="1h"), {"VAULT_TOKEN": "root"})
    assert stack.status() == 200
    bao.kv_put("ai-providers/openai/production", {"api_key": KEY_V2})
    time.sleep(0.5)
    stack.status()
    assert stack.upstream_keys()[-1] == f"Bearer {KEY_V1}", "no refresh without the signal"
    stack.keygate.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: stack.status() == 200 and stack.upstream_keys()[-1] == f"Bearer {KEY_V2}", timeout=5)


def test_startup_names_missing_credentials(bao: Bao, workdir: Path) -> None:
    config = {
        "listeners": {"grpc": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"},
        "credentials": vault_credentials(bao.address, startup_timeout="1s"),
        "providers": {"openai": {"kind": "openai", "credentials": {"production": "openai/missing"}}},
        "consumers": [consumer("c", "openai", ["GET /v1/models"], mint_key("c"))],
    }
    path = workdir / "keygate.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    out = subprocess.run(
        [str(keygate_bin()), "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60, env={"VAULT_TOKEN": "root", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert "openai/missing" in out.stderr and "ai-providers/openai/missing: not found (404)" in out.stderr
    leaks.assert_absent(out.stdout + out.stderr, "keygate serve's output")
    assert time.monotonic() - started >= 1.0, "startup retries until startup_timeout"

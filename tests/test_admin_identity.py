"""Operators who authenticate as themselves (docs/security.md, "Operators and roles"): each
has a token (stored as its SHA-256) or a client certificate mapped by CN or SAN, and a role.
The audit log names the authenticated operator, never what the client says (an
`x-keygate-actor` header, `--actor`, `$USER`); refused calls are audited with the identity
when one proof named it; the legacy shared token still works as `shared-token`; key creation,
unthrottle and credential refresh are audited with who did them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import keygate_bin, leaks
from harness.keygate import Keygate, mint_key, start_keygate
from harness.ports import free_port
from harness.stack import consumer, providers
from harness.tls import Authority

SHARED_TOKEN = "shared-admin-token-identity-tests-1c0d"
SECRETS = {"openai/production": "sk-identity-test-openai", "anthropic/production": "sk-ant-identity-test"}

pytestmark = pytest.mark.usefixtures("leak_scan")


def operator_token(name: str, role: str) -> tuple[str, dict[str, Any]]:
    """`keygate admin token create`: the token (stdout) and the operator entry (stderr)."""
    out = subprocess.run([str(keygate_bin()), "admin", "token", "create", "--name", name, "--role", role],
                         capture_output=True, text=True, timeout=30, check=True)
    token = out.stdout.strip()
    leaks.register(token)
    entry = yaml.safe_load(out.stderr)[0]
    assert token not in out.stderr and entry["token_sha256"].startswith("sha256:")
    return token, entry


def start(workdir: Path, operators: list[dict[str, Any]], tls: dict[str, str] | None = None,
          operators_file: Path | None = None) -> Keygate:
    leaks.register(SHARED_TOKEN)
    admin: dict[str, Any] = {"listen": f"127.0.0.1:{free_port()}", "state_file": str(workdir / "state.yaml"),
                             "audit_log": str(workdir / "audit.jsonl"), "operators": operators}
    if operators_file:
        admin["operators_file"] = str(operators_file)
    if tls:
        admin["tls"] = tls
    config = {"providers": providers(), "admin": admin,
              "consumers": [consumer("team-a", "openai", ["POST /v1/chat/completions"], mint_key("team-a"))]}
    return start_keygate(workdir, config, SECRETS, env={"KEYGATE_ADMIN_TOKEN": SHARED_TOKEN})


def cli(kg: Keygate, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator, with everything a client could claim set to someone else."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "USER": "mallory"}
    if token:
        env["KEYGATE_ADMIN_TOKEN"] = token
    out = subprocess.run([str(keygate_bin()), *args, "--actor", "mallory", "--targets", kg.config["admin"]["listen"]],
                         capture_output=True, text=True, timeout=30, env=env)
    leaks.assert_absent(out.stdout + out.stderr, f"the output of keygate {' '.join(args)}")
    return out


def grpc(kg: Keygate, method: str, message: bytes, headers: dict[str, str]) -> str:
    """A raw gRPC call (curl, HTTP/2 with gRPC framing); returns the response headers."""
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    cmd = ["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "-H", "content-type: application/grpc",
           "-H", "te: trailers", "--data-binary", "@-"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://{kg.config['admin']['listen']}/keygate.admin.v1.Admin/{method}")
    return subprocess.run(cmd, input=frame, capture_output=True, timeout=10).stdout.decode()


def consumer_request(name: str, reason: str) -> bytes:
    """ConsumerRequest{consumer, reason} in protobuf wire format."""
    out = b""
    for field, text in ((1, name), (2, reason)):
        data = text.encode()
        out += bytes([field << 3 | 2, len(data)]) + data
    return out


def audit(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (workdir / "audit.jsonl").read_text().splitlines()]


def test_token_operators_are_audited_as_themselves_with_their_roles(cargo_build, workdir: Path) -> None:
    alice, alice_entry = operator_token("alice@example.com", "operator")
    reader, reader_entry = operator_token("reader", "read-only")
    operators_file = workdir / "operators.yaml"
    operators_file.write_text(yaml.safe_dump({"operators": [reader_entry]}))
    kg = start(workdir, [alice_entry], operators_file=operators_file)

    assert cli(kg, "whoami", token=alice).stdout.strip().endswith("alice@example.com (role operator, by token)")
    assert cli(kg, "whoami", token=reader).stdout.strip().endswith("reader (role read_only, by token)")
    assert cli(kg, "whoami", token=SHARED_TOKEN).stdout.strip().endswith("shared-token (role operator, by shared_token)")

    # The actor is the token's operator, whatever the client claims (--actor, $USER, a header).
    assert cli(kg, "suspend", "team-a", "--reason", "investigating", token=alice).returncode == 0
    headers = grpc(kg, "ResumeConsumer", consumer_request("team-a", "cleared"),
                   {"authorization": f"Bearer {alice}", "x-keygate-actor": "mallory"})
    assert "200" in headers.splitlines()[0], headers
    grpc(kg, "RefreshCredentials", b"", {"authorization": f"Bearer {alice}", "x-keygate-actor": "mallory"})
    unthrottle = cli(kg, "unthrottle", "team-a", "--reason", "false alarm", token=alice)
    assert unthrottle.returncode == 0 and "was not throttled" in unthrottle.stdout, unthrottle.stderr

    # A read-only operator lists, and is refused (and audited by name) when it acts.
    listing = cli(kg, "consumers", "list", token=reader)
    assert listing.returncode == 0 and "team-a" in listing.stdout and "active" in listing.stdout
    refused = cli(kg, "suspend", "team-a", "--reason", "nope", token=reader)
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr
    assert "active" in cli(kg, "consumers", "list", token=reader).stdout, "nothing changed"
    assert cli(kg, "whoami", token="kgadm_" + "0" * 64).returncode != 0

    # Key creation, audited locally (the CLI has no operator credential for it).
    created = subprocess.run([str(keygate_bin()), "keys", "create", "--consumer", "team-a", "--audit-log", str(workdir / "audit.jsonl")],
                             capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", ""), "USER": "bob"})
    new_key = created.stdout.strip()
    leaks.register(new_key)
    assert created.returncode == 0 and new_key.startswith("kg_live_")

    entries = audit(workdir)
    by = lambda event: [e for e in entries if e["event"] == event]  # noqa: E731
    assert [e["actor"] for e in by("consumer_suspended")] == ["alice@example.com"]
    assert [e["actor"] for e in by("consumer_resumed")] == ["alice@example.com"]
    assert [e["actor"] for e in by("consumer_unthrottled")] == ["alice@example.com"]
    assert by("consumer_unthrottled")[0]["consumer"] == "team-a"
    refresh = [e for e in entries if e.get("request") == "RefreshCredentials grpc"]
    assert [(e["actor"], e["result"]) for e in refresh] == [("alice@example.com", "ok")]
    denied = [e for e in entries if e["result"] == "denied"]
    assert [(e["actor"], e["request"]) for e in denied] == [("reader", "SuspendConsumer grpc"), ("unknown", "WhoAmI grpc")]
    assert "permission denied" in denied[0]["reason"]
    assert any(e["actor"] == "reader" and e.get("request") == "ListConsumers grpc" for e in entries)
    key_created = by("key_created")
    assert len(key_created) == 1 and key_created[0]["actor"] == "bob (local cli)" and key_created[0]["key_id"].startswith("kid_")
    assert "mallory" not in json.dumps(entries), "a client-stated actor reached the audit log"
    leaks.assert_absent((workdir / "audit.jsonl").read_text(), "the audit log", [alice, reader, SHARED_TOKEN, new_key])

    # Removing an operator from the operators file takes effect at once (the file is watched
    # like the config), without a restart.
    operators_file.write_text(yaml.safe_dump({"operators": []}))
    deadline = time.monotonic() + 10
    while cli(kg, "whoami", token=reader).returncode == 0:
        assert time.monotonic() < deadline, "the removed operator still gets in"
        time.sleep(0.2)
    assert cli(kg, "whoami", token=alice).returncode == 0


def test_client_certificates_name_their_operator(cargo_build, workdir: Path) -> None:
    server_ca, client_ca = Authority(workdir / "pki", "server-ca"), Authority(workdir / "pki", "client-ca")
    server = server_ca.issue("keygate-admin", dns=[], ips=["127.0.0.1"])
    bob = client_ca.issue("bob", dns=[], ips=[], client=True)
    carol = client_ca.issue("carol", dns=[], ips=[], client=True, uris=["spiffe://corp/oncall/carol"])
    stranger = client_ca.issue("mallory", dns=[], ips=[], client=True)
    alice, alice_entry = operator_token("alice", "operator")
    kg = start(workdir, [
        alice_entry,
        {"name": "bob", "role": "read_only", "client_cert": {"subject_cn": "bob"}},
        {"name": "carol", "role": "operator", "client_cert": {"san_uri": "spiffe://corp/oncall/carol"}},
    ], tls={"cert_file": str(server.cert), "key_file": str(server.key), "client_ca_file": str(client_ca.pem.cert)})
    ca = ["--tls-ca", str(server_ca.pem.cert)]

    def as_cert(pem, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return cli(kg, *args, *ca, "--tls-cert", str(pem.cert), "--tls-key", str(pem.key), token=token)

    assert as_cert(carol, "whoami").stdout.strip().endswith("carol (role operator, by certificate)")
    assert as_cert(bob, "whoami").stdout.strip().endswith("bob (role read_only, by certificate)")
    assert as_cert(carol, "suspend", "team-a", "--reason", "on call").returncode == 0
    assert as_cert(bob, "resume", "team-a").returncode != 0, "read_only"
    assert as_cert(stranger, "whoami").returncode != 0, "a CA-signed certificate that maps to no operator"
    assert as_cert(carol, "whoami", token=alice).returncode != 0, "token and certificate disagree"
    assert as_cert(stranger, "whoami", token=alice).stdout.strip().endswith("alice (role operator, by token)")

    entries = audit(workdir)
    assert [e["actor"] for e in entries if e["event"] == "consumer_suspended"] == ["carol"]
    denied = [(e["actor"], e["reason"]) for e in entries if e["result"] == "denied"]
    assert denied == [("bob", "permission denied: role read_only may not call ResumeConsumer"),
                      ("unknown", "unauthenticated"),
                      ("carol", "token and certificate name different operators")]

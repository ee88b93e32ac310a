"""Leaked keys revoked by the scanners that find them (docs/security.md, "Leaked keys reported
by scanners"). Three replicas share Redis behind one Envoy:

- a GitHub secret-scanning alert, signed in the test with a generated P-256 key whose public
  key keygate is configured with, revokes the leaked key on every replica within
  LEAK_BOUND_S; unsigned, badly signed and oversized alerts are refused and change nothing;
- `keygate leaks report` with a gitleaks JSON report does the same through the admin API;
- an unknown key and an already revoked key get the same answer;
- the owner's notification names the consumer, the team and where the key was found; the
  audit log records the source; neither, nor any log or command output, holds the key.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness import leaks
from harness.keygate import counter, keygate_bin, mint_key
from harness.redis import start_redis
from harness.replicas import Replicas
from harness.webhook import WebhookReceiver

# What the tests assert (issue 17: "within one second"); they print the measured time (-s).
LEAK_BOUND_S = 1.0
ADMIN_TOKEN = "admin-token-leak-tests-6b2e91"
KEY_ID = "f9525bf080f75b3506ca1ead061add62b8633a346606dc5fe544e29231c6ee0d"
COMMIT = "12345600b9cbe38a219f39a9941c9319b600c002"


class Github:
    """Plays GitHub: a P-256 signing key, and alerts signed with it."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, body: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        return base64.b64encode((key or self.key).sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def alert_body(*tokens: str) -> bytes:
    return json.dumps([
        {"token": t, "type": "keygate_consumer_key", "source": "content",
         "url": f"https://github.com/octo/public-app/blob/{COMMIT}/deploy/.env"}
        for t in tokens
    ]).encode()


def post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/github/secret-scanning", body=body, headers={"content-type": "application/json", **headers})
    r = conn.getresponse()
    return r.status, r.read().decode()


def signed(github: Github, body: bytes, key_id: str = KEY_ID) -> dict[str, str]:
    return {"Github-Public-Key-Identifier": key_id, "Github-Public-Key-Signature": github.sign(body)}


@pytest.fixture
def fleet(cargo_build, workdir: Path) -> Iterator[tuple[Replicas, Github, WebhookReceiver]]:
    leaks.register(ADMIN_TOKEN)
    github = Github()
    hook = WebhookReceiver()
    redis, port = start_redis(workdir)
    extra: dict[str, Any] = {
        "admin": {"state_file": str(workdir / "state.yaml"), "audit_log": str(workdir / "audit.jsonl")},
        "leaks": {"github": {"public_keys": [{"key_identifier": KEY_ID, "key": github.public_pem}],
                             "max_body_bytes": 4096}},
        "notify": {"webhooks": [{"url": hook.url, "format": "generic"}]},
    }
    r = Replicas(workdir, port, extra=extra, env={"KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        yield r, github, hook
    finally:
        r.stop()
        redis.stop()
        hook.close()


def revoked_everywhere_after(r: Replicas, key: str, started: float) -> float:
    """Seconds from `started` until every replica answers `key` with 401 (Envoy round robin)."""
    while not all(s == 401 for s in r.statuses_with(key, 6)):
        assert time.monotonic() - started < 5, "the leaked key was not revoked on every replica"
        time.sleep(0.01)
    return time.monotonic() - started


def audit_lines(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (workdir / "audit.jsonl").read_text().splitlines()]


def test_a_signed_github_alert_revokes_the_key_on_every_replica_and_unsigned_ones_change_nothing(fleet, workdir: Path) -> None:
    r, github, hook = fleet
    key = r.keys["openai"].key
    port = r.alert_ports[0]
    body = alert_body(key)

    # Refused, and nothing changes: unsigned, signed by another key, another key id, a body
    # changed after signing, a body over max_body_bytes.
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = {"Github-Public-Key-Identifier": KEY_ID, "Github-Public-Key-Signature": github.sign(body, stranger)}
    tampered = alert_body(key).replace(b"content", b"commit")
    big = alert_body(*[key] * 40)
    for what, (b, h) in {
        "unsigned": (body, {}),
        "forged": (body, forged),
        "unknown key id": (body, signed(github, body, key_id="0" * 64)),
        "tampered": (tampered, signed(github, body)),
    }.items():
        status, answer = post(port, b, h)
        assert status == 401, (what, status, answer)
        assert key not in answer
    assert len(big) > 4096
    assert post(port, big, signed(github, big))[0] == 413
    assert set(r.statuses(6)) == {200}, "a refused alert changed nothing"

    started = time.monotonic()
    status, answer = post(port, body, signed(github, body))
    assert status == 200, answer
    elapsed = revoked_everywhere_after(r, key, started)
    assert elapsed < LEAK_BOUND_S, f"revoked on every replica after {elapsed:.3f}s"
    print(f"GitHub alert: leaked key revoked on all three replicas after {elapsed:.3f}s")
    for k in r.keygates[1:]:  # through the Redis broadcast, not a later read of the state file
        assert counter(k.metrics(), "keygate_revocation_propagation_seconds_count", path="broadcast") >= 1
    feedback = json.loads(answer)
    assert feedback == [{"token_hash": hashlib.sha256(key.encode()).hexdigest(),
                         "token_type": "keygate_consumer_key", "label": "true_positive"}]

    # Unknown and already revoked keys get the same answer as each other (and as the known key).
    unknown = mint_key("nobody").key  # well formed, never configured
    already = r.keys["revoked"].key  # team-revoked is revoked in the config
    answers = {}
    for name, token in {"unknown": unknown, "already revoked": already, "revoked just now": key}.items():
        b = alert_body(token)
        status, text = post(port, b, signed(github, b))
        item = json.loads(text)[0]
        assert item.pop("token_hash") == hashlib.sha256(token.encode()).hexdigest()
        answers[name] = (status, item)
    assert len(set(json.dumps(a, sort_keys=True) for a in answers.values())) == 1, answers

    # The owner is told who, which team and where; the audit log has the source; no key anywhere.
    deadline = time.monotonic() + 5
    while not any(n.get("event") == "key_leaked" for n in hook.received):
        assert time.monotonic() < deadline, "no leak notification"
        time.sleep(0.05)
    leaked = [n for n in hook.received if n.get("event") == "key_leaked"]
    assert len(leaked) == 1, "one notification, for the key that was revoked"
    note = leaked[0]
    assert note["consumer"] == "team-openai" and note["team"] == "tests" and note["severity"] == "critical"
    assert note["leak"]["location"]["repository"] == "octo/public-app"
    assert note["leak"]["location"]["file"] == "deploy/.env"
    assert note["leak"]["location"]["commit"] == COMMIT
    entries = [e for e in audit_lines(workdir) if e["event"] == "key_leaked"]
    revoked = [e for e in entries if e["reason"] == "revoked"]
    assert len(revoked) == 1 and revoked[0]["consumer"] == "team-openai"
    assert revoked[0]["actor"] == "github-secret-scanning" and revoked[0]["scanner"] == "github"
    assert revoked[0]["location"]["url"] == f"https://github.com/octo/public-app/blob/{COMMIT}/deploy/.env"
    assert {e["reason"] for e in entries} == {"revoked", "already_revoked", "unknown_key"}
    for text, where in [((workdir / "audit.jsonl").read_text(), "the audit log"),
                        ("\n".join(raw.decode() for raw in hook.raw), "the notifications")]:
        leaks.assert_absent(text, where, [key, unknown, already])
    assert r.total("keygate_leak_alerts_total", result="bad_signature") == 3
    assert r.total("keygate_leak_alerts_total", result="unsigned") == 1
    assert counter(r.keygates[0].metrics(), "keygate_leak_reports_total", outcome="revoked") == 1


def gitleaks_report(path: Path, *findings: tuple[str, str, int]) -> Path:
    """A gitleaks JSON report (gitleaks' own field names) with one finding per (key, file, line)."""
    path.write_text(json.dumps([
        {"RuleID": "keygate-consumer-key", "Description": "keygate consumer key", "StartLine": line, "EndLine": line,
         "StartColumn": 9, "EndColumn": 53, "Match": f"API_KEY={k}", "Secret": k, "File": f,
         "SymlinkFile": "", "Commit": COMMIT, "Entropy": 4.6, "Author": "dev", "Email": "dev@example.com",
         "Date": "2026-01-01T00:00:00Z", "Message": "add config", "Tags": [], "Fingerprint": f"{COMMIT}:{f}:keygate-consumer-key:{line}",
         "Link": ""}
        for k, f, line in findings
    ]))
    return path


def leaks_report(report: Path, targets: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    out = subprocess.run([str(keygate_bin()), "leaks", "report", str(report), "--repository", "corp/monorepo",
                          "--targets", targets], capture_output=True, text=True, timeout=30, env=env)
    leaks.assert_absent(out.stdout + out.stderr, "the output of keygate leaks report")
    return out


def test_a_gitleaks_report_revokes_the_key_on_every_replica_and_answers_alike_for_unknown_keys(fleet, workdir: Path) -> None:
    r, _, hook = fleet
    key = r.keys["openai"].key
    one = f"127.0.0.1:{r.admin_ports[0]}"
    assert set(r.statuses(6)) == {200}

    started = time.monotonic()
    out = leaks_report(gitleaks_report(workdir / "gitleaks.json", (key, "services/api/.env", 12)), one)
    assert out.returncode == 0, out.stderr
    elapsed = revoked_everywhere_after(r, key, started)
    assert elapsed < LEAK_BOUND_S, f"revoked on every replica after {elapsed:.3f}s"
    print(f"gitleaks report: leaked key revoked on all three replicas after {elapsed:.3f}s (including running the CLI)")
    for k in r.keygates[1:]:
        assert counter(k.metrics(), "keygate_revocation_propagation_seconds_count", path="broadcast") >= 1

    unknown = leaks_report(gitleaks_report(workdir / "unknown.json", (mint_key("nobody").key, "a.py", 1)), one)
    already = leaks_report(gitleaks_report(workdir / "revoked.json", (r.keys["revoked"].key, "a.py", 1)), one)
    assert unknown.returncode == already.returncode == 0
    strip = lambda text: text.replace(str(workdir / "unknown.json"), "R").replace(str(workdir / "revoked.json"), "R")  # noqa: E731
    assert (strip(unknown.stdout), strip(unknown.stderr)) == (strip(already.stdout), strip(already.stderr))

    entries = [e for e in audit_lines(workdir) if e["event"] == "key_leaked" and e["reason"] == "revoked"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor"] == "shared-token" and entry["scanner"] == "gitleaks"
    assert entry["location"] == {"repository": "corp/monorepo", "file": "services/api/.env", "line": 12,
                                 "commit": COMMIT, "kind": "gitleaks:keygate-consumer-key"}
    deadline = time.monotonic() + 5
    while not any(n.get("event") == "key_leaked" for n in hook.received):
        assert time.monotonic() < deadline, "no leak notification"
        time.sleep(0.05)
    note = next(n for n in hook.received if n.get("event") == "key_leaked")
    assert note["consumer"] == "team-openai" and note["team"] == "tests"
    assert "corp/monorepo services/api/.env:12" in note["summary"]
    leaks.assert_absent((workdir / "audit.jsonl").read_text() + "\n".join(raw.decode() for raw in hook.raw),
                        "the audit log and notifications", [key])

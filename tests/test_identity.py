"""Workload identity, bound keys, network-bound keys and model allow-lists, end to end through
real Envoy with real mTLS (ext_proc and ext_authz): the tests make a mesh CA and workload
certificates whose URI SAN is a SPIFFE ID, and put Envoy's keygate listener behind TLS that
requires a client certificate, either itself (a gateway) or through a second listener that
terminates mTLS and passes the identity on in x-forwarded-client-cert (a sidecar). Every
request's access log line must carry keygate's decision."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from harness import free_port, mint_key, start_envoy, start_keygate, start_mock
from harness.envoy_config import hold_responses, load, render, write
from harness.keygate import MintedKey, counter
from harness.mock import header_values, mock_clear, mock_requests
from harness.mtls import Mesh, behind_sidecar, spiffe_id, terminate_mtls
from harness.paths import REPO_ROOT
from harness.ports import HOST
from harness.stack import KEYGATE_LOG, OPENAI_SECRET, SECRETS, Stack, providers
from harness.tls import Pem

MODES = ["ext_proc", "ext_authz"]
CHAT = "/v1/chat/completions"
ML_NAMESPACE = "spiffe://cluster.local/ns/ml/sa/*"
WEB_FRONTEND = spiffe_id("web", "frontend")


def chat(model: str | None) -> bytes:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    return json.dumps(body).encode()


def consumers(keys: dict[str, MintedKey]) -> list[dict[str, Any]]:
    """An identity-only namespace with a model list, a key bound to one identity, a key bound
    to a network the tests are not in, one bound to loopback, and a plain key with a model list."""
    routes = [f"POST {CHAT}", "POST /v1/embeddings"]

    def consumer(name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "team": "tests", "environment": "production", "provider": "openai",
                "scope": {"routes": routes}, **fields}

    return [
        consumer("ml", authentication="identity", identities=[ML_NAMESPACE],
                 scope={"routes": routes, "models": ["gpt-4o-mini", "text-embedding-3-*"]}),
        consumer("web", authentication="key_and_identity", identities=[WEB_FRONTEND],
                 keys=[{"hash": keys["web"].hash}]),
        consumer("ci", allowed_sources=["192.0.2.0/24"], keys=[{"hash": keys["ci"].hash}]),
        consumer("local", allowed_sources=["127.0.0.0/8"], keys=[{"hash": keys["local"].hash}]),
        consumer("listed", keys=[{"hash": keys["listed"].hash}],
                 scope={"routes": routes, "models": ["gpt-4o-mini"]}),
    ]


@dataclass
class Bed:
    """A stack whose HTTP port requires a mesh client certificate."""

    stack: Stack
    mesh: Mesh
    port: int
    workloads: dict[str, Pem]

    @property
    def mode(self) -> str:
        return self.stack.mode

    def key(self, name: str) -> str:
        return self.stack.keys[name].key

    def access_log(self) -> list[dict[str, Any]]:
        lines = self.stack.envoy.log_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def request(self, workload: str | None, body: bytes, key: str | None = None, path: str = CHAT,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """POST `body` over mTLS as `workload` (a key of `workloads`, or None for no client
        certificate); return the status, the JSON answer and the request's access log line."""
        before = len(self.access_log())
        context = self.mesh.client_context(self.workloads[workload] if workload else None)
        conn = http.client.HTTPSConnection(HOST, self.port, context=context, timeout=10)
        sent = {"content-type": "application/json", **(headers or {})}
        if key is not None:
            sent["authorization"] = f"Bearer {key}"
        try:
            conn.request("POST", path, body=body, headers=sent)
            response = conn.getresponse()
            status, answer = response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()
        return status, answer, self.line_after(before)

    def line_after(self, before: int) -> dict[str, Any]:
        """The access log line after the first `before` ones, once Envoy has written it."""
        deadline = time.monotonic() + 5
        while len(self.access_log()) <= before:
            assert time.monotonic() < deadline, "no access log line for the request"
            time.sleep(0.05)
        return self.access_log()[before]

    def openai(self, workload: str, api_key: str) -> openai.OpenAI:
        context = self.mesh.client_context(self.workloads[workload])
        return openai.OpenAI(base_url=f"https://{HOST}:{self.port}/v1", api_key=api_key, max_retries=0,
                             timeout=10, http_client=httpx.Client(verify=context))


def start_bed(workdir: Path, mode: str, sidecar: bool, held: bool = False) -> Bed:
    """mock ← Envoy (`mode`) ← mTLS, with keygate; `sidecar`: the identity arrives through a
    front listener's x-forwarded-client-cert instead of Envoy's own TLS peer; `held`: ext_proc
    with held responses instead of the observer filter."""
    mesh = Mesh(workdir / "pki")
    workloads = {
        "trainer": mesh.workload("ml", "trainer"),
        "notebook": mesh.workload("ml", "notebook"),
        "frontend": mesh.workload("web", "frontend"),
        "stranger": mesh.workload("other", "stranger"),
    }
    keys = {name: mint_key(name) for name in ["web", "ci", "local", "listed"]}
    mock, mock_port = start_mock(workdir)
    config: dict[str, Any] = {"providers": providers(), "consumers": consumers(keys),
                              "admin": {"audit_log": "audit.jsonl"}}
    if sidecar:
        config["network"] = {"trust_forwarded_client_cert": True}
    kg = start_keygate(workdir, config, SECRETS, env={"KEYGATE_LOG": KEYGATE_LOG})
    envoy_port = free_port()
    rendered = render(REPO_ROOT / "envoy" / f"{mode}.yaml", workdir / f"envoy-{mode}.rendered.yaml",
                      listen_port=envoy_port, admin_port=free_port(), keygate_port=kg.grpc_port,
                      upstream_port=mock_port)
    port = free_port() if sidecar else envoy_port
    base = hold_responses(load(rendered)) if held else load(rendered)
    shaped = behind_sidecar(base, mesh, port) if sidecar else terminate_mtls(base, mesh)
    envoy = start_envoy(write(shaped, workdir / f"envoy-{mode}-mtls.yaml", "mTLS"), workdir)
    return Bed(Stack(mode, mock, mock_port, kg, envoy, envoy_port, keys, workdir), mesh, port, workloads)


@pytest.fixture(scope="module", params=MODES)
def bed(request: pytest.FixtureRequest, cargo_build, tmp_path_factory) -> Iterator[Bed]:
    """keygate's listener terminates mTLS itself; stop() scans every log for secrets."""
    b = start_bed(tmp_path_factory.mktemp(f"gateway-{request.param}"), request.param, sidecar=False)
    yield b
    b.stack.stop()


def decided(line: dict[str, Any], consumer: str | None, outcome: str, model: str | None = None) -> None:
    assert (line["consumer"], line["outcome"], line["model"]) == (consumer, outcome, model), line
    assert line["client_address"] == HOST, line


# -- identity -------------------------------------------------------------------------------


def test_an_identity_alone_calls_the_provider_with_no_key(bed: Bed) -> None:
    mock_clear(bed.stack.mock_port)
    status, answer, line = bed.request("trainer", chat("gpt-4o-mini"))
    assert status == 200, answer
    decided(line, "ml", "allowed", "gpt-4o-mini")
    assert line["identity"] == spiffe_id("ml", "trainer") and line["key_id"] is None
    if bed.mode == "ext_proc":
        # The shipped config observes responses: Envoy writes the line before keygate counts.
        assert line["tokens"] is None and line["usd"] is None, line
    [upstream] = mock_requests(bed.stack.mock_port)
    assert header_values(upstream, "authorization") == [f"Bearer {OPENAI_SECRET}"]
    # The official SDK wants an api_key; a placeholder is ignored when the identity decides.
    before = len(bed.access_log())
    reply = bed.openai("notebook", "unused").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    line = bed.line_after(before)
    decided(line, "ml", "allowed", "gpt-4o-mini")
    assert line["identity"] == spiffe_id("ml", "notebook")


def test_held_responses_put_the_usage_in_the_access_log(cargo_build, tmp_path_factory) -> None:
    """With held responses (docs/envoy.md, one Envoy reaching several keygates) keygate
    answers the last body chunk with the usage, so Envoy's access log carries it."""
    bed = start_bed(tmp_path_factory.mktemp("gateway-held"), "ext_proc", sidecar=False, held=True)
    try:
        status, answer, line = bed.request("trainer", chat("gpt-4o-mini"))
        assert status == 200, answer
        decided(line, "ml", "allowed", "gpt-4o-mini")
        assert line["tokens"] > 0 and line["usd"] > 0, line
        assert line["tokens"] == line["input_tokens"] + line["output_tokens"]
    finally:
        bed.stack.stop()


def test_an_unknown_identity_is_refused(bed: Bed) -> None:
    mock_clear(bed.stack.mock_port)
    status, answer, line = bed.request("stranger", chat("gpt-4o-mini"))
    assert status == 403 and answer["error"]["code"] == "unknown_identity", answer
    assert spiffe_id("other", "stranger") in answer["error"]["message"]
    decided(line, None, "unknown_identity", None)
    assert line["identity"] == spiffe_id("other", "stranger")
    assert mock_requests(bed.stack.mock_port) == []


def test_a_key_bound_to_one_identity_is_refused_from_another(bed: Bed) -> None:
    mock_clear(bed.stack.mock_port)
    status, answer, line = bed.request("frontend", chat("gpt-4o-mini"), key=bed.key("web"))
    assert status == 200, answer
    decided(line, "web", "allowed", "gpt-4o-mini")
    assert line["key_id"].startswith("kid_")
    status, answer, line = bed.request("trainer", chat("gpt-4o-mini"), key=bed.key("web"))
    assert status == 403 and answer["error"]["code"] == "identity_mismatch", answer
    decided(line, "web", "identity_mismatch", None)
    assert line["identity"] == spiffe_id("ml", "trainer") and line["key_id"].startswith("kid_")
    assert len(mock_requests(bed.stack.mock_port)) == 1
    metrics = bed.stack.keygate.metrics()
    assert counter(metrics, "keygate_requests_total", consumer="web", outcome="identity_mismatch") == 1
    assert counter(metrics, "keygate_detections_total", consumer="web", detector="identity_mismatch") == 1
    audit = [json.loads(line) for line in (bed.stack.workdir / "audit.jsonl").read_text().splitlines()]
    [detection] = [a for a in audit if a["detector"] == "identity_mismatch"]
    assert detection["consumer"] == "web" and detection["evidence"]["identity"] == spiffe_id("ml", "trainer")


# -- networks -------------------------------------------------------------------------------


def test_a_key_outside_its_networks_is_refused(bed: Bed) -> None:
    mock_clear(bed.stack.mock_port)
    status, answer, line = bed.request("stranger", chat("gpt-4o-mini"), key=bed.key("ci"))
    assert status == 403 and answer["error"]["code"] == "source_not_allowed", answer
    assert "127.0.0.1" in answer["error"]["message"]
    decided(line, "ci", "source_not_allowed", None)
    status, answer, line = bed.request("stranger", chat("gpt-4o-mini"), key=bed.key("local"))
    assert status == 200, answer
    decided(line, "local", "allowed", "gpt-4o-mini")
    assert len(mock_requests(bed.stack.mock_port)) == 1


# -- models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["identity", "key"])
def test_model_allow_lists(bed: Bed, caller: str) -> None:
    """Allowed, refused and unreadable models, for an identity-only consumer and a key's."""
    workload, key, consumer = ("trainer", None, "ml") if caller == "identity" else ("stranger", bed.key("listed"), "listed")
    mock_clear(bed.stack.mock_port)
    status, answer, line = bed.request(workload, chat("gpt-4o-mini"), key=key)
    assert status == 200, answer
    decided(line, consumer, "allowed", "gpt-4o-mini")
    status, answer, line = bed.request(workload, chat("gpt-4o"), key=key)
    assert status == 403 and answer["error"]["code"] == "model_not_allowed", answer
    assert answer["error"]["type"] == "permission_error" and '"gpt-4o"' in answer["error"]["message"]
    decided(line, consumer, "model_not_allowed", "gpt-4o")
    for unreadable in [chat(None), b"not json", b'{"model": "gpt-4o-mini"']:
        status, answer, line = bed.request(workload, unreadable, key=key)
        assert status == 403 and answer["error"]["code"] == "model_unreadable", (unreadable, answer)
        decided(line, consumer, "model_unreadable", None)
    # The same JSON member twice: which one the provider would take is not keygate's guess.
    twice = b'{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}'
    status, answer, _ = bed.request(workload, twice, key=key)
    assert status == 403 and answer["error"]["code"] == "model_unreadable", answer
    assert len(mock_requests(bed.stack.mock_port)) == 1, "only the allowed model reached the provider"


def test_a_pattern_allows_a_family(bed: Bed) -> None:
    body = json.dumps({"model": "text-embedding-3-small", "input": "hi"}).encode()
    status, answer, line = bed.request("trainer", body, path="/v1/embeddings")
    assert status == 200, answer
    decided(line, "ml", "allowed", "text-embedding-3-small")


# -- a sidecar in front -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=MODES)
def sidecar(request: pytest.FixtureRequest, cargo_build, tmp_path_factory) -> Iterator[Bed]:
    """A front listener terminates mTLS (as Istio's sidecar does) and keygate trusts its
    x-forwarded-client-cert (network.trust_forwarded_client_cert)."""
    b = start_bed(tmp_path_factory.mktemp(f"sidecar-{request.param}"), request.param, sidecar=True)
    yield b
    b.stack.stop()


def test_behind_a_sidecar_the_identity_comes_from_its_header(sidecar: Bed) -> None:
    mock_clear(sidecar.stack.mock_port)
    status, answer, line = sidecar.request("trainer", chat("gpt-4o-mini"))
    assert status == 200, answer
    decided(line, "ml", "allowed", "gpt-4o-mini")
    assert line["identity"] == spiffe_id("ml", "trainer")
    [upstream] = mock_requests(sidecar.stack.mock_port)
    assert header_values(upstream, "x-forwarded-client-cert") == [], "workload details reach the provider"
    # A client writing the header itself gets its element forwarded, but the sidecar appends the
    # certificate it verified, and only that last element counts.
    forged = {"x-forwarded-client-cert": f"URI={spiffe_id('ml', 'trainer')}"}
    status, answer, line = sidecar.request("stranger", chat("gpt-4o-mini"), headers=forged)
    assert status == 403 and answer["error"]["code"] == "unknown_identity", answer
    assert line["identity"] == spiffe_id("other", "stranger")
    # A bound key through the sidecar: its identity is the one the sidecar verified.
    status, answer, _ = sidecar.request("frontend", chat("gpt-4o-mini"), key=sidecar.key("web"))
    assert status == 200, answer
    status, answer, _ = sidecar.request("stranger", chat("gpt-4o-mini"), key=sidecar.key("web"), headers={
        "x-forwarded-client-cert": f"URI={WEB_FRONTEND}"})
    assert status == 403 and answer["error"]["code"] == "identity_mismatch", answer

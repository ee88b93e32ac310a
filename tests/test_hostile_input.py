"""What probing the running stack as an attacker found, each reproduced through real Envoy:
a consumer key in the query string, sensitive endpoints spelled another way, a response in a
coding keygate cannot read, and large JSON answers beyond the process-wide assembly bound."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, Iterator

import openai
import pytest

from harness.keygate import counter
from harness.mock import header_values, mock_clear, mock_requests
from harness.stack import Stack, start_stack

PRICING = [
    {"provider": "openai", "model": "gpt-test", "input_per_mtok_usd": 1.0, "output_per_mtok_usd": 1.0},
    {"provider": "openai", "model": "emb-test", "input_per_mtok_usd": 1.0, "output_per_mtok_usd": 1.0},
]


@pytest.fixture(params=["ext_proc", "ext_authz"])
def stack(request: pytest.FixtureRequest, cargo_build, workdir) -> Iterator[Stack]:
    s = start_stack(workdir, request.param, {"usage": {"pricing": PRICING}})
    yield s
    s.stop()


def send(s: Stack, method: str, path: str, key: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10)
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload, headers={
        "authorization": f"Bearer {key}", "content-type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def test_a_key_in_the_query_string_is_refused_and_never_forwarded(stack: Stack) -> None:
    key = stack.keys["openai"].key
    mock_clear(stack.mock_port)
    for query in (f"?api-key={key}", f"?k={key.upper()}", "?k=" + key.replace("_", "%5F")):
        status, _, body = send(stack, "GET", "/v1/models" + query, key)
        assert status == 400, query
        assert json.loads(body)["error"]["code"] == "key_in_query"
    assert mock_requests(stack.mock_port) == [], "the key never reached the provider"
    assert counter(stack.keygate.metrics(), "keygate_requests_total", outcome="key_in_query") == 3
    assert send(stack, "GET", "/v1/models?limit=3", key)[0] == 200


def test_sensitive_endpoints_are_refused_however_they_are_spelled(stack: Stack) -> None:
    """team-wide's scope is `* /v1/**`: the files, fine-tuning and batch APIs still need a
    literal route, whatever case or suffix the client gives them."""
    key = stack.keys["wide"].key
    mock_clear(stack.mock_port)
    for path in ("/v1/Files", "/v1/FILES", "/v1/files;x", "/v1/files.", "/v1/Fine_Tuning/jobs", "/v1/BATCHES"):
        status, _, body = send(stack, "GET", path, key)
        assert status == 403, path
        assert json.loads(body)["error"]["code"] == "out_of_scope", path
    assert mock_requests(stack.mock_port) == []
    assert send(stack, "GET", "/v1/models", key)[0] == 200


@pytest.fixture
def full(cargo_build, workdir) -> Iterator[Stack]:
    s = start_stack(workdir, "ext_proc", {"usage": {"pricing": PRICING, "max_assembled_bytes": 256 * 1024}})
    yield s
    s.stop()


def test_responses_come_back_in_a_coding_keygate_reads(full: Stack) -> None:
    key = full.keys["openai"].key
    body = {"model": "gpt-test", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    for offered, forwarded in (("zstd, gzip;q=0.8", "gzip;q=0.8"), ("zstd", "identity"), ("gzip, br", "gzip, br")):
        mock_clear(full.mock_port)
        status, _, _ = send(full, "POST", "/v1/chat/completions", key, body, {"accept-encoding": offered})
        assert status == 200
        assert header_values(mock_requests(full.mock_port)[-1], "accept-encoding") == [forwarded], offered


def wait_tokens(s: Stack, before: str, kind: str, expected: int) -> float:
    deadline = time.monotonic() + 5
    while True:
        got = counter(s.keygate.metrics(), "keygate_tokens_total", consumer="team-openai", kind=kind) - counter(
            before, "keygate_tokens_total", consumer="team-openai", kind=kind)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def test_an_answer_in_a_coding_keygate_cannot_read_is_charged_the_worst_case(full: Stack) -> None:
    """A provider answering `content-encoding: zstd` anyway: keygate cannot read the usage, so
    it charges what the request could have cost (its prompt estimate and its max_tokens), not
    zero output tokens."""
    key = full.keys["openai"].key
    before = full.keygate.metrics()
    body = {"model": "gpt-test", "max_tokens": 40, "messages": [{"role": "user", "content": "x" * 400}]}
    status, headers, _ = send(full, "POST", "/v1/chat/completions", key, body, {"x-mock-content-encoding": "zstd"})
    assert status == 200 and headers.get("content-encoding") == "zstd"
    assert wait_tokens(full, before, "output", 40) == 40, "the request's max_tokens, not 0"
    after = full.keygate.metrics()
    assert counter(after, "keygate_usage_estimated_total", consumer="team-openai") - counter(
        before, "keygate_usage_estimated_total", consumer="team-openai") == 1


def test_json_past_the_assembly_bound_is_forwarded_whole_and_charged_the_worst_case(full: Stack) -> None:
    """`usage.max_assembled_bytes` bounds the JSON keygate holds at once across all responses
    (a few concurrent 30 MB answers took 261 MB before): an answer past it reaches the client
    unchanged, unread by keygate, and is charged conservatively."""
    key = full.keys["openai"].key
    before = full.keygate.metrics()
    client = openai.OpenAI(base_url=f"{full.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    raw = client.embeddings.with_raw_response.create(
        model="emb-test", input=["a b c"] * 2000, encoding_format="float", extra_headers={"accept-encoding": "identity"})
    assert raw.http_response.status_code == 200
    assert len(raw.http_response.content) > 256 * 1024
    assert len(raw.parse().data) == 2000
    deadline = time.monotonic() + 5
    while counter(full.keygate.metrics(), "keygate_usage_estimated_total", consumer="team-openai") == counter(
            before, "keygate_usage_estimated_total", consumer="team-openai") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counter(full.keygate.metrics(), "keygate_usage_estimated_total", consumer="team-openai") - counter(
        before, "keygate_usage_estimated_total", consumer="team-openai") == 1


def with_headers(s: Stack, n: int) -> tuple[int, bytes]:
    """A request with `n` headers of its own (http.client adds Host and Accept-Encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10)
    headers = {"authorization": f"Bearer {s.keys['openai'].key}"}
    headers.update({f"x-extra-{i}": "v" for i in range(n - 1)})
    conn.request("GET", "/v1/models", headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def test_too_many_headers_get_a_json_error_not_an_empty_one(stack: Stack) -> None:
    """Envoy allows 100 request headers; keygate adds two. A request near the limit used to
    get an empty 503 (ext_proc) or 500 (ext_authz) from Envoy's own mutation check; keygate
    now refuses it first, with a 431 in the provider's error shape."""
    assert with_headers(stack, 60)[0] == 200
    mock_clear(stack.mock_port)
    status, body = with_headers(stack, 95)
    assert status == 431
    assert json.loads(body)["error"]["code"] == "request_header_fields_too_large"
    assert mock_requests(stack.mock_port) == []
    assert counter(stack.keygate.metrics(), "keygate_requests_total", outcome="too_many_headers") == 1


@pytest.mark.parametrize("mode", ["ext_proc", "ext_authz"])
def test_a_header_limit_set_higher_than_envoys_still_gets_json_from_envoy(cargo_build, workdir, mode: str) -> None:
    """The safety net for a mismatched `network.max_request_headers`: Envoy's own refusal of
    keygate's answer is a JSON error through the shipped configs' local replies."""
    s = start_stack(workdir, mode, {"network": {"max_request_headers": 200}})
    try:
        status, body = with_headers(s, 95)
        assert (status, json.loads(body)["error"]["code"]) in {
            (431, "request_header_fields_too_large"), (500, "gateway_error")}
    finally:
        s.stop()

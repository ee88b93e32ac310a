"""The spine, end to end through real Envoy (ext_proc and ext_authz), with the real openai and
anthropic SDKs: keys are recognised, scoped, swapped, and never leak."""

from __future__ import annotations

import http.client
import json
import time
from typing import Iterator

import anthropic
import openai
import pytest

from harness import leaks
from harness.mock import header_values, mock_clear, mock_requests
from harness.keygate import counter, mint_key
from harness.stack import ANTHROPIC_SECRET, OPENAI_SECRET, Stack, start_stack

MODES = ["ext_proc", "ext_authz"]


@pytest.fixture(scope="module", params=MODES)
def stack(request: pytest.FixtureRequest, cargo_build, tmp_path_factory) -> Iterator[Stack]:
    """One stack per mode for the module; stop() scans its logs for every secret (harness.leaks)."""
    s = start_stack(tmp_path_factory.mktemp(request.param), request.param)
    yield s
    s.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    mock_clear(stack.mock_port)
    return stack


def oai(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0, timeout=10)


def ant(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=key, max_retries=0, timeout=10)


def raw_request(
    stack: Stack, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes, dict[str, str]]:
    """Send `path` byte for byte (no client-side normalization), with `body` if given."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in {**headers, **({"content-length": str(len(body))} if body else {})}.items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
MESSAGE = json.dumps({"model": "claude-test-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = {"content-type": "application/json"}
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}


def _presented(key: str) -> str:
    """A made-up credential a client presents; registered so the leak scan looks for it too."""
    leaks.register(key)
    return key


def _typo(key: str) -> str:
    """A one-character typo of a real key: nearly the whole key, so it must not be logged either."""
    return _presented(key[:-1] + ("A" if key[-1] != "A" else "B"))


def _bad_key(s: Stack, which: str, provider: str) -> str:
    """A key that keygate must refuse, for `provider`'s consumer: a provider-style secret, a
    typo of the real key, a key nobody holds, or the key of an expired, suspended or revoked
    consumer."""
    if which == "malformed":
        return _presented("sk-ant-api03-this-is-a-provider-key" if provider == "anthropic" else "sk-proj-this-is-a-provider-key")
    if which == "typo":
        return _typo(s.keys[provider].key)
    if which == "unknown":
        return mint_key("nobody").key
    return s.keys[which].key


def test_openai_sdk_call_is_swapped_to_the_provider_key(fresh: Stack) -> None:
    key = fresh.keys["openai"].key
    reply = oai(fresh, key).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"x-keygate-consumer": "team-wide", "x-keygate-spoof": "1", "x-api-key": key},
    )
    assert reply.choices[0].message.content
    [seen] = mock_requests(fresh.mock_port)
    assert seen["path"] == "/v1/chat/completions"
    assert header_values(seen, "authorization") == [f"Bearer {OPENAI_SECRET}"]
    assert header_values(seen, "x-keygate-consumer") == ["team-openai"]
    assert header_values(seen, "x-keygate-provider") == ["openai"]
    assert header_values(seen, "x-keygate-spoof") == []
    assert header_values(seen, "x-api-key") == []
    assert all(key not in value for _, value in seen["headers"])


def test_openai_sdk_streaming_and_models(fresh: Stack) -> None:
    client = oai(fresh, fresh.keys["openai"].key)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True, max_tokens=5
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert [m.id for m in client.models.list()]
    assert len(mock_requests(fresh.mock_port)) == 2


def test_anthropic_sdk_call_gets_x_api_key(fresh: Stack) -> None:
    key = fresh.keys["anthropic"].key
    msg = ant(fresh, key).messages.create(
        model="claude-test-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text
    [seen] = mock_requests(fresh.mock_port)
    assert header_values(seen, "x-api-key") == [ANTHROPIC_SECRET]
    assert header_values(seen, "authorization") == []
    assert header_values(seen, "x-keygate-provider") == ["anthropic"]
    assert all(key not in value for _, value in seen["headers"])


@pytest.mark.parametrize("header", ["api-key", "x-api-key"])
def test_openai_consumer_key_in_api_key_headers_is_swapped(fresh: Stack, header: str) -> None:
    """The consumer key in `api-key` (Azure style) or `x-api-key` works for an openai consumer:
    the mock gets the provider key in `authorization` and neither header, nor the key anywhere."""
    key = fresh.keys["openai"].key
    status, body, _ = raw_request(fresh, "POST", "/v1/chat/completions", {**JSON, header: key}, CHAT)
    assert status == 200, body
    assert json.loads(body)["choices"]
    [seen] = mock_requests(fresh.mock_port)
    assert header_values(seen, "authorization") == [f"Bearer {OPENAI_SECRET}"]
    assert header_values(seen, "api-key") == []
    assert header_values(seen, "x-api-key") == []
    assert all(key not in value for _, value in seen["headers"])


# (consumer, method, path, extra headers, body, expected status): what a client sees back.
CLIENT_VIEWS = {
    "openai-allowed": ("openai", "POST", "/v1/chat/completions", JSON, CHAT, 200),
    "openai-stream-allowed": (
        "openai", "POST", "/v1/chat/completions", JSON,
        json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode(), 200,
    ),
    "anthropic-allowed": ("anthropic", "POST", "/v1/messages", {**JSON, **ANTHROPIC_VERSION}, MESSAGE, 200),
    "openai-out-of-scope": ("openai", "GET", "/v1/files", {}, b"", 403),
    "anthropic-out-of-scope": ("anthropic", "POST", "/v1/chat/completions", {**JSON, **ANTHROPIC_VERSION}, CHAT, 403),
    "suspended": ("suspended", "POST", "/v1/chat/completions", JSON, CHAT, 403),
    "typo": ("typo", "POST", "/v1/chat/completions", JSON, CHAT, 401),
}


@pytest.mark.parametrize("case", sorted(CLIENT_VIEWS))
def test_client_never_sees_provider_key_or_consumer_key(fresh: Stack, case: str) -> None:
    """Neither the response headers nor the body a client gets back, allowed or denied, carry
    a provider key or the consumer key it presented."""
    who, method, path, headers, body, expected = CLIENT_VIEWS[case]
    key = _typo(fresh.keys["openai"].key) if who == "typo" else fresh.keys[who].key
    auth = {"x-api-key": key} if who == "anthropic" else {"authorization": f"Bearer {key}"}
    status, got, response_headers = raw_request(fresh, method, path, {**headers, **auth}, body)
    assert status == expected, got
    assert got, "an empty body would prove nothing"
    seen = got.decode("utf-8", errors="replace") + "\n" + json.dumps(response_headers)
    for secret in (OPENAI_SECRET, ANTHROPIC_SECRET, key):
        assert secret not in seen, f"{leaks.redacted(secret)} reached the client ({case})"
    assert len(mock_requests(fresh.mock_port)) == (1 if expected == 200 else 0)


def test_anthropic_sdk_streaming(fresh: Stack) -> None:
    """The stream reaches the SDK whole: the mock sends `max_tokens` words (one per delta) and
    reports, by its documented rule, the prompt's words + 3 as input in message_start and the
    output in message_delta (message_start says 1). With ext_proc keygate counts exactly
    those; with ext_authz it never sees the response and counts nothing."""
    before = fresh.keygate.metrics()
    client = ant(fresh, fresh.keys["anthropic"].key)
    with client.messages.stream(
        model="claude-test-model", max_tokens=6, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2 + 3, 6)
    assert final.stop_reason == "end_turn"
    assert len(final.content[0].text.split()) == 6
    [seen] = mock_requests(fresh.mock_port)
    assert header_values(seen, "x-api-key") == [ANTHROPIC_SECRET]

    def counted(kind: str) -> float:
        return (counter(fresh.keygate.metrics(), "keygate_tokens_total", consumer="team-anthropic", kind=kind)
                - counter(before, "keygate_tokens_total", consumer="team-anthropic", kind=kind))

    want = {"input": 5, "output": 6} if fresh.mode == "ext_proc" else {"input": 0, "output": 0}
    deadline = time.monotonic() + 5  # the exchange is charged just after the stream ends
    while {k: counted(k) for k in want} != want and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {k: counted(k) for k in ("input", "output", "cached", "cache_creation")} == {**want, "cached": 0, "cache_creation": 0}


@pytest.mark.parametrize(
    "which,error,needle",
    [
        ("malformed", openai.AuthenticationError, "malformed API key"),
        ("typo", openai.AuthenticationError, "checksum"),
        ("unknown", openai.AuthenticationError, "unknown API key"),
        ("expired", openai.AuthenticationError, "expired"),
        ("suspended", openai.PermissionDeniedError, "suspended"),
        ("revoked", openai.PermissionDeniedError, "revoked"),
    ],
)
def test_openai_sdk_sees_keygate_denials(fresh: Stack, which: str, error: type, needle: str) -> None:
    with pytest.raises(error) as caught:
        oai(fresh, _bad_key(fresh, which, "openai")).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert needle in str(caught.value)
    assert caught.value.body["message"].startswith("keygate:")
    assert mock_requests(fresh.mock_port) == []


@pytest.mark.parametrize(
    "which,error,kind,needle",
    [
        ("malformed", anthropic.AuthenticationError, "authentication_error", "malformed API key"),
        ("typo", anthropic.AuthenticationError, "authentication_error", "checksum"),
        ("unknown", anthropic.AuthenticationError, "authentication_error", "unknown API key"),
        ("expired", anthropic.AuthenticationError, "authentication_error", "expired"),
        ("suspended", anthropic.PermissionDeniedError, "permission_error", "suspended"),
        ("revoked", anthropic.PermissionDeniedError, "permission_error", "revoked"),
    ],
)
def test_anthropic_sdk_sees_keygate_denials(fresh: Stack, which: str, error: type, kind: str, needle: str) -> None:
    """Every bad key on /v1/messages is an Anthropic-shaped error the anthropic SDK raises as
    the right class, carrying keygate's message; nothing is forwarded."""
    with pytest.raises(error) as caught:
        ant(fresh, _bad_key(fresh, which, "anthropic")).messages.create(
            model="claude-test-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    body = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["error"]["message"].startswith("keygate:")
    assert needle in body["error"]["message"]
    assert needle in str(caught.value)
    assert mock_requests(fresh.mock_port) == []


def test_anthropic_missing_key_is_401_in_anthropic_shape(fresh: Stack) -> None:
    """An Anthropic-style request (anthropic-version header) with no key at all gets a 401
    whose JSON body is exactly Anthropic's error shape."""
    status, body, headers = raw_request(fresh, "POST", "/v1/messages", {**JSON, **ANTHROPIC_VERSION}, MESSAGE)
    assert status == 401, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert set(error) == {"type", "error"}
    assert error["type"] == "error"
    assert set(error["error"]) == {"type", "message"}
    assert error["error"]["type"] == "authentication_error"
    assert error["error"]["message"].startswith("keygate: no API key provided")
    assert mock_requests(fresh.mock_port) == []


def test_missing_key_is_401_json(fresh: Stack) -> None:
    status, body, headers = raw_request(fresh, "GET", "/v1/models", {})
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert b"no API key provided" in body
    assert mock_requests(fresh.mock_port) == []


def test_out_of_scope_routes_are_403(fresh: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        oai(fresh, fresh.keys["openai"].key).files.list()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oai(fresh, fresh.keys["wide"].key).files.list()
    assert "named explicitly" in str(caught.value)
    with pytest.raises(anthropic.PermissionDeniedError):
        ant(fresh, fresh.keys["anthropic"].key).models.list()
    assert mock_requests(fresh.mock_port) == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions/../files",
        "/v1/chat/completions/%2e%2e/files",
        "/v1/chat/completions%2F..%2Ffiles",
        "/v1/chat/completions%2f..%2ffiles",
        "/v1/chat/completions/..%2Ffiles",
        "/v1/chat/completions\\..\\files",
        "/v1//chat/completions/./../../v1/files",
    ],
)
def test_traversal_and_encoded_paths_never_pass(fresh: Stack, path: str) -> None:
    """Traversal and encoded-slash variants of a chat path are refused (400 or 403, never a
    404 that an upstream might have produced) with a JSON error, and nothing is forwarded."""
    asked_before = counter(fresh.keygate.metrics(), "keygate_requests_total")
    status, body, headers = raw_request(
        fresh, "POST", path, {"authorization": f"Bearer {fresh.keys['openai'].key}", "content-length": "0"}
    )
    assert status in (400, 403), (status, body)
    assert mock_requests(fresh.mock_port) == []
    if "%2f" in path.lower():
        # Envoy itself rejects escaped slashes before keygate is asked; its local_reply_config
        # gives that rejection keygate's JSON error shape.
        assert counter(fresh.keygate.metrics(), "keygate_requests_total") == asked_before
        assert status == 400
    assert headers["content-type"] == "application/json", (status, body)
    error = json.loads(body)["error"]
    assert error["message"].startswith("keygate:")
    assert error["type"] in ("invalid_request_error", "permission_error")
    if status == 400:
        assert error["code"] == "bad_path"


def test_metrics_count_outcomes_with_bounded_labels(fresh: Stack) -> None:
    before = fresh.keygate.metrics()
    for _ in range(5):
        raw_request(fresh, "GET", "/v1/models", {"authorization": "Bearer kg_live_garbage"})
    oai(fresh, fresh.keys["openai"].key).models.list()
    after = fresh.keygate.metrics()
    delta = counter(after, "keygate_requests_total", consumer="unknown", outcome="malformed_key") - counter(
        before, "keygate_requests_total", consumer="unknown", outcome="malformed_key"
    )
    assert delta == 5
    allowed = counter(after, "keygate_requests_total", consumer="team-openai", provider="openai", outcome="allowed")
    assert allowed >= 1
    assert "kg_live_garbage" not in after
    assert "keygate_decision_seconds_bucket" in after

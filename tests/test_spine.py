"""The spine, end to end through real Envoy (ext_proc and ext_authz), with the real openai and
anthropic SDKs: keys are recognised, scoped, swapped, and never leak."""

from __future__ import annotations

import http.client
from typing import Iterator

import anthropic
import openai
import pytest

from harness.mock import header_values, mock_clear, mock_requests
from harness.keygate import counter
from harness.stack import ANTHROPIC_SECRET, OPENAI_SECRET, Stack, start_stack

MODES = ["ext_proc", "ext_authz"]


@pytest.fixture(scope="module", params=MODES)
def stack(request: pytest.FixtureRequest, cargo_build, tmp_path_factory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp(request.param), request.param)
    yield s
    logs = s.logs()
    s.stop()
    for name, text in logs.items():
        for secret in s.secrets():
            assert secret not in text, f"a secret appeared in {name}'s log"


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    mock_clear(stack.mock_port)
    return stack


def oai(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0, timeout=10)


def ant(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=key, max_retries=0, timeout=10)


def raw_request(stack: Stack, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    """Send `path` byte for byte (no client-side normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


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


def test_anthropic_sdk_streaming(fresh: Stack) -> None:
    client = ant(fresh, fresh.keys["anthropic"].key)
    with client.messages.stream(
        model="claude-test-model", max_tokens=6, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens > 0


def _typo(key: str) -> str:
    return key[:-1] + ("A" if key[-1] != "A" else "B")


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
    keys = {
        "malformed": "sk-proj-this-is-a-provider-key",
        "typo": _typo(fresh.keys["openai"].key),
        "unknown": "kg_live_" + "x" * 30 + "_000000",
        "expired": fresh.keys["expired"].key,
        "suspended": fresh.keys["suspended"].key,
        "revoked": fresh.keys["revoked"].key,
    }
    if which == "unknown":
        from harness.keygate import mint_key

        keys["unknown"] = mint_key("nobody").key
    with pytest.raises(error) as caught:
        oai(fresh, keys[which]).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert needle in str(caught.value)
    assert caught.value.body["message"].startswith("keygate:")
    assert mock_requests(fresh.mock_port) == []


@pytest.mark.parametrize(
    "which,error",
    [
        ("unknown", anthropic.AuthenticationError),
        ("typo", anthropic.AuthenticationError),
        ("suspended", anthropic.PermissionDeniedError),
    ],
)
def test_anthropic_sdk_sees_keygate_denials(fresh: Stack, which: str, error: type) -> None:
    from harness.keygate import mint_key

    keys = {
        "unknown": mint_key("nobody").key,
        "typo": _typo(fresh.keys["anthropic"].key),
        "suspended": fresh.keys["suspended"].key,
    }
    with pytest.raises(error) as caught:
        ant(fresh, keys[which]).messages.create(
            model="claude-test-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["message"].startswith("keygate:")
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
    status, body, _ = raw_request(
        fresh, "POST", path, {"authorization": f"Bearer {fresh.keys['openai'].key}", "content-length": "0"}
    )
    assert status in (400, 403, 404), (status, body)
    assert mock_requests(fresh.mock_port) == []


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

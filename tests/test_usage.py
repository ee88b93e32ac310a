"""Usage and spend accounting through real Envoy (ext_proc) with the real openai and anthropic
SDKs: counters equal exactly what the mock provider reported, streams are accounted (adding
include_usage when the client did not), interrupted streams are estimated, gzip is parsed,
and month-to-date spend survives a restart."""

from __future__ import annotations

import http.client
import time
from typing import Iterator

import anthropic
import openai
import pytest

from harness.keygate import counter
from harness.mock import header_values, mock_requests
from harness.procs import Proc
from harness.keygate import keygate_bin
from harness.stack import Stack, start_stack

# Integer micro-dollars per token make every expected cost exact.
PRICING = [
    {"provider": "openai", "model": "gpt-test", "input_per_mtok_usd": 2.0, "cached_input_per_mtok_usd": 1.0, "output_per_mtok_usd": 8.0},
    {"provider": "anthropic", "model": "claude-test", "input_per_mtok_usd": 3.0, "cached_input_per_mtok_usd": 1.0,
     "cache_write_per_mtok_usd": 4.0, "output_per_mtok_usd": 15.0},
]


@pytest.fixture(scope="module")
def stack(cargo_build, tmp_path_factory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("usage"), "ext_proc", {"usage": {"pricing": PRICING}})
    yield s
    logs = s.logs()
    s.stop()
    for text in logs.values():
        for secret in s.secrets():
            assert secret not in text


def oai(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=s.keys["openai"].key, max_retries=0, timeout=10)


def ant(s: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=s.base_url, api_key=s.keys["anthropic"].key, max_retries=0, timeout=10)


class Meter:
    """Reads keygate's counters before and after, for exact deltas."""

    def __init__(self, s: Stack, consumer: str) -> None:
        self.s, self.consumer = s, consumer
        self.before = s.keygate.metrics()

    def delta(self, name: str, **labels: str) -> float:
        after = settle(self.s)
        labels = {"consumer": self.consumer, **labels}
        return counter(after, name, **labels) - counter(self.before, name, **labels)

    def tokens(self, kind: str) -> float:
        return self.delta("keygate_tokens_total", kind=kind)


def settle(s: Stack) -> str:
    """Metrics once the last exchange has been charged (the ext_proc stream closes just after
    the response ends)."""
    time.sleep(0.15)
    return s.keygate.metrics()


def test_openai_json_usage_and_spend_are_exact(stack: Stack) -> None:
    m = Meter(stack, "team-openai")
    r = oai(stack).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "three small words"}],
        extra_headers={"x-mock-cached-tokens": "2"},
    )
    u = r.usage
    assert m.tokens("input") == u.prompt_tokens
    assert m.tokens("output") == u.completion_tokens
    assert m.tokens("cached") == 2
    cost = (u.prompt_tokens - 2) * 2 + 2 * 1 + u.completion_tokens * 8
    assert m.delta("keygate_spend_usd_total", model="gpt-test") == pytest.approx(cost / 1e6, abs=1e-9)
    assert m.delta("keygate_responses_total", status_class="2xx") == 1
    # The SDK asked for gzip and the mock compressed the JSON: keygate decoded it to count.
    assert "gzip" in header_values(mock_requests(stack.mock_port)[-1], "accept-encoding")[0]


@pytest.mark.parametrize("client_asked", [False, True])
def test_openai_streams_are_accounted_exactly(stack: Stack, client_asked: bool) -> None:
    m = Meter(stack, "team-openai")
    extra = {"stream_options": {"include_usage": True}} if client_asked else {}
    chunks = list(
        oai(stack).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "stream me four"}], stream=True, max_tokens=7, **extra
        )
    )
    usage = chunks[-1].usage
    assert usage is not None, "the stream ends with a usage chunk (keygate adds include_usage when missing)"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert m.tokens("input") == usage.prompt_tokens
    assert m.tokens("output") == usage.completion_tokens == 7
    assert m.delta("keygate_usage_estimated_total") == 0
    sent = mock_requests(stack.mock_port)[-1]["body"]
    assert '"include_usage": true' in sent.replace('"include_usage":true', '"include_usage": true')


def test_anthropic_json_and_stream_with_cache_tokens(stack: Stack) -> None:
    m = Meter(stack, "team-anthropic")
    headers = {"x-mock-cached-tokens": "5", "x-mock-cache-creation-tokens": "3"}
    msg = ant(stack).messages.create(
        model="claude-test", max_tokens=9, messages=[{"role": "user", "content": "hello anthropic"}], extra_headers=headers
    )
    with ant(stack).messages.stream(
        model="claude-test", max_tokens=4, messages=[{"role": "user", "content": "and stream"}], extra_headers=headers
    ) as s:
        final = s.get_final_message()
    billed_in = sum(x.input_tokens + 5 + 3 for x in (msg.usage, final.usage))
    assert m.tokens("input") == billed_in
    assert m.tokens("cached") == 10
    assert m.tokens("cache_creation") == 6
    assert m.tokens("output") == msg.usage.output_tokens + final.usage.output_tokens
    cost = sum(x.input_tokens * 3 + 5 * 1 + 3 * 4 + x.output_tokens * 15 for x in (msg.usage, final.usage))
    assert m.delta("keygate_spend_usd_total", model="claude-test") == pytest.approx(cost / 1e6, abs=1e-9)
    assert counter(stack.keygate.metrics(), "keygate_time_to_first_token_seconds_count", provider="anthropic") >= 1


def test_interrupted_stream_is_estimated_and_the_client_sees_what_was_sent(stack: Stack) -> None:
    m = Meter(stack, "team-openai")
    got = []
    with pytest.raises((openai.APIError, Exception)):
        for chunk in oai(stack).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "cut me off"}], stream=True, max_tokens=20,
            extra_headers={"x-mock-interrupt-after": "4"},
        ):
            got.append(chunk)
    assert 0 < len(got) <= 4
    assert m.delta("keygate_usage_estimated_total") == 1
    assert m.tokens("output") >= 1
    assert stack.keygate.proc.alive()


def test_errors_are_counted_not_priced(stack: Stack) -> None:
    m = Meter(stack, "team-openai")
    with pytest.raises(openai.InternalServerError):
        oai(stack).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}], extra_headers={"x-mock-status": "500"}
        )
    assert m.delta("keygate_responses_total", status_class="5xx") == 1
    assert m.tokens("input") == 0
    assert m.delta("keygate_spend_usd_total") == 0


def test_gzip_body_reaches_the_client_byte_identical(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    body = b'{"model":"gpt-test","messages":[{"role":"user","content":"gzip please"}]}'
    headers = {"authorization": f"Bearer {stack.keys['openai'].key}", "content-type": "application/json", "accept-encoding": "gzip"}
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    assert resp.status == 200 and resp.getheader("content-encoding") == "gzip"
    import gzip
    import json

    assert json.loads(gzip.decompress(raw))["object"] == "chat.completion"
    assert int(resp.getheader("content-length")) == len(raw)


def test_month_to_date_spend_survives_a_restart(stack: Stack) -> None:
    oai(stack).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "spend"}])
    before = counter(settle(stack), "keygate_spend_month_to_date_usd", consumer="team-openai")
    assert before > 0
    time.sleep(1.2)  # the ledger flushes at least every second (and on shutdown)
    kg = stack.keygate
    kg.proc.stop()
    kg.proc = Proc([keygate_bin(), "serve", "--config", kg.config_path], kg.config_path.parent, name="keygate")
    kg.proc.wait_http(f"http://127.0.0.1:{kg.admin_port}/readyz", timeout=20, expect_status=200)
    oai(stack).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "spend"}])
    after = counter(settle(stack), "keygate_spend_month_to_date_usd", consumer="team-openai")
    assert after > before, "the ledger was reloaded: month-to-date continues from where it was"

"""Responses beyond Envoy's buffer limit, through real Envoy (ext_proc) with the openai SDK:
a JSON body larger than Envoy's 1 MiB default buffer reaches the client whole and is charged
exactly, and response bytes are counted once."""

from __future__ import annotations

import time
from typing import Iterator

import openai
import pytest

from harness.keygate import counter
from harness.stack import Stack, start_stack

PRICING = [{"provider": "openai", "model": "emb-test", "input_per_mtok_usd": 1.0, "output_per_mtok_usd": 1.0}]


@pytest.fixture(scope="module")
def stack(cargo_build, tmp_path_factory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("usage-large"), "ext_proc", {"usage": {"pricing": PRICING}})
    yield s
    s.stop()  # also scans keygate's and Envoy's logs for every key (harness.leaks)


def metrics_after(s: Stack, before: str, input_tokens: int) -> str:
    """/metrics once team-openai's `input_tokens` are counted (keygate charges the exchange
    just after the response ends), or after 5 s (the caller's assertions then fail on it)."""
    deadline = time.monotonic() + 5
    while True:
        after = s.keygate.metrics()
        counted = (counter(after, "keygate_tokens_total", consumer="team-openai", kind="input")
                   - counter(before, "keygate_tokens_total", consumer="team-openai", kind="input"))
        if counted == input_tokens or time.monotonic() > deadline:
            return after
        time.sleep(0.02)


def test_json_response_larger_than_envoys_buffer_is_delivered_and_charged(stack: Stack) -> None:
    """Envoy answers 500 when a BUFFERED body outgrows its buffer limit; keygate streams large
    JSON bodies to itself instead, so the client gets the provider's answer and the usage in
    it is charged exactly."""
    labels = {"consumer": "team-openai"}
    before = stack.keygate.metrics()
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.keys["openai"].key, max_retries=0, timeout=30)
    raw = client.embeddings.with_raw_response.create(model="emb-test", input=["a b c"] * 6000, encoding_format="float",
        # Uncompressed, so the body Envoy handles is the full size (the mock gzips on request).
        extra_headers={"accept-encoding": "identity"},
    )
    body = raw.http_response.content
    assert raw.http_response.status_code == 200
    assert len(body) > 1024 * 1024, f"the response must outgrow Envoy's 1 MiB buffer, got {len(body)} bytes"
    result = raw.parse()
    assert len(result.data) == 6000
    after = metrics_after(stack, before, result.usage.prompt_tokens)
    delta = lambda name, **extra: counter(after, name, **labels, **extra) - counter(before, name, **labels, **extra)  # noqa: E731
    assert delta("keygate_tokens_total", kind="input") == result.usage.prompt_tokens > 0
    assert delta("keygate_usage_estimated_total") == 0
    assert delta("keygate_response_bytes_total") == len(body)

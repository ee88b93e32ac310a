"""Usage and spend accounting through real Envoy (ext_proc) with the real openai and anthropic
SDKs: counters equal exactly what the mock provider reported (tokens of every kind, spend),
streams are accounted (adding include_usage when the client did not) and reach the client chunk
by chunk, interrupted streams are estimated by the documented rule and the client gets exactly
what the provider sent, gzip bodies are parsed and passed on byte for byte, and month-to-date
spend survives a crash after the periodic ledger flush and a SIGTERM right after a request."""

from __future__ import annotations

import gzip
import http.client
import json
import math
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest

from harness.envoy_config import admin_port_of, load, render, start_envoy
from harness.keygate import counter
from harness.mock import header_values, mock_requests
from harness.paths import REPO_ROOT, keygate_bin
from harness.ports import HOST, free_port
from harness.procs import Proc
from harness.stack import Stack, start_stack
from harness.upstream_recorder import UpstreamRecorder

# Integer micro-dollars per token make every expected cost exact.
PRICING = [
    {"provider": "openai", "model": "gpt-test", "input_per_mtok_usd": 2.0, "cached_input_per_mtok_usd": 1.0, "output_per_mtok_usd": 8.0},
    {"provider": "anthropic", "model": "claude-test", "input_per_mtok_usd": 3.0, "cached_input_per_mtok_usd": 1.0,
     "cache_write_per_mtok_usd": 4.0, "output_per_mtok_usd": 15.0},
]
OPENAI_PRICE = {"input": 2, "cached": 1, "output": 8}  # micro-USD per token, from PRICING

# The documented estimate rule (src/usage/estimate.rs, docs/usage-accounting.md "When usage is missing").
BYTES_PER_TOKEN = 4


@pytest.fixture(scope="module")
def stack(cargo_build, tmp_path_factory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("usage"), "ext_proc", {"usage": {"pricing": PRICING}})
    yield s
    logs = s.logs()
    s.stop()
    for text in logs.values():
        for secret in s.secrets():
            assert secret not in text


def oai(s: Stack, base_url: str | None = None, key: str = "openai") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url or s.base_url}/v1", api_key=s.keys[key].key, max_retries=0, timeout=10)


def ant(s: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=s.base_url, api_key=s.keys["anthropic"].key, max_retries=0, timeout=10)


# How long a read waits for the value it expects: keygate charges an exchange when the ext_proc
# stream closes, just after the client has the whole response.
SETTLE_S = 5.0


def poll(read, want: float | None) -> float:
    """`read()` once it equals `want` (within 1e-9), or its last value after SETTLE_S (the
    caller's assertion then shows it); with `want=None`, read once."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        got = read()
        if want is None or math.isclose(got, want, abs_tol=1e-9) or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


class Meter:
    """Reads keygate's counters before and after, for exact deltas. Pass the value a read is
    expected to reach as `want`: the read polls until the charge lands (or SETTLE_S passes)
    instead of sleeping a fixed time and hoping."""

    def __init__(self, s: Stack, consumer: str) -> None:
        self.s, self.consumer = s, consumer
        self.before = s.keygate.metrics()

    def delta(self, name: str, want: float | None = None, **labels: str) -> float:
        labels = {"consumer": self.consumer, **labels}
        return poll(lambda: counter(self.s.keygate.metrics(), name, **labels) - counter(self.before, name, **labels), want)

    def tokens(self, kind: str, want: float | None = None) -> float:
        return self.delta("keygate_tokens_total", want, kind=kind)

    def token_counts(self, want: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """(input, output, cached, reasoning) tokens counted since this meter started, once
        they equal `want` (or after SETTLE_S)."""
        kinds = ("input", "output", "cached", "reasoning")
        poll(lambda: float(tuple(self.tokens(k) for k in kinds) == tuple(want)), 1.0)
        return tuple(self.tokens(kind) for kind in kinds)  # type: ignore[return-value]


def openai_cost_usd(prompt: int, cached: int, completion: int) -> float:
    """What PRICING charges for an OpenAI usage block (reasoning is part of completion)."""
    micro = (prompt - cached) * OPENAI_PRICE["input"] + cached * OPENAI_PRICE["cached"] + completion * OPENAI_PRICE["output"]
    return micro / 1e6


# ---------------------------------------------------------------- what the provider sent


@dataclass
class Upstream:
    """One HTTP/1.1 response as the provider sent it."""

    status: int
    headers: dict[str, str]
    body: bytes  # de-chunked, still content-encoded
    complete: bool  # the body's framing ended (content-length reached, or the last chunk seen)


def parse_upstream(raw: bytes) -> Upstream:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        return Upstream(status, headers, rest[:n], len(rest) >= n)
    assert headers.get("transfer-encoding") == "chunked", headers
    body = bytearray()
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return Upstream(status, headers, bytes(body), False)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return Upstream(status, headers, bytes(body), True)
        if len(rest) < size + 2:
            return Upstream(status, headers, bytes(body + rest[:size]), False)
        body += rest[:size]
        rest = rest[size + 2:]


def sse_data(body: bytes) -> list[Any]:
    """The JSON `data:` payloads of a chat-completions SSE body ([DONE] left out)."""
    out = []
    for frame in body.split(b"\n\n"):
        if frame.startswith(b"data: ") and frame != b"data: [DONE]":
            out.append(json.loads(frame[len(b"data: "):]))
    return out


@dataclass
class Recorded:
    """A second Envoy (the shipped ext_proc config) on the same keygate, whose upstream is the
    mock behind an UpstreamRecorder."""

    recorder: UpstreamRecorder
    envoy: Proc
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


@pytest.fixture(scope="module")
def recorded(stack: Stack) -> Iterator[Recorded]:
    recorder = UpstreamRecorder(stack.mock_port)
    workdir = stack.keygate.config_path.parent
    port = free_port()
    config = render(
        REPO_ROOT / "envoy" / "ext_proc.yaml", workdir / "envoy-recorded.yaml", listen_port=port,
        admin_port=free_port(), keygate_port=stack.keygate.grpc_port, upstream_port=recorder.port,
    )
    envoy = start_envoy(config, workdir)
    yield Recorded(recorder, envoy, port)
    envoy.stop()
    recorder.close()
    log = envoy.log_text()
    for secret in stack.secrets():
        assert secret not in log


# ---------------------------------------------------------------- exact accounting


def test_openai_json_usage_and_spend_are_exact(stack: Stack, recorded: Recorded) -> None:
    m = Meter(stack, "team-openai")
    mark = recorded.recorder.mark()
    r = oai(stack, recorded.base_url).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "three small words"}],
        extra_headers={"x-mock-cached-tokens": "2", "x-mock-reasoning-tokens": "3"},
    )
    upstream = parse_upstream(recorded.recorder.since(mark))
    # The SDK asked for gzip and the mock compressed the JSON: keygate decoded it to count,
    # and the SDK decoded exactly what the provider sent.
    assert "gzip" in header_values(mock_requests(stack.mock_port)[-1], "accept-encoding")[0]
    assert upstream.headers.get("content-encoding") == "gzip" and upstream.complete
    assert r.to_dict() == json.loads(gzip.decompress(upstream.body))
    u = r.usage
    assert (u.prompt_tokens_details.cached_tokens, u.completion_tokens_details.reasoning_tokens) == (2, 3)
    assert m.tokens("input", u.prompt_tokens) == u.prompt_tokens
    assert m.tokens("output", u.completion_tokens) == u.completion_tokens
    assert m.tokens("cached", 2) == 2
    assert m.tokens("reasoning", 3) == 3
    assert m.tokens("cache_creation", 0) == 0
    assert m.delta("keygate_spend_usd_total", model="gpt-test") == pytest.approx(
        openai_cost_usd(u.prompt_tokens, 2, u.completion_tokens), abs=1e-9)
    assert m.delta("keygate_responses_total", 1, status_class="2xx") == 1
    assert m.delta("keygate_usage_estimated_total", 0) == 0


def test_responses_are_observed_by_the_second_filter(stack: Stack) -> None:
    """The shipped config reads responses with its observe-only filter: keygate parks each
    allowed exchange after the request phases and the observer claims it by its ticket (none
    unmatched, none left parked). The client gets the provider's content-length, which Envoy
    would drop on a body held in STREAMED mode. A denial parks nothing."""
    def handovers(result: str) -> float:
        return counter(stack.keygate.metrics(), "keygate_exchange_handovers_total", result=result)

    claimed, unmatched = handovers("claimed"), handovers("unmatched")
    m = Meter(stack, "team-openai")
    body = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "three small words"}]})
    conn = http.client.HTTPConnection(HOST, stack.envoy_port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=body, headers={
        "authorization": f"Bearer {stack.keys['openai'].key}", "content-type": "application/json"})
    resp = conn.getresponse()
    answer = resp.read()
    conn.close()
    assert resp.status == 200, answer
    assert resp.getheader("content-length") == str(len(answer))
    usage = json.loads(answer)["usage"]
    assert m.tokens("output", usage["completion_tokens"]) == usage["completion_tokens"]
    assert poll(lambda: handovers("claimed") - claimed, 1) == 1
    assert handovers("unmatched") == unmatched
    assert counter(stack.keygate.metrics(), "keygate_exchanges_parked") == 0
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="kg_live_wrong", max_retries=0).models.list()
    assert (handovers("claimed") - claimed, handovers("unmatched")) == (1, unmatched)


def test_a_denial_costs_one_stream_an_allowed_request_two(stack: Stack) -> None:
    """keygate's denials carry `x-keygate-denied: true` and the shipped config's observer is
    skipped on it: a denied request opens one gRPC stream to keygate (the decision), an
    allowed one two (the decision and the observer), as Envoy's own counter of requests to
    the keygate cluster shows. Without the skip, an unknown-key flood would cost keygate two
    streams per request."""
    admin = admin_port_of(load(stack.workdir / "envoy-ext_proc.yaml"))

    def streams() -> int:
        with urllib.request.urlopen(f"http://{HOST}:{admin}/stats?filter=^cluster.keygate.upstream_rq_total$") as r:
            return int(r.read().decode().split(":")[1])

    def send(key: str, n: int) -> int:
        before = streams()
        for _ in range(n):
            conn = http.client.HTTPConnection(HOST, stack.envoy_port, timeout=10)
            conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {key}"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == (200 if key == stack.keys["openai"].key else 401)
            if resp.status == 401:
                assert resp.getheader("x-keygate-denied") == "true"
            else:
                assert resp.getheader("x-keygate-denied") is None
        return round(poll(lambda: streams() - before, 2 * n if resp.status == 200 else n))

    assert send("kg_live_wrong", 20) == 20
    assert send(stack.keys["openai"].key, 20) == 40


@pytest.mark.parametrize("client_asked", [False, True])
def test_openai_streams_are_accounted_exactly(stack: Stack, client_asked: bool) -> None:
    m = Meter(stack, "team-openai")
    extra = {"stream_options": {"include_usage": True}} if client_asked else {}
    chunks = list(
        oai(stack).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "stream me four"}], stream=True, max_tokens=7,
            extra_headers={"x-mock-cached-tokens": "1", "x-mock-reasoning-tokens": "2"}, **extra,
        )
    )
    usage = chunks[-1].usage
    assert usage is not None, "the stream ends with a usage chunk (keygate adds include_usage when missing)"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert (usage.prompt_tokens_details.cached_tokens, usage.completion_tokens_details.reasoning_tokens) == (1, 2)
    assert usage.completion_tokens == 7
    assert m.token_counts((usage.prompt_tokens, 7, 1, 2)) == (usage.prompt_tokens, 7, 1, 2)
    assert m.delta("keygate_spend_usd_total", model="gpt-test") == pytest.approx(
        openai_cost_usd(usage.prompt_tokens, 1, usage.completion_tokens), abs=1e-9)
    assert m.delta("keygate_usage_estimated_total", 0) == 0
    sent = mock_requests(stack.mock_port)[-1]["body"]
    assert '"include_usage": true' in sent.replace('"include_usage":true', '"include_usage": true')


def test_openai_responses_api_stream_reasoning_and_spend(stack: Stack) -> None:
    """The Responses API (event stream with a `response.completed` usage block): input, cached,
    output and reasoning tokens and the spend equal what the mock reported."""
    m = Meter(stack, "team-wide")
    client = oai(stack, key="wide")
    events = list(client.responses.create(
        model="gpt-test", input="reason about this briefly", stream=True, max_output_tokens=6,
        extra_headers={"x-mock-cached-tokens": "2", "x-mock-reasoning-tokens": "4"},
    ))
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1
    u = completed[0].response.usage
    assert (u.input_tokens_details.cached_tokens, u.output_tokens_details.reasoning_tokens) == (2, 4)
    assert u.output_tokens == 6
    assert m.token_counts((u.input_tokens, 6, 2, 4)) == (u.input_tokens, 6, 2, 4)
    assert m.delta("keygate_spend_usd_total", model="gpt-test") == pytest.approx(
        openai_cost_usd(u.input_tokens, 2, u.output_tokens), abs=1e-9)
    assert m.delta("keygate_usage_estimated_total", 0) == 0


def test_anthropic_json_and_stream_with_cache_tokens(stack: Stack) -> None:
    headers = {"x-mock-cached-tokens": "5", "x-mock-cache-creation-tokens": "3"}

    def cost(u: Any) -> float:  # input_tokens excludes the cache reads and writes for Anthropic
        return (u.input_tokens * 3 + 5 * 1 + 3 * 4 + u.output_tokens * 15) / 1e6

    for stream in (False, True):
        m = Meter(stack, "team-anthropic")
        if stream:
            with ant(stack).messages.stream(
                model="claude-test", max_tokens=4, messages=[{"role": "user", "content": "and stream"}],
                extra_headers=headers,
            ) as s:
                u = s.get_final_message().usage
        else:
            u = ant(stack).messages.create(
                model="claude-test", max_tokens=9, messages=[{"role": "user", "content": "hello anthropic"}],
                extra_headers=headers,
            ).usage
        assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (5, 3)
        assert m.tokens("input", u.input_tokens + 5 + 3) == u.input_tokens + 5 + 3, f"stream={stream}"
        assert m.tokens("cached", 5) == 5
        assert m.tokens("cache_creation", 3) == 3
        assert m.tokens("output", u.output_tokens) == u.output_tokens
        assert m.tokens("reasoning", 0) == 0
        assert m.delta("keygate_spend_usd_total", model="claude-test") == pytest.approx(cost(u), abs=1e-9), f"stream={stream}"
        assert m.delta("keygate_usage_estimated_total", 0) == 0
    assert counter(stack.keygate.metrics(), "keygate_time_to_first_token_seconds_count", provider="anthropic") >= 1


# ---------------------------------------------------------------- streaming is not buffered


CHUNK_DELAY_S = 0.15
STREAM_WORDS = 8


def test_sse_reaches_the_client_chunk_by_chunk(stack: Stack) -> None:
    """keygate switches the response body to STREAMED for text/event-stream: with the mock
    pausing 150 ms between frames, the first content frame reaches the client long before the
    stream ends (a buffered response would deliver every frame at the end), frames arrive spread
    out, and the stream is still accounted exactly."""
    m = Meter(stack, "team-openai")
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "pace yourself"}], "stream": True,
            "max_tokens": STREAM_WORDS}
    headers = {"authorization": f"Bearer {stack.keys['openai'].key}",
               "x-mock-chunk-delay-ms": str(int(CHUNK_DELAY_S * 1000))}
    arrivals: list[tuple[float, bytes]] = []
    pending = b""
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", f"{stack.base_url}/v1/chat/completions", json=body, headers=headers) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            for piece in resp.iter_raw():
                now = time.monotonic() - started
                pending += piece
                while b"\n\n" in pending:
                    frame, pending = pending.split(b"\n\n", 1)
                    arrivals.append((now, frame))
    total = time.monotonic() - started
    assert pending == b""
    frames = [f for _, f in arrivals]
    assert frames[-1] == b"data: [DONE]"
    payloads = [json.loads(f[len(b"data: "):]) for f in frames[:-1]]
    content_at = [t for (t, _), p in zip(arrivals, payloads) if p["choices"] and p["choices"][0]["delta"].get("content")]
    assert len(content_at) == STREAM_WORDS
    # role, 8 words, finish, usage, [DONE]: 11 pauses of 150 ms on the mock's side.
    assert total >= (len(frames) - 1) * CHUNK_DELAY_S * 0.9
    assert content_at[0] < total - 2 * CHUNK_DELAY_S, (
        f"first content frame at {content_at[0]:.3f}s of {total:.3f}s: the stream was buffered")
    gaps = [b - a for a, b in zip(content_at, content_at[1:])]
    assert sum(g >= CHUNK_DELAY_S / 2 for g in gaps) >= len(gaps) // 2, f"frames arrived in bursts: {gaps}"
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"])
    assert len(text.split()) == STREAM_WORDS
    usage = payloads[-1]["usage"]
    assert m.tokens("output", usage["completion_tokens"]) == usage["completion_tokens"] == STREAM_WORDS
    assert m.tokens("input", usage["prompt_tokens"]) == usage["prompt_tokens"]
    assert m.delta("keygate_usage_estimated_total", 0) == 0


# ---------------------------------------------------------------- missing usage


def test_interrupted_stream_is_estimated_and_the_client_sees_what_was_sent(stack: Stack, recorded: Recorded) -> None:
    """The mock sends 4 SSE frames and drops the connection. The client gets exactly those 4
    chunks, then an error; keygate charges the documented estimate once: input = ceil(prompt
    text bytes / 4), output = ceil(content bytes streamed / 4) capped at max_tokens, nothing
    cached or reasoning."""
    m = Meter(stack, "team-openai")
    prompt, max_tokens, frames_sent = "cut me off right here", 20, 4
    mark = recorded.recorder.mark()
    got = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in oai(stack, recorded.base_url).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": prompt}], stream=True, max_tokens=max_tokens,
            extra_headers={"x-mock-interrupt-after": str(frames_sent)},
        ):
            got.append(chunk)
    upstream = parse_upstream(recorded.recorder.since(mark))
    assert upstream.status == 200 and not upstream.complete
    sent = sse_data(upstream.body)
    assert len(sent) == frames_sent
    assert [c.to_dict() for c in got] == sent, "the client got exactly the chunks the provider sent"

    content_bytes = sum(len((c["choices"][0]["delta"].get("content") or "").encode()) for c in sent)
    assert content_bytes > 0
    want_input = max(1, math.ceil(len(prompt.encode()) / BYTES_PER_TOKEN))
    want_output = min(math.ceil(content_bytes / BYTES_PER_TOKEN), max_tokens)
    assert m.delta("keygate_usage_estimated_total", 1) == 1
    assert m.tokens("input", want_input) == want_input
    assert m.tokens("output", want_output) == want_output
    assert (m.tokens("cached", 0), m.tokens("reasoning", 0)) == (0, 0)
    assert m.delta("keygate_spend_usd_total", model="gpt-test") == pytest.approx(
        openai_cost_usd(want_input, 0, want_output), abs=1e-9)
    assert m.delta("keygate_responses_total", 1, status_class="2xx") == 1
    assert stack.keygate.proc.alive()


def test_errors_are_counted_not_priced(stack: Stack) -> None:
    m = Meter(stack, "team-openai")
    with pytest.raises(openai.InternalServerError):
        oai(stack).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}], extra_headers={"x-mock-status": "500"}
        )
    assert m.delta("keygate_responses_total", 1, status_class="5xx") == 1
    assert m.tokens("input", 0) == 0
    assert m.delta("keygate_spend_usd_total", 0) == 0


# ---------------------------------------------------------------- gzip


def test_gzip_body_reaches_the_client_byte_identical(stack: Stack, recorded: Recorded) -> None:
    """A client that asks for gzip and does not decode gets the provider's compressed bytes
    unchanged; keygate decoded its own copy and counted exactly the usage inside."""
    m = Meter(stack, "team-openai")
    mark = recorded.recorder.mark()
    conn = http.client.HTTPConnection("127.0.0.1", recorded.port, timeout=10)
    body = b'{"model":"gpt-test","messages":[{"role":"user","content":"gzip please"}],"max_tokens":5}'
    headers = {"authorization": f"Bearer {stack.keys['openai'].key}", "content-type": "application/json",
               "accept-encoding": "gzip", "x-mock-cached-tokens": "1"}
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    upstream = parse_upstream(recorded.recorder.since(mark))
    assert resp.status == upstream.status == 200
    assert resp.getheader("content-encoding") == upstream.headers["content-encoding"] == "gzip"
    assert upstream.complete and raw == upstream.body, "the client got the provider's gzip bytes unchanged"
    assert int(resp.getheader("content-length")) == len(raw)
    decoded = json.loads(gzip.decompress(raw))
    assert decoded["object"] == "chat.completion"
    usage = decoded["usage"]
    assert usage["completion_tokens"] == 5
    assert m.tokens("input", usage["prompt_tokens"]) == usage["prompt_tokens"]
    assert m.tokens("output", usage["completion_tokens"]) == usage["completion_tokens"]
    assert m.tokens("cached", usage["prompt_tokens_details"]["cached_tokens"]) == usage["prompt_tokens_details"]["cached_tokens"] == 1
    assert m.tokens("reasoning", 0) == 0
    assert m.delta("keygate_spend_usd_total", model="gpt-test") == pytest.approx(
        openai_cost_usd(usage["prompt_tokens"], 1, usage["completion_tokens"]), abs=1e-9)
    assert m.delta("keygate_usage_estimated_total", 0) == 0


# ---------------------------------------------------------------- the ledger across restarts


@pytest.fixture
def own_stack(cargo_build, tmp_path) -> Iterator[Stack]:
    """A stack for one test that restarts keygate: the restarted process belongs to the test
    (conftest stops it when the test ends), so the module's shared stack is left alone."""
    s = start_stack(tmp_path, "ext_proc", {"usage": {"pricing": PRICING}})
    yield s
    logs = s.logs()
    s.stop()
    for text in logs.values():
        for secret in s.secrets():
            assert secret not in text


def restart_keygate(s: Stack, kill: bool = False) -> int | None:
    """Stop keygate with SIGTERM (or SIGKILL with `kill`: no shutdown work at all), start it
    again on the same config and ports; return the exit status of the stopped process."""
    kg = s.keygate
    status = kg.proc.kill() if kill else kg.proc.stop(grace=10)
    kg.proc = Proc([keygate_bin(), "serve", "--config", kg.config_path], kg.config_path.parent, name="keygate",
                   env=kg.proc.env)
    kg.proc.wait_http(f"http://127.0.0.1:{kg.admin_port}/readyz", timeout=20, expect_status=200)
    return status


def month_to_date(s: Stack, want: float) -> float:
    """team-openai's month-to-date gauge, once it reads `want` (or after SETTLE_S)."""
    return poll(lambda: counter(s.keygate.metrics(), "keygate_spend_month_to_date_usd", consumer="team-openai"), want)


def spend(s: Stack, words: str) -> float:
    """One priced request; returns its cost."""
    u = oai(s).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": words}]).usage
    return openai_cost_usd(u.prompt_tokens, 0, u.completion_tokens)


def test_month_to_date_spend_survives_a_crash_after_the_periodic_flush(own_stack: Stack) -> None:
    """The ledger is flushed at least every second: after 1.5 s, even SIGKILL (no shutdown
    flush) loses nothing, and the restarted keygate continues month-to-date from the file."""
    first = spend(own_stack, "spend")  # the stack is this test's own: the month starts at 0
    before = month_to_date(own_stack, first)
    assert before == pytest.approx(first, abs=1e-9) and before > 0
    time.sleep(1.5)
    assert restart_keygate(own_stack, kill=True) == -9
    cost = spend(own_stack, "spend again")
    assert month_to_date(own_stack, before + cost) == pytest.approx(before + cost, abs=1e-9), (
        "the ledger was reloaded: month-to-date continues from where it was")


def test_month_to_date_spend_survives_sigterm_right_after_a_request(own_stack: Stack) -> None:
    """No pause for the periodic flush: keygate is sent SIGTERM as soon as the client has its
    response, so only the shutdown flush can have saved that request's spend."""
    first = spend(own_stack, "a fresh month-to-date first")  # the gauge is current in this process
    before = month_to_date(own_stack, first)
    assert before == pytest.approx(first, abs=1e-9)
    cost_at_shutdown = spend(own_stack, "charged just before SIGTERM")
    assert restart_keygate(own_stack) == 0, "keygate exits cleanly on SIGTERM"
    cost_after = spend(own_stack, "after the restart")
    total = before + cost_at_shutdown + cost_after
    assert month_to_date(own_stack, total) == pytest.approx(total, abs=1e-9), (
        "the spend of the request just before SIGTERM was flushed at shutdown")

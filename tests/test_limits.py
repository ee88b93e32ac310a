"""Limits and budgets through real Envoy with the real openai SDK: the 61st request in a
minute is a RateLimitError with OpenAI's headers, oversized bodies (declared or chunked) are
413 and never forwarded, token reservations are reconciled to actual usage, budgets hold
across a restart, and an address that keeps failing authentication is locked out. The limit and
budget tests run on both limit stores: local, and shared through a real Redis."""

from __future__ import annotations

import http.client
import math
import time
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

from harness.keygate import counter, keygate_bin
from harness.mock import mock_clear, mock_requests
from harness.procs import Proc
from harness.redis import start_redis
from harness.stack import Stack, start_stack

PRICING = [{"provider": "openai", "model": "gpt-test", "input_per_mtok_usd": 2.0, "output_per_mtok_usd": 8.0}]


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest, workdir: Path) -> Iterator[dict[str, Any]]:
    """The global `limits` config of each limit store (redis: a real redis-server)."""
    if request.param == "local":
        yield {}
        return
    proc, port = start_redis(workdir)
    try:
        yield {"limits": {"backend": "redis", "redis": {"url": f"redis://127.0.0.1:{port}/0", "timeout": "50ms"}}}
    finally:
        proc.stop()


def limited_stack(workdir: Path, mode: str, provider_limits: dict[str, Any], **extra: Any) -> Stack:
    """The standard stack with `provider_limits` on the openai provider (so team-openai and
    team-wide get them); `extra` goes into keygate's config (e.g. the global `limits`)."""
    return start_stack(workdir, mode, {"usage": {"pricing": PRICING}, **extra}, provider_limits={"openai": provider_limits})


def oai(s: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=key or s.keys["openai"].key, max_retries=0, timeout=10)


def chat(s: Stack, **kw: Any):
    return oai(s).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}], **kw)


@pytest.fixture
def stop_after() -> Iterator[list[Stack]]:
    """Stacks to stop after the test; Stack.stop() also scans their logs for secrets."""
    stacks: list[Stack] = []
    yield stacks
    for s in stacks:
        s.stop()


@pytest.mark.parametrize("mode", ["ext_proc", "ext_authz"])
def test_sixty_first_request_is_a_rate_limit_error_with_openai_headers(cargo_build, workdir, stop_after, mode,
                                                                     backend) -> None:
    s = limited_stack(workdir, mode, {"requests_per_minute": 60}, **backend)
    stop_after.append(s)
    conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10)
    started = time.monotonic()
    admitted = 0
    while admitted < 70:
        conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {s.keys['openai'].key}"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            assert r.status == 429
            break
        admitted += 1
    elapsed = time.monotonic() - started
    # Burst of 60, then one more per second of refill while the loop ran.
    assert 60 <= admitted <= 60 + int(elapsed) + 1, (admitted, elapsed)
    # Seen through the SDK. Under load the client can take over a second to start, and the
    # bucket refills one request a second: a few calls in a row always reach the limit again.
    client = oai(s)
    e = None
    for _ in range(5):
        try:
            client.models.list()
        except openai.RateLimitError as caught:
            e = caught
            break
    assert e is not None, "five calls in a row after the limit were all admitted"
    assert "60 requests per minute" in str(e)
    h = e.response.headers
    assert int(h["retry-after"]) >= 1
    assert h["x-ratelimit-limit-requests"] == "60"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith(("ms", "s"))
    # Other consumers are not affected.
    anthropic_ok = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10)
    anthropic_ok.request("POST", "/v1/messages", body=b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
                         headers={"x-api-key": s.keys["anthropic"].key, "content-type": "application/json"})
    assert anthropic_ok.getresponse().status == 200
    assert counter(s.keygate.metrics(), "keygate_requests_total", consumer="team-openai", outcome="rate_limited") == 2


def _post(s: Stack, body: bytes, chunked: bool) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=15)
    headers = {"authorization": f"Bearer {s.keys['openai'].key}", "content-type": "application/json"}
    if chunked:
        conn.putrequest("POST", "/v1/chat/completions")
        for k, v in {**headers, "transfer-encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(0, len(body), 8192):
            piece = body[i:i + 8192]
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
    else:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_bodies_are_413_and_never_forwarded(cargo_build, workdir, stop_after, chunked) -> None:
    s = limited_stack(workdir, "ext_proc", {})
    stop_after.append(s)
    filler = "x" * (65 * 1024)
    big = ('{"model":"gpt-test","messages":[{"role":"user","content":"' + filler + '"}]}').encode()
    small = b'{"model":"gpt-test","messages":[{"role":"user","content":"fits"}]}'
    assert _post(s, small, chunked)[0] == 200
    mock_clear(s.mock_port)
    status, body = _post(s, big, chunked)
    assert status == 413, body
    assert b"65536 bytes" in body
    assert mock_requests(s.mock_port) == []
    assert counter(s.keygate.metrics(), "keygate_requests_total", outcome="too_large") == 1


def test_token_reservations_are_reconciled_to_actual_usage(cargo_build, workdir, stop_after, backend) -> None:
    # 100 tokens a minute; each request reserves its prompt estimate + 40 (default_max_tokens,
    # which keygate also writes into the request as its cap) but the model answers in 16:
    # three reservations (3 × ~41 > 100) fit only because each is reconciled.
    s = limited_stack(workdir, "ext_proc", {"tokens_per_minute": 100, "default_max_tokens": 40}, **backend)
    stop_after.append(s)
    short = {"extra_headers": {"x-mock-output-tokens": "16"}}
    first = chat(s, **short)
    assert first.usage.total_tokens < 40
    time.sleep(0.2)
    second = chat(s, **short)
    assert second.choices
    time.sleep(0.2)
    third = chat(s, **short)
    assert third.choices
    with pytest.raises(openai.RateLimitError) as caught:
        chat(s, max_tokens=90)
    assert "tokens per minute" in str(caught.value)
    assert caught.value.response.headers["x-ratelimit-limit-tokens"] == "100"


# The budget test's numbers. PRICING charges gpt-test 2 µUSD per input token and 8 per output
# token. keygate reserves the most a request can cost: every byte of its body as an input token
# (priced as a cache write, here the input price) plus max_tokens (10) priced as output. The
# mock reports the prompt's words + 3 per message as input (4) and max_tokens as output (10).
BUDGET_MICRO_USD = 600
MICRO_USD_PER_TOKEN = {"input": 2, "output": 8}
CHARGE_MICRO_USD = 4 * MICRO_USD_PER_TOKEN["input"] + 10 * MICRO_USD_PER_TOKEN["output"]  # 88


def wait_for_counter(s: Stack, name: str, want: float, timeout: float = 5.0, **labels: str) -> float:
    """Poll keygate's counter until it equals `want` (an exchange is charged just after its
    response has ended) or `timeout` passes; return the last value read."""
    deadline = time.monotonic() + timeout
    while not math.isclose(got := counter(s.keygate.metrics(), name, **labels), want, abs_tol=1e-12):
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return got


def test_budget_is_enforced_and_survives_a_restart(cargo_build, workdir, stop_after, backend) -> None:
    """A request is admitted only while spent + reserved + its own reservation fits in the
    budget (src/limits/limiter.rs), its reservation being the most it can cost (its body's B
    bytes as input tokens and its 10 output tokens: R = 2·B + 80 µUSD). Each request costs 88
    µUSD, less than its reservation, so the month never overshoots: with a 600 µUSD budget the
    requests admitted are exactly those with (k − 1)·88 + R ≤ 600. "Admit while spent < budget"
    would let more through."""
    s = limited_stack(workdir, "ext_proc", {"monthly_budget_usd": BUDGET_MICRO_USD / 1e6, "default_max_tokens": 10},
                      **backend)
    stop_after.append(s)
    mock_clear(s.mock_port)
    admitted, spent, reservation = 0, 0, None
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(20):
            usage = chat(s, max_tokens=10).usage
            if reservation is None:
                body_len = mock_requests(s.mock_port)[-1]["body_len"]
                reservation = body_len * MICRO_USD_PER_TOKEN["input"] + 10 * MICRO_USD_PER_TOKEN["output"]
            assert spent + reservation <= BUDGET_MICRO_USD, (
                f"request {admitted + 1} was admitted with {spent} µUSD spent: its reservation did not fit")
            admitted += 1
            charge = usage.prompt_tokens * MICRO_USD_PER_TOKEN["input"] + usage.completion_tokens * MICRO_USD_PER_TOKEN["output"]
            assert charge == CHARGE_MICRO_USD, (usage, "the mock's usage is not what this test's numbers assume")
            spent += charge
            # The next request must see this one's charge, not its reservation: wait for it.
            assert wait_for_counter(s, "keygate_spend_usd_total", spent / 1e6, consumer="team-openai") == pytest.approx(
                spent / 1e6, abs=1e-12)
    assert reservation is not None and reservation > CHARGE_MICRO_USD
    assert spent + reservation > BUDGET_MICRO_USD, f"refused with {spent} µUSD spent: the next reservation fits"
    expected = (BUDGET_MICRO_USD - reservation) // CHARGE_MICRO_USD + 1
    assert (admitted, spent) == (expected, expected * CHARGE_MICRO_USD)
    assert spent <= BUDGET_MICRO_USD
    assert caught.value.code == "insufficient_quota"
    assert "monthly budget is exhausted" in str(caught.value)
    metrics = s.keygate.metrics()
    assert counter(metrics, "keygate_budget_usd", consumer="team-openai") == pytest.approx(BUDGET_MICRO_USD / 1e6)
    assert counter(metrics, "keygate_spend_usd_total", consumer="team-openai") == pytest.approx(spent / 1e6, abs=1e-12)
    assert counter(metrics, "keygate_requests_total", consumer="team-openai", outcome="over_budget") == 1
    assert counter(metrics, "keygate_requests_total", consumer="team-openai", outcome="allowed") == admitted, (
        "a request refused at the body stage is counted once, as over_budget, never also as allowed")
    time.sleep(1.2)
    kg = s.keygate
    kg.proc.stop()
    kg.proc = Proc([keygate_bin(), "serve", "--config", kg.config_path], kg.config_path.parent, name="keygate",
                   env=kg.proc.env)  # the same debug log level: the leak scan reads this log too
    kg.proc.wait_http(f"http://127.0.0.1:{kg.admin_port}/readyz", timeout=20, expect_status=200)
    assert counter(kg.metrics(), "keygate_spend_month_to_date_usd", consumer="team-openai") == pytest.approx(
        spent / 1e6, abs=1e-12), "the restarted keygate reads the month's spend from its ledger"
    with pytest.raises(openai.RateLimitError) as again:
        chat(s, max_tokens=10)
    assert again.value.code == "insufficient_quota"


def test_failed_authentications_lock_out_the_address_only(cargo_build, workdir, stop_after) -> None:
    s = limited_stack(workdir, "ext_proc", {}, limits={"failed_auth_per_minute": 5})
    stop_after.append(s)

    def status(source: str, key: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10, source_address=(source, 0))
        conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {key}"})
        r = conn.getresponse()
        r.read()
        return r.status

    bad = "kg_live_" + "A" * 30 + "_AAAAAA"
    assert [status("127.0.0.2", bad) for _ in range(5)] == [401] * 5
    assert status("127.0.0.2", bad) == 429
    assert status("127.0.0.2", s.keys["openai"].key) == 200, "a valid key behind the same address is not punished"
    assert status("127.0.0.2", bad) == 429, "the address is still locked out for bad keys"
    assert status("127.0.0.3", bad) == 401, "other addresses are not"
    assert counter(s.keygate.metrics(), "keygate_requests_total", outcome="auth_flood") == 2


def test_behind_a_load_balancer_valid_keys_pass_while_one_client_floods_bad_ones(cargo_build, workdir, stop_after) -> None:
    """With the defaults, every client behind one balancer shares its address: one bad request
    per second used to lock out every valid consumer behind it (40 of 40 got 429)."""
    s = limited_stack(workdir, "ext_authz", {}, limits={"failed_auth_per_minute": 5})
    stop_after.append(s)
    client = oai(s, "kg_live_" + "B" * 30 + "_BBBBBB")
    good = 0
    for _ in range(40):
        with pytest.raises((openai.AuthenticationError, openai.RateLimitError)):
            client.models.list()
        chat(s, max_tokens=5)
        good += 1
    assert good == 40
    # 5 per minute refills one every 12 s: at most a couple of the 40 bad keys get a 401 again.
    assert counter(s.keygate.metrics(), "keygate_requests_total", outcome="auth_flood") >= 30


def test_forwarded_for_trusts_only_the_hops_the_trusted_proxy_appended(cargo_build, workdir, stop_after) -> None:
    """Behind one trusted proxy (`xff_num_trusted_hops: 1`) the client address is the entry the
    proxy appended, left of the peer Envoy appended: what a client writes further left cannot
    dodge the lockout or lock out somebody else."""
    s = limited_stack(
        workdir, "ext_proc", {}, limits={"failed_auth_per_minute": 5}, network={"xff_num_trusted_hops": 1}
    )
    stop_after.append(s)

    def status(xff: str, key: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10)
        conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {key}", "x-forwarded-for": xff})
        r = conn.getresponse()
        r.read()
        return r.status

    bad = "kg_live_" + "A" * 30 + "_AAAAAA"
    attacker, victim = "198.51.100.7", "203.0.113.9"
    # The attacker writes a fresh address (then the victim's) on the left of every request.
    spoofed = [f"10.9.{i}.1, {attacker}" for i in range(5)]
    assert [status(xff, bad) for xff in spoofed] == [401] * 5
    assert status(f"{victim}, {attacker}", bad) == 429, "locked out by the address the proxy appended"
    assert status(f"{victim}, {attacker}", bad) == 429
    assert status(victim, bad) == 401, "the victim's own address was never charged"

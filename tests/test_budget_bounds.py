"""Budgets that hold whatever the request: every body measured against the size limit (any
method, chunked or not, in both modes), an output cap written into requests that name none so
a provider cannot answer past the reservation, budgeted requests keygate cannot bound refused,
and no model free. Through real Envoy with the mock provider, which answers as long as asked
(`x-mock-output-tokens`) unless the request caps it, as a provider does."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.envoy_config import add_provider_route, load, render, start_envoy, write
from harness.keygate import counter, mint_key, start_keygate
from harness.mock import mock_clear, mock_requests, start_mock
from harness.paths import REPO_ROOT
from harness.ports import free_port
from harness.stack import KEYGATE_LOG, SECRETS, Stack, consumer, providers

AZURE_SECRET = "azure-UPSTREAM-budget-0123456789abcdef0123456789"
DEPLOYMENT = "gpt-test-eu"
PRICING = [
    {"provider": "openai", "model": m, "input_per_mtok_usd": 10.0, "output_per_mtok_usd": 10.0}
    for m in ("gpt-test", DEPLOYMENT)
]
BUDGET_USD = 0.05
DEFAULT_MAX_TOKENS = 1000


def start(workdir: Path, mode: str) -> Stack:
    mock, mock_port = start_mock(workdir)
    names = ["budgeted", "unbudgeted", "azure", "small", "wide"]
    keys = {n: mint_key(n) for n in names}
    chat = ["POST /v1/chat/completions", "PUT /v1/**", "POST /v1/embeddings"]
    budget = {"monthly_budget_usd": BUDGET_USD, "default_max_tokens": DEFAULT_MAX_TOKENS}
    consumers = [
        consumer("budgeted", "openai", chat, keys["budgeted"], limits=budget),
        consumer("unbudgeted", "openai", chat, keys["unbudgeted"]),
        consumer("azure", "azure", ["POST /openai/deployments/*/chat/completions"], keys["azure"], limits=budget),
        consumer("small", "openai", chat, keys["small"], limits={"max_request_bytes": 1000}),
    ]
    provs = {**providers(), "azure": {"kind": "azure_openai", "credentials": {"production": "azure/production"}}}
    kg = start_keygate(workdir, {"providers": provs, "consumers": consumers, "usage": {"pricing": PRICING}},
                       {**SECRETS, "azure/production": AZURE_SECRET}, env={"KEYGATE_LOG": KEYGATE_LOG})
    envoy_port = free_port()
    rendered = render(REPO_ROOT / "envoy" / f"{mode}.yaml", workdir / f"envoy-{mode}.rendered.yaml",
                      listen_port=envoy_port, admin_port=free_port(), keygate_port=kg.grpc_port, upstream_port=mock_port)
    config = add_provider_route(load(rendered), "azure", mock_port, host="budget-test.openai.azure.com")
    envoy = start_envoy(write(config, workdir / f"envoy-{mode}.yaml", note="+ azure"), workdir)
    return Stack(mode, mock, mock_port, kg, envoy, envoy_port, keys, workdir)


@pytest.fixture(params=["ext_proc", "ext_authz"])
def stack(request: pytest.FixtureRequest, cargo_build, workdir) -> Iterator[Stack]:
    s = start(workdir, request.param)
    yield s
    s.stop()


@pytest.fixture
def full(cargo_build, workdir) -> Iterator[Stack]:
    s = start(workdir, "ext_proc")
    yield s
    s.stop()


def post(s: Stack, key: str, path: str, body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST", chunked: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=30)
    all_headers = {"authorization": f"Bearer {key}", "content-type": "application/json", **(headers or {})}
    if chunked:
        conn.request(method, path, body=iter([body[:len(body) // 2], body[len(body) // 2:]]), headers=all_headers,
                     encode_chunked=True)
    else:
        conn.request(method, path, body=body, headers=all_headers)
    r = conn.getresponse()
    return r.status, r.read()


def chat_body(model: str | None = "gpt-test", **extra: Any) -> bytes:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], **extra}
    if model:
        body["model"] = model
    return json.dumps(body).encode()


def test_every_body_is_measured_whatever_the_method_and_framing(stack: Stack) -> None:
    """`small` may send 1,000 bytes. A chunked upload has no content-length to check at the
    headers; keygate measures the body itself (ext_proc reads it, ext_authz gets it through
    with_request_body), for PUT as for POST."""
    key = stack.keys["small"].key
    big = chat_body(padding="x" * 4000)
    mock_clear(stack.mock_port)
    for method, path in (("POST", "/v1/chat/completions"), ("PUT", "/v1/vector_stores/vs_1")):
        status, body = post(stack, key, path, big, method=method, chunked=True)
        assert status == 413, (method, status, body)
        assert json.loads(body)["error"]["code"] == "request_too_large"
    assert mock_requests(stack.mock_port) == [], "no oversized body reached the provider"
    assert post(stack, key, "/v1/chat/completions", chat_body(), chunked=True)[0] == 200


def test_requests_naming_no_output_cap_get_the_reserved_one(full: Stack) -> None:
    """The model would answer 5,000 tokens. A budgeted key's request that names no cap gets
    `max_completion_tokens: 1000` (its default_max_tokens, what keygate reserved), so the
    answer stops there; an unlimited key's request is left as sent."""
    mock_clear(full.mock_port)
    status, body = post(full, full.keys["budgeted"].key, "/v1/chat/completions", chat_body(),
                        {"x-mock-output-tokens": "5000"})
    assert status == 200
    assert json.loads(body)["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS
    sent = json.loads(mock_requests(full.mock_port)[-1]["body"])
    assert sent["max_completion_tokens"] == DEFAULT_MAX_TOKENS
    status, body = post(full, full.keys["unbudgeted"].key, "/v1/chat/completions", chat_body(),
                        {"x-mock-output-tokens": "5000"})
    assert json.loads(body)["usage"]["completion_tokens"] == 5000
    assert "max_completion_tokens" not in json.loads(mock_requests(full.mock_port)[-1]["body"])


def test_budgeted_requests_keygate_cannot_bound_are_refused(full: Stack) -> None:
    key = full.keys["budgeted"].key
    mock_clear(full.mock_port)
    cases = [
        (b"not json at all", {}),
        (gzip.compress(chat_body()), {"content-encoding": "gzip"}),
        (chat_body(model=None), {}),
    ]
    for body, headers in cases:
        status, answer = post(full, key, "/v1/chat/completions", body, headers)
        assert status == 400, (headers, answer)
        assert json.loads(answer)["error"]["code"] == "unreadable_request"
    assert mock_requests(full.mock_port) == []
    assert counter(full.keygate.metrics(), "keygate_requests_total", outcome="unreadable_request") == 3
    assert post(full, full.keys["unbudgeted"].key, "/v1/chat/completions", chat_body(model=None))[0] == 200, (
        "without a budget nothing needs bounding")


def test_a_model_without_a_price_is_charged_at_the_providers_highest(full: Stack) -> None:
    status, _ = post(full, full.keys["unbudgeted"].key, "/v1/chat/completions", chat_body(model="gpt-9-unlisted"))
    assert status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and counter(full.keygate.metrics(), "keygate_usage_unpriced_total") == 0:
        time.sleep(0.02)
    metrics = full.keygate.metrics()
    assert counter(metrics, "keygate_usage_unpriced_total", consumer="unbudgeted") == 1
    assert counter(metrics, "keygate_spend_usd_total", consumer="unbudgeted", model="gpt-9-unlisted") > 0, "not free"


def test_concurrent_requests_stay_within_the_budget(full: Stack) -> None:
    """20 requests at once from each budgeted key, each wanting 5,000 output tokens at $10 per
    million ($0.05 budget). Each reservation is the most its request can cost (its body's
    bytes as input, the written cap of 1,000 output tokens): the answers cannot cost more than
    their reservations, so what is admitted cannot exceed the budget. The Azure key's model is
    its deployment, priced like any model (it used to reserve $0 and admit all 20)."""
    budget_micro = int(BUDGET_USD * 1e6)
    targets = {
        "budgeted": ("/v1/chat/completions", chat_body()),
        "azure": (f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21", chat_body(model=None)),
    }
    for name, (path, body) in targets.items():
        results: list[int] = []
        lock = threading.Lock()

        def one() -> None:
            status, _ = post(full, full.keys[name].key, path, body,
                             {"x-mock-output-tokens": "5000", "x-mock-latency-ms": "300", "api-key": full.keys[name].key}
                             if name == "azure" else {"x-mock-output-tokens": "5000", "x-mock-latency-ms": "300"})
            with lock:
                results.append(status)

        threads = [threading.Thread(target=one) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        admitted = results.count(200)
        print(name, sorted(results))
        assert set(results) <= {200, 429}, results
        deadline = time.monotonic() + 5
        while True:
            spent = counter(full.keygate.metrics(), "keygate_spend_month_to_date_usd", consumer=name) * 1e6
            output = counter(full.keygate.metrics(), "keygate_tokens_total", consumer=name, kind="output")
            if output == admitted * DEFAULT_MAX_TOKENS or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(f"{name}: admitted {admitted} of 20, spent {spent:.0f} of {budget_micro} micro-USD")
        assert output == admitted * DEFAULT_MAX_TOKENS, "every answer stopped at the written cap"
        assert 1 <= admitted <= 4
        assert spent <= budget_micro, f"{name} spent {spent} micro-USD of a {budget_micro} budget"


def test_keygate_check_says_what_unpriced_models_cost_budgeted_consumers(cargo_build, tmp_path: Path) -> None:
    import subprocess

    from harness.keygate import keygate_bin

    (tmp_path / "secrets.yaml").write_text("openai/production: {api_key: sk-check-0002}\n")
    key = mint_key("check")
    config = {
        "credentials": {"source": "file", "path": "secrets.yaml"},
        "providers": {"openai": {"kind": "openai", "credentials": {"production": "openai/production"}}},
        "consumers": [consumer("capped", "openai", ["POST /v1/chat/completions"], key, limits={"monthly_budget_usd": 5})],
    }
    path = tmp_path / "keygate.yaml"
    import yaml
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([str(keygate_bin()), "check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert ('note: 1 consumer(s) of provider "openai" have a budget and may call models without a price: those are '
            "charged at the highest listed prices ($150.00 input, $600.00 output per million tokens)") in out.stdout

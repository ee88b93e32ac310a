"""Azure OpenAI end to end through real Envoy (ext_proc and ext_authz) with the real
`openai.AzureOpenAI` client: keygate swaps the consumer key for the provider key in `api-key`,
Envoy routes on the provider's *name* (`x-keygate-provider: azure`) to a route + cluster added the
way docs/envoy.md "Adding a provider" documents (harness.envoy_config.add_provider_route), streams are
accounted as OpenAI, Azure's sensitive endpoints stay closed, and bad keys are 401s."""

from __future__ import annotations

import copy
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
import yaml

from harness import leaks
from harness.envoy_config import add_provider_route, load, render, start_envoy, write
from harness.keygate import counter, mint_key, start_keygate
from harness.mock import header_values, mock_clear, mock_requests, start_mock
from harness.paths import REPO_ROOT, venv_bin
from harness.ports import free_port
from harness.stack import KEYGATE_LOG, Stack, consumer

MODES = ["ext_proc", "ext_authz"]

PROVIDER = "azure"  # the provider's name in keygate.yaml, and so the x-keygate-provider value
AZURE_SECRET = "azure-UPSTREAM-0123456789abcdef0123456789abcdef"
AZURE_HOST = "keygate-test.openai.azure.com"
DEPLOYMENT = "gpt-test-eu"
API_VERSION = "2024-10-21"
CHAT_PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions"

# Azure OpenAI is priced at OpenAI's list prices when it has no price of its own
# (src/accounting: Accounting::price); integer micro-dollars per token keep costs exact.
PRICING = [
    {"provider": "openai", "model": DEPLOYMENT, "input_per_mtok_usd": 2.0, "cached_input_per_mtok_usd": 1.0,
     "output_per_mtok_usd": 8.0},
]
PRICE = {"input": 2, "cached": 1, "output": 8}  # micro-USD per token


def azure_providers() -> dict[str, Any]:
    return {PROVIDER: {"kind": "azure_openai", "credentials": {"production": "azure/production"}}}


@pytest.fixture(scope="module", params=MODES)
def stack(request: pytest.FixtureRequest, cargo_build, tmp_path_factory) -> Iterator[Stack]:
    """mock ← Envoy (shipped config + an `azure` route and cluster) → keygate with one Azure
    provider; stop() scans keygate's and Envoy's logs for every secret (harness.leaks)."""
    mode = request.param
    workdir = tmp_path_factory.mktemp(f"azure-{mode}")
    mock, mock_port = start_mock(workdir)
    keys = {n: mint_key(n) for n in ["azure", "azure-wide"]}
    consumers = [
        consumer("team-azure", PROVIDER, ["POST /openai/deployments/*/chat/completions"], keys["azure"]),
        consumer("team-azure-wide", PROVIDER, ["* /openai/**"], keys["azure-wide"]),
    ]
    kg = start_keygate(
        workdir,
        {"providers": azure_providers(), "consumers": consumers, "usage": {"pricing": PRICING}},
        {"azure/production": AZURE_SECRET},
        env={"KEYGATE_LOG": KEYGATE_LOG},
    )
    envoy_port = free_port()
    rendered = render(
        REPO_ROOT / "envoy" / f"{mode}.yaml", workdir / f"envoy-{mode}.rendered.yaml", listen_port=envoy_port,
        admin_port=free_port(), keygate_port=kg.grpc_port, upstream_port=mock_port,
    )
    config = add_provider_route(load(rendered), PROVIDER, mock_port, host=AZURE_HOST)
    envoy = start_envoy(write(config, workdir / f"envoy-{mode}.yaml", note=f"{mode}.yaml + {PROVIDER}"), workdir)
    s = Stack(mode, mock, mock_port, kg, envoy, envoy_port, keys, workdir)
    yield s
    s.stop()
    assert AZURE_SECRET in s.secrets(), "the leak scan looked for the Azure provider key"


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    mock_clear(stack.mock_port)
    return stack


def azure(s: Stack, key: str | None = None, **auth: str) -> openai.AzureOpenAI:
    """The real Azure client pointed at Envoy; `key` is the consumer key (as `api_key`, sent in
    `api-key`) unless `auth` gives `azure_ad_token` (sent as `Authorization: Bearer`)."""
    if not auth:
        auth = {"api_key": key if key is not None else s.keys["azure"].key}
    return openai.AzureOpenAI(
        azure_endpoint=s.base_url, api_version=API_VERSION, max_retries=0, timeout=10, **auth
    )


def chat(client: openai.AzureOpenAI, content: str = "hello azure", **extra: Any) -> Any:
    return client.chat.completions.create(model=DEPLOYMENT, messages=[{"role": "user", "content": content}], **extra)


def assert_swapped(seen: dict[str, Any], key: str) -> None:
    """What the provider saw: the Azure key in `api-key` only, the request routed by provider
    name to the added route (its host rewrite), and the consumer key nowhere."""
    assert seen["path"] == f"{CHAT_PATH}?api-version={API_VERSION}"
    assert header_values(seen, "api-key") == [AZURE_SECRET]
    assert header_values(seen, "authorization") == []
    assert header_values(seen, "x-api-key") == []
    assert header_values(seen, "x-keygate-provider") == [PROVIDER]
    assert header_values(seen, "host") == [AZURE_HOST]
    assert all(key not in value for _, value in seen["headers"])
    assert key not in seen["body"]


# ---------------------------------------------------------------- the harness helper itself


@pytest.mark.parametrize("mode", MODES)
def test_add_provider_route_mirrors_the_shipped_openai_route(mode: str) -> None:
    """The added route is the shipped openai route with only the header value, cluster and host
    changed, placed just before the catch-all; the cluster is the openai cluster made plain HTTP."""
    shipped = load(REPO_ROOT / "envoy" / f"{mode}.yaml")
    config = add_provider_route(shipped, PROVIDER, 12345, host=AZURE_HOST)
    assert "azure" not in yaml.safe_dump(shipped), "the input config is not modified"

    def routes(c: dict[str, Any]) -> list[dict[str, Any]]:
        hcm = c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        [vhost] = hcm["route_config"]["virtual_hosts"]
        return vhost["routes"]

    before, after = routes(shipped), routes(config)
    assert len(after) == len(before) + 1
    assert after[:-2] == before[:-1] and after[-1] == before[-1], "only one route was inserted, before the catch-all"
    assert "direct_response" in after[-1] and "headers" not in after[-1]["match"]
    [openai_route] = [r for r in before if r["match"].get("headers", [{}])[0].get("string_match") == {"exact": "openai"}]
    added = after[-2]
    assert added["match"]["headers"] == [{"name": "x-keygate-provider", "string_match": {"exact": PROVIDER}}]
    assert added["match"]["prefix"] == openai_route["match"]["prefix"]
    assert added["route"] == {**openai_route["route"], "cluster": PROVIDER, "host_rewrite_literal": AZURE_HOST}
    assert added["route"]["timeout"] == "0s" and added["route"]["idle_timeout"] == "300s"

    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == PROVIDER]
    assert cluster["type"] == "STATIC"
    assert "transport_socket" not in cluster
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 12345}}
    with pytest.raises(ValueError):
        add_provider_route(config, PROVIDER, 12345)
    with pytest.raises(ValueError):
        add_provider_route(shipped, "openai", 12345)


def docs_snippet() -> tuple[dict[str, Any], dict[str, Any]]:
    """The route and the cluster of the "Adding a provider" YAML block in docs/envoy.md."""
    section = (REPO_ROOT / "docs" / "envoy.md").read_text(encoding="utf-8").split("**Adding a provider.**", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    route, cluster = yaml.safe_load(textwrap.dedent(block))
    return route, cluster


@pytest.mark.parametrize("mode", MODES)
def test_docs_adding_a_provider_is_what_the_tests_add_and_envoy_accepts_it(mode: str, tmp_path: Path) -> None:
    """docs/envoy.md's snippet is the route add_provider_route() inserts and a copy of the shipped
    openai cluster for `<resource>.openai.azure.com` (TLS, SNI, SAN); the shipped config plus
    the snippet passes `envoy --mode validate`."""
    route, cluster = docs_snippet()
    host = "<resource>.openai.azure.com"
    shipped = load(REPO_ROOT / "envoy" / f"{mode}.yaml")
    added = add_provider_route(shipped, PROVIDER, 1, host=host)
    hcm = added["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][-2] == route
    [openai_cluster] = [c for c in shipped["static_resources"]["clusters"] if c["name"] == "openai"]
    expected = yaml.safe_load(yaml.safe_dump(openai_cluster).replace("api.openai.com", host))
    expected["name"] = expected["load_assignment"]["cluster_name"] = PROVIDER
    assert cluster == expected
    assert cluster["transport_socket"]["typed_config"]["sni"] == host

    config = copy.deepcopy(shipped)
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(len(routes) - 1, route)
    config["static_resources"]["clusters"].append(cluster)
    path = write(yaml.safe_load(yaml.safe_dump(config).replace("<resource>", "myresource")), tmp_path / "envoy.yaml")
    result = subprocess.run([str(venv_bin("envoy")), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the swap


@pytest.mark.parametrize("presented", ["api_key", "azure_ad_token", "api_key_and_authorization"])
def test_azure_sdk_chat_is_swapped_to_the_api_key_header(fresh: Stack, presented: str) -> None:
    """The consumer key presented the ways an Azure client can (`api-key`; `Authorization:
    Bearer` via azure_ad_token; both at once) reaches the provider as `api-key: <Azure key>`
    only: no `authorization`, and the consumer key in no header and not in the body."""
    key = fresh.keys["azure"].key
    if presented == "api_key":
        client, extra = azure(fresh, key), {}
    elif presented == "azure_ad_token":
        client, extra = azure(fresh, azure_ad_token=key), {}
    else:
        client, extra = azure(fresh, key), {"extra_headers": {"authorization": f"Bearer {key}"}}
    reply = chat(client, **extra)
    assert reply.model == DEPLOYMENT
    assert reply.choices[0].message.content
    [seen] = mock_requests(fresh.mock_port)
    assert_swapped(seen, key)


def test_azure_stream_works_and_is_accounted_as_openai(fresh: Stack) -> None:
    """A streamed chat through the Azure client reaches the client whole. With ext_proc keygate
    adds stream_options.include_usage (Azure speaks OpenAI's dialect), so the stream ends in a
    usage chunk, and keygate's counters for the consumer equal that usage exactly, spend at
    OpenAI's list price, nothing estimated. ext_authz never sees bodies: the stream passes
    untouched."""
    key = fresh.keys["azure"].key
    labels = {"consumer": "team-azure", "provider": PROVIDER}
    before = fresh.keygate.metrics()
    chunks = list(chat(azure(fresh, key), "stream me five please", stream=True, max_tokens=5,
                       extra_headers={"x-mock-cached-tokens": "2"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5
    [seen] = mock_requests(fresh.mock_port)
    assert_swapped(seen, key)
    if fresh.mode == "ext_authz":
        assert '"include_usage"' not in seen["body"], "ext_authz never rewrites the body"
        assert all(c.usage is None for c in chunks)
        return
    assert '"include_usage":true' in seen["body"].replace(" ", ""), "keygate added include_usage for Azure"
    usage = chunks[-1].usage
    assert usage is not None, "the stream ends with a usage chunk"
    assert usage.completion_tokens == 5 and usage.prompt_tokens_details.cached_tokens == 2
    # keygate charges the exchange when the ext_proc stream closes, just after the response
    # ends: poll until the input tokens are counted, then read everything from that snapshot.
    deadline = time.monotonic() + 5
    while True:
        after = fresh.keygate.metrics()
        counted = counter(after, "keygate_tokens_total", **labels, kind="input") - counter(
            before, "keygate_tokens_total", **labels, kind="input")
        if counted == usage.prompt_tokens or time.monotonic() > deadline:
            break
        time.sleep(0.02)

    def delta(name: str, **more: str) -> float:
        return counter(after, name, **labels, **more) - counter(before, name, **labels, **more)

    assert delta("keygate_tokens_total", kind="input") == usage.prompt_tokens
    assert delta("keygate_tokens_total", kind="output") == usage.completion_tokens
    assert delta("keygate_tokens_total", kind="cached") == 2
    assert delta("keygate_tokens_total", kind="reasoning") == 0
    assert delta("keygate_usage_estimated_total") == 0
    assert delta("keygate_responses_total", status_class="2xx") == 1
    micro = (usage.prompt_tokens - 2) * PRICE["input"] + 2 * PRICE["cached"] + usage.completion_tokens * PRICE["output"]
    assert delta("keygate_spend_usd_total", model=DEPLOYMENT) == pytest.approx(micro / 1e6, abs=1e-9)


# ---------------------------------------------------------------- what stays closed


@pytest.mark.parametrize("who", ["azure", "azure-wide"])
@pytest.mark.parametrize("endpoint", ["files", "fine_tuning"])
def test_azure_sensitive_endpoints_are_403(fresh: Stack, who: str, endpoint: str) -> None:
    """/openai/files and /openai/fine_tuning/jobs are refused with a 403 the SDK raises as
    PermissionDeniedError carrying keygate's message, both for a chat-only consumer and for one
    whose scope is `* /openai/**` (a wildcard never opens a sensitive endpoint); nothing is
    forwarded."""
    client = azure(fresh, fresh.keys[who].key)
    call = {"files": lambda: client.files.list(), "fine_tuning": lambda: client.fine_tuning.jobs.list()}[endpoint]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        call()
    assert caught.value.request.url.path == {"files": "/openai/files", "fine_tuning": "/openai/fine_tuning/jobs"}[endpoint]
    assert caught.value.body["message"].startswith("keygate:")
    if who == "azure-wide":
        assert "named explicitly" in str(caught.value)
    assert mock_requests(fresh.mock_port) == []


def test_azure_wide_scope_still_opens_chat_and_the_narrow_scope_is_chat_only(fresh: Stack) -> None:
    """Controls for the 403s above: the `* /openai/**` consumer can chat, and the chat-only
    consumer cannot reach the deployment's embeddings."""
    reply = chat(azure(fresh, fresh.keys["azure-wide"].key))
    assert reply.choices[0].message.content
    [seen] = mock_requests(fresh.mock_port)
    assert_swapped(seen, fresh.keys["azure-wide"].key)
    mock_clear(fresh.mock_port)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        azure(fresh).embeddings.create(model=DEPLOYMENT, input="x")
    assert caught.value.body["message"].startswith("keygate:")
    assert mock_requests(fresh.mock_port) == []


# ---------------------------------------------------------------- bad keys


@pytest.mark.parametrize("which,needle", [("typo", "checksum"), ("unknown", "unknown API key"),
                                          ("malformed", "malformed API key")])
def test_azure_bad_consumer_key_is_401(fresh: Stack, which: str, needle: str) -> None:
    """A bad consumer key in `api-key` is an AuthenticationError with keygate's message, and
    nothing is forwarded."""
    real = fresh.keys["azure"].key
    key = {
        "typo": lambda: real[:-1] + ("A" if real[-1] != "A" else "B"),
        "unknown": lambda: mint_key("nobody").key,
        "malformed": lambda: AZURE_SECRET,  # the provider key itself is not a consumer key
    }[which]()
    leaks.register(key)
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(azure(fresh, key))
    assert caught.value.body["message"].startswith("keygate:")
    assert needle in str(caught.value)
    assert key not in str(caught.value.body)
    assert mock_requests(fresh.mock_port) == []

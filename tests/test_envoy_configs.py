"""The shipped Envoy configs: they validate, they fail closed, and they say so in YAML.

These tests need only the Envoy binary from the virtualenv, not keygate.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from harness import free_port, render, start_envoy, venv_bin
from harness.envoy_config import KEYGATE_CLUSTER, load
from harness.paths import EXT_AUTHZ_CONFIG, EXT_PROC_CONFIG

CONFIGS = {"ext_proc": EXT_PROC_CONFIG, "ext_authz": EXT_AUTHZ_CONFIG}
FILTER_NAMES = {"ext_proc": "envoy.filters.http.ext_proc", "ext_authz": "envoy.filters.http.ext_authz"}
PROVIDERS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "cohere": "api.cohere.com"}
DEFAULT_CIRCUIT_BREAKER_LIMIT = 1024
SECRET_HEADERS = ("authorization", "x-api-key", "api-key")


# -- helpers ---------------------------------------------------------------


def envoy_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """Run `envoy --mode validate -c path`."""
    return subprocess.run(
        [str(venv_bin("envoy")), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    """The HttpConnectionManager typed_config of the single listener."""
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (network_filter,) = chain["filters"]
    assert network_filter["name"] == "envoy.filters.network.http_connection_manager"
    return network_filter["typed_config"]


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    """typed_config of the HTTP filter called `name`."""
    for f in hcm(config)["http_filters"]:
        if f["name"] == name:
            return f["typed_config"]
    raise AssertionError(f"no http filter {name}")


def cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The cluster called `name`."""
    for c in config["static_resources"]["clusters"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no cluster {name}")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET url; return (status, body) even for error statuses."""
    status, _, body = get_full(url, headers)
    return status, body


def get_full(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET url; return (status, lower-cased response headers, body) even for error statuses."""
    request = urllib.request.Request(url, headers=headers or {}, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return int(err.code), _lower(err.headers.items()), err.read()


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def render_for_test(kind: str, workdir: Path, keygate_port: int | None = None) -> tuple[Path, int]:
    """Render `kind` for a live test; return (config path, listen port).

    keygate defaults to a free port nothing listens on ("keygate is down"); the
    upstream is always such a port, so a request that leaked through would fail
    differently (no_healthy_upstream / connection failure), not with keygate's status.
    """
    listen_port = free_port()
    out = render(
        CONFIGS[kind],
        workdir / f"{kind}.rendered.yaml",
        listen_port=listen_port,
        admin_port=free_port(),
        keygate_port=keygate_port if keygate_port is not None else free_port(),
        upstream_port=free_port(),
    )
    return out, listen_port


@pytest.fixture
def wedged_keygate() -> Iterator[int]:
    """A TCP listener that accepts connections and never says a word; yields its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        server.close()


# -- validation --------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_shipped_config_validates(kind: str) -> None:
    result = envoy_validate(CONFIGS[kind])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_rendered_config_validates(kind: str, workdir: Path) -> None:
    out, _ = render_for_test(kind, workdir)
    result = envoy_validate(out)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_rendered_config_with_uds_validates(kind: str, workdir: Path) -> None:
    out = render(
        CONFIGS[kind],
        workdir / f"{kind}.uds.yaml",
        listen_port=free_port(),
        admin_port=free_port(),
        keygate_uds=workdir / "keygate.sock",
        upstream_port=free_port(),
    )
    config = load(out)
    address = cluster(config, KEYGATE_CLUSTER)["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"] == {"pipe": {"path": str(workdir / "keygate.sock")}}
    result = envoy_validate(out)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_render_points_providers_at_mock(kind: str, workdir: Path) -> None:
    listen, admin, keygate, upstream = free_port(), free_port(), free_port(), free_port()
    out = render(
        CONFIGS[kind], workdir / "r.yaml",
        listen_port=listen, admin_port=admin, keygate_port=keygate, upstream_port=upstream,
    )
    config = load(out)
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": admin}
    assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == listen
    kg = cluster(config, KEYGATE_CLUSTER)
    assert kg["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": keygate}
    }
    for name in PROVIDERS:
        c = cluster(config, name)
        assert c["type"] == "STATIC"
        assert "transport_socket" not in c
        endpoint = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": upstream}
    # Host rewrites are untouched, so the mock sees the real provider host names.
    assert load(CONFIGS[kind])["static_resources"]["listeners"][0]["filter_chains"] == (
        config["static_resources"]["listeners"][0]["filter_chains"]
    )


def test_render_requires_exactly_one_keygate_address(workdir: Path) -> None:
    with pytest.raises(ValueError):
        render(EXT_PROC_CONFIG, workdir / "x.yaml", listen_port=1, admin_port=2, upstream_port=3)
    with pytest.raises(ValueError):
        render(
            EXT_PROC_CONFIG, workdir / "x.yaml", listen_port=1, admin_port=2, upstream_port=3,
            keygate_port=4, keygate_uds="/tmp/k.sock",
        )


# -- fail-closed and hygiene properties, read from the YAML --------------------


def test_ext_proc_filter_fails_closed() -> None:
    f = http_filter(load(EXT_PROC_CONFIG), FILTER_NAMES["ext_proc"])
    assert f["failure_mode_allow"] is False
    assert f["message_timeout"] == "0.5s"
    assert f["grpc_service"]["envoy_grpc"]["cluster_name"] == KEYGATE_CLUSTER
    # The responses go to the observer filter; keygate parks each exchange for it.
    assert f["grpc_service"]["initial_metadata"] == [{"key": "x-keygate-responses", "value": "observed"}]
    assert f["processing_mode"] == {
        "request_header_mode": "SEND",
        "response_header_mode": "SKIP",
        "request_body_mode": "NONE",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    # The client address and the verified client certificate's SPIFFE ID (workload identity).
    assert f["request_attributes"] == ["source.address", "connection.uri_san_peer_certificate"]
    # keygate's decision and the observer's ticket are accepted as dynamic metadata in keygate's
    # own two namespaces, and only there.
    assert f["metadata_options"] == {"receiving_namespaces": {"untyped": ["keygate", "keygate.handover"]}}
    # DEFAULT honours keygate's clear_route_cache, so the provider route is re-picked.
    assert f.get("route_cache_action", "DEFAULT") == "DEFAULT"
    assert not f.get("disable_clear_route_cache", False)
    # Overrides are allowed, but only the one keygate sends: the request body, buffered.
    assert f["allow_mode_override"] is True
    assert [(m["response_header_mode"], m["request_body_mode"], m["response_body_mode"])
            for m in f["allowed_override_modes"]] == [("SKIP", "BUFFERED", "NONE")]


def test_ext_proc_observer_only_reads_responses() -> None:
    """The second filter sends response headers and streamed bodies without Envoy waiting
    (observability_mode), with keygate's metadata (the ticket), and never blocks a response.
    It is skipped on keygate's own denials (`x-keygate-denied: true`): they have nothing to
    observe."""
    wrapped = http_filter(load(EXT_PROC_CONFIG), "keygate.responses")
    assert wrapped["@type"].endswith("envoy.extensions.common.matching.v3.ExtensionWithMatcher")
    tree = wrapped["xds_matcher"]["matcher_tree"]
    assert tree["input"]["typed_config"]["header_name"] == "x-keygate-denied"
    assert tree["input"]["typed_config"]["@type"].endswith("HttpResponseHeaderMatchInput")
    (action,) = [m["action"]["typed_config"]["@type"] for m in tree["exact_match_map"]["map"].values()]
    assert list(tree["exact_match_map"]["map"]) == ["true"] and action.endswith("SkipFilter")
    assert "on_no_match" not in wrapped["xds_matcher"]
    f = wrapped["extension_config"]["typed_config"]
    assert f["observability_mode"] is True
    assert f["failure_mode_allow"] is True
    assert f["grpc_service"]["envoy_grpc"]["cluster_name"] == KEYGATE_CLUSTER
    assert f["processing_mode"] == {
        "request_header_mode": "SKIP",
        "response_header_mode": "SEND",
        "request_body_mode": "NONE",
        # Never BUFFERED: observability_mode sends only STREAMED bodies.
        "response_body_mode": "STREAMED",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    assert f["metadata_options"] == {"forwarding_namespaces": {"untyped": ["keygate.handover"]}}
    assert not f.get("allow_mode_override", False)


def test_ext_authz_filter_fails_closed() -> None:
    f = http_filter(load(EXT_AUTHZ_CONFIG), FILTER_NAMES["ext_authz"])
    assert f["failure_mode_allow"] is False
    assert f["status_on_error"] == {"code": "ServiceUnavailable"}  # 503, not the default 403
    assert f["transport_api_version"] == "V3"
    assert f["encode_raw_headers"] is True
    assert f["clear_route_cache"] is True
    # Bodies are sent (so keygate measures every one, chunked included), whole or not at all.
    assert f["with_request_body"] == {"max_request_bytes": 1048576, "allow_partial_message": False, "pack_as_bytes": True}
    assert f["grpc_service"]["envoy_grpc"]["cluster_name"] == KEYGATE_CLUSTER


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_keygate_cluster(kind: str) -> None:
    c = cluster(load(CONFIGS[kind]), KEYGATE_CLUSTER)
    assert c["type"] == "STATIC"
    assert c["connect_timeout"] == "0.25s"
    opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    (thresholds,) = c["circuit_breakers"]["thresholds"]
    for key in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        assert thresholds[key] > DEFAULT_CIRCUIT_BREAKER_LIMIT, key


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_hcm_path_hygiene_and_timeouts(kind: str) -> None:
    h = hcm(load(CONFIGS[kind]))
    assert h["normalize_path"] is True
    assert h["merge_slashes"] is True
    assert h["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert h["use_remote_address"] is True
    # The fail-closed filter runs before the router.
    names = [f["name"] for f in h["http_filters"]]
    observer = ["keygate.responses"] if kind == "ext_proc" else []
    assert names == [FILTER_NAMES[kind], *observer, "envoy.filters.http.router"]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_access_log_never_logs_secret_headers(kind: str) -> None:
    (log,) = hcm(load(CONFIGS[kind]))["access_log"]
    fmt = json.dumps(log["typed_config"]["log_format"]).lower()
    for header in SECRET_HEADERS:
        assert f"({header})" not in fmt and f"({header}:" not in fmt, header
    assert "%req(:path)%" not in fmt  # would include the query string


# Where each edge's dynamic metadata lands: ext_proc names the namespace (keygate), ext_authz
# files an authorization server's metadata under its own filter name.
METADATA_NAMESPACE = {"ext_proc": "keygate", "ext_authz": "envoy.filters.http.ext_authz"}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_access_log_carries_keygates_decision(kind: str) -> None:
    """The runbooks send operators to this log: each line has the client address and keygate's
    decision from its dynamic metadata (with held responses, ext_proc adds tokens and USD after
    the response; observed, as shipped, those stay null)."""
    (log,) = hcm(load(CONFIGS[kind]))["access_log"]
    fields = log["typed_config"]["log_format"]["json_format"]
    assert fields["client_address"] == "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    decided = ["consumer", "team", "provider", "model", "key_id", "identity", "outcome"]
    if kind == "ext_proc":
        decided += ["input_tokens", "output_tokens", "tokens", "usd"]
    for name in decided:
        assert fields[name] == f"%DYNAMIC_METADATA({METADATA_NAMESPACE[kind]}:{name})%", name
    # Keep the client's own x-forwarded-client-cert away from keygate unless configured.
    assert hcm(load(CONFIGS[kind]))["forward_client_cert_details"] == "SANITIZE"


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_routes(kind: str) -> None:
    (vhost,) = hcm(load(CONFIGS[kind]))["route_config"]["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    *provider_routes, catch_all = vhost["routes"]
    seen = {}
    for r in provider_routes:
        (header,) = r["match"]["headers"]
        assert r["match"]["prefix"] == "/"
        assert header["name"] == "x-keygate-provider"
        seen[header["string_match"]["exact"]] = (r["route"]["cluster"], r["route"]["host_rewrite_literal"])
        assert r["route"]["idle_timeout"]  # long streams are bounded by inactivity
    assert seen == {name: (name, host) for name, host in PROVIDERS.items()}
    assert catch_all["match"] == {"prefix": "/"}
    assert catch_all["direct_response"]["status"] == 502
    body = json.loads(catch_all["direct_response"]["body"]["inline_string"])
    assert body["error"]["code"] == "no_route"


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_provider_clusters_use_verified_tls(kind: str) -> None:
    """Each provider cluster speaks TLS with SNI, verifies the chain against the system CAs and
    pins the certificate's DNS SAN to the provider host (a valid certificate for another
    name is refused), and points at that host on 443."""
    config = load(CONFIGS[kind])
    for name, host in PROVIDERS.items():
        c = cluster(config, name)
        assert c["type"] in ("LOGICAL_DNS", "STRICT_DNS")
        socket = c["transport_socket"]
        assert socket["name"] == "envoy.transport_sockets.tls"
        tls = socket["typed_config"]
        assert tls["@type"] == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
        assert tls["sni"] == host
        validation = tls["common_tls_context"]["validation_context"]
        assert validation["trusted_ca"]["filename"] == "/etc/ssl/certs/ca-certificates.crt"
        assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": host}}], name
        assert validation.get("trust_chain_verification", "VERIFY_TRUST_CHAIN") == "VERIFY_TRUST_CHAIN"
        endpoint = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"] == {"address": host, "port_value": 443}


# -- live: keygate down means no request gets through ----------------------------


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_fails_closed_when_keygate_is_down(kind: str, workdir: Path) -> None:
    """docs/envoy.md: "keygate down → 503". Both configs set `status_on_error` to 503 (Envoy's default
    would be 500 for ext_proc and 403 for ext_authz), and Envoy answers with an empty body of
    its own: nothing from an upstream, not the catch-all route's JSON."""
    config_path, listen_port = render_for_test(kind, workdir)
    with start_envoy(config_path, workdir) as envoy:
        for headers in ({}, {"x-keygate-provider": "openai", "authorization": "Bearer sk-test"}):
            status, response_headers, body = get_full(f"http://127.0.0.1:{listen_port}/v1/models", headers)
            assert (status, body) == (503, b""), (status, body, envoy.log_tail())
            assert response_headers["content-length"] == "0"
        # Escaped slashes are refused before keygate is asked about the request; Envoy's own
        # 400 passes ext_proc's response observer, which never blocks a response.
        status, _ = get(f"http://127.0.0.1:{listen_port}/v1/a%2Fb")
        assert status == 400
        assert get(f"http://127.0.0.1:{listen_port}/v1/models?key=sk-query-secret") == (503, b"")
    log = envoy.log_text()
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(access) == 4, log
    assert {a["path"] for a in access} >= {"/v1/models"}
    # Nothing was forwarded. (upstream_cluster is not proof: it reflects the route
    # picked from the *client's* headers before the filter ran.)
    assert all(a["upstream_host"] is None for a in access), access
    assert "sk-test" not in log  # the access log never carries the key...
    assert "sk-query-secret" not in log  # ...nor the query string


@pytest.mark.parametrize(("kind", "expected"), [("ext_proc", 504), ("ext_authz", 503)])
def test_fails_closed_fast_when_keygate_hangs(kind: str, expected: int, wedged_keygate: int, workdir: Path) -> None:
    config_path, listen_port = render_for_test(kind, workdir, keygate_port=wedged_keygate)
    with start_envoy(config_path, workdir) as envoy:
        started = time.monotonic()
        status, body = get(f"http://127.0.0.1:{listen_port}/v1/models", {"x-keygate-provider": "openai"})
        elapsed = time.monotonic() - started
        assert status == expected, (status, body, envoy.log_tail())
        assert elapsed < 3.0, elapsed  # the 0.5s message/gRPC timeout, not a client timeout


@pytest.fixture
def echo_upstream() -> Iterator[tuple[int, list[dict[str, str]]]]:
    """A plain-HTTP upstream recording each request's path and headers; yields (port, seen)."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            body = b'{"ok":true}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_routes_live_without_filter(kind: str, workdir: Path, echo_upstream: tuple[int, list[dict[str, str]]]) -> None:
    """The shipped routes (auth filter stripped): provider header picks cluster + Host; else 502 JSON."""
    upstream_port, seen = echo_upstream
    listen_port = free_port()
    out = render(
        CONFIGS[kind], workdir / "routes.yaml",
        listen_port=listen_port, admin_port=free_port(), keygate_port=free_port(), upstream_port=upstream_port,
    )
    config = load(out)
    h = hcm(config)
    h["http_filters"] = [f for f in h["http_filters"] if f["name"] != FILTER_NAMES[kind]]
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    with start_envoy(out, workdir) as envoy:
        base = f"http://127.0.0.1:{listen_port}"
        for provider, host in PROVIDERS.items():
            status, body = get(f"{base}/v1//models", {"x-keygate-provider": provider})
            assert status == 200, (status, body, envoy.log_tail())
            assert seen[-1]["host"] == host
            assert seen[-1]["path"] == "/v1/models"  # merge_slashes
        for headers in ({"x-keygate-provider": "mistral"}, {}):
            status, response_headers, body = get_full(f"{base}/v1/models", headers)
            assert status == 502
            assert response_headers["content-type"] == "application/json"
            assert json.loads(body)["error"] == {
                "message": "keygate allowed the request but no upstream route matches its provider",
                "type": "keygate_error",
                "code": "no_route",
            }
    assert len(seen) == len(PROVIDERS)


"""Render the shipped Envoy configs for tests and start Envoy on them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .paths import venv_bin
from .ports import HOST
from .procs import Proc

KEYGATE_CLUSTER = "keygate"
ENVOY_READY_TIMEOUT = 20.0

Config = dict[str, Any]


def load(path: Path) -> Config:
    """Parse an Envoy YAML bootstrap into plain dicts/lists."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an Envoy bootstrap mapping")
    return data


def render(
    src: Path,
    out: Path,
    *,
    listen_port: int,
    admin_port: int,
    keygate_port: int | None = None,
    keygate_uds: str | Path | None = None,
    upstream_port: int,
) -> Path:
    """Rewrite a shipped Envoy config for a test and write it to `out`; return `out`.

    This is the documented way for tests to point the shipped configs at the mock
    provider. Starting from `src` (envoy/ext_proc.yaml or envoy/ext_authz.yaml),
    the rendered copy differs only in where things are:

    * every listener binds 127.0.0.1:`listen_port`, the admin interface
      127.0.0.1:`admin_port`;
    * the `keygate` cluster's single endpoint becomes 127.0.0.1:`keygate_port`,
      or the Unix socket `keygate_uds` (a `pipe: {path: ...}` address) when given;
    * every other cluster (the providers) becomes a STATIC cluster at
      127.0.0.1:`upstream_port` with its TLS transport_socket and DNS settings
      removed, i.e. plain HTTP to the mock provider.

    Filters, routes, host rewrites, timeouts and circuit breakers are untouched, so
    tests exercise the configs exactly as shipped.
    """
    if (keygate_port is None) == (keygate_uds is None):
        raise ValueError("pass exactly one of keygate_port / keygate_uds")
    config = rewrite(
        load(Path(src)),
        listen_port=listen_port,
        admin_port=admin_port,
        keygate_port=keygate_port,
        keygate_uds=keygate_uds,
        upstream_port=upstream_port,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Rendered by tests/harness/envoy_config.py from {Path(src).name}; do not edit.\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return out


def rewrite(
    config: Config,
    *,
    listen_port: int,
    admin_port: int,
    keygate_port: int | None,
    keygate_uds: str | Path | None,
    upstream_port: int,
) -> Config:
    """The in-memory transformation behind render(); returns a new dict."""
    config = copy.deepcopy(config)
    config.setdefault("admin", {})["address"] = _socket_address(admin_port)
    resources = config.get("static_resources", {})
    for listener in resources.get("listeners", []):
        listener["address"] = _socket_address(listen_port)
    clusters = resources.get("clusters", [])
    if not any(c.get("name") == KEYGATE_CLUSTER for c in clusters):
        raise ValueError(f"config has no '{KEYGATE_CLUSTER}' cluster")
    for cluster in clusters:
        if cluster.get("name") == KEYGATE_CLUSTER:
            keygate_addr = (
                {"pipe": {"path": str(keygate_uds)}}
                if keygate_uds is not None
                else _socket_address(int(keygate_port))  # type: ignore[arg-type]
            )
            _set_single_endpoint(cluster, keygate_addr)
        else:
            _make_plain_static(cluster, upstream_port)
    return config


OBSERVER_FILTER = "keygate.responses"
DECIDING_FILTER = "envoy.filters.http.ext_proc"
HELD_OVERRIDES = [
    {"response_header_mode": "SEND", "request_body_mode": req, "response_body_mode": resp,
     "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    for req, resp in [("BUFFERED", "BUFFERED"), ("BUFFERED", "STREAMED"), ("BUFFERED", "NONE"),
                      ("NONE", "BUFFERED"), ("NONE", "NONE")]
]


def hold_responses(config: Config) -> Config:
    """The shipped ext_proc config with held responses, as docs/envoy.md "One Envoy, several
    keygates" describes: no observer filter, and the deciding filter asks for the response
    headers and streamed body itself (Envoy waits for keygate on each). Needed when one Envoy
    reaches several keygates, since the observer's stream may reach another one. Returns a
    new dict."""
    config = copy.deepcopy(config)
    held = 0
    for listener in config["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for net in chain.get("filters", []):
                filters = net.get("typed_config", {}).get("http_filters")
                if filters is None:
                    continue
                filters[:] = [f for f in filters if f.get("name") != OBSERVER_FILTER]
                for f in filters:
                    if f.get("name") != DECIDING_FILTER:
                        continue
                    tc = f["typed_config"]
                    tc["grpc_service"].pop("initial_metadata", None)
                    tc["processing_mode"].update(response_header_mode="SEND", response_body_mode="STREAMED")
                    tc["allowed_override_modes"] = copy.deepcopy(HELD_OVERRIDES)
                    held += 1
    if held == 0:
        raise ValueError("config has no ext_proc filter to hold responses in")
    return config


PROVIDER_HEADER = "x-keygate-provider"
TEMPLATE_PROVIDER = "openai"


def add_provider_route(config: Config, name: str, upstream_port: int, *, host: str | None = None) -> Config:
    """Add a provider to a rendered config the way docs/envoy.md "Adding a provider" documents; return
    a new dict.

    In every virtual host that routes the shipped `openai` provider, a copy of the openai route
    is inserted just before the catch-all (the first route whose match has no headers): it
    matches `x-keygate-provider: <name>` (keygate sets that header to the provider's *name* in
    its config) and sends to the cluster `<name>`, with every other route option (prefix,
    timeout, idle_timeout, ...) as shipped for openai and `host_rewrite_literal` set to `host`
    (default `<name>.invalid`). The cluster `<name>` is a copy of the openai cluster made a
    plain-HTTP STATIC cluster at 127.0.0.1:`upstream_port`, exactly as render() does with the
    shipped providers. A provider that already has a route or cluster is an error.
    """
    config = copy.deepcopy(config)
    clusters = config.get("static_resources", {}).get("clusters", [])
    if any(c.get("name") == name for c in clusters):
        raise ValueError(f"config already has a cluster named {name!r}")
    template_cluster = next((c for c in clusters if c.get("name") == TEMPLATE_PROVIDER), None)
    if template_cluster is None:
        raise ValueError(f"config has no '{TEMPLATE_PROVIDER}' cluster to copy")
    added = 0
    for vhost in _virtual_hosts(config):
        routes = vhost.get("routes", [])
        if any(_provider_of(r) == name for r in routes):
            raise ValueError(f"virtual host {vhost.get('name')!r} already routes provider {name!r}")
        templates = [r for r in routes if _provider_of(r) == TEMPLATE_PROVIDER]
        if not templates:
            continue
        catch_all = next((i for i, r in enumerate(routes) if not r.get("match", {}).get("headers")), None)
        if catch_all is None:
            raise ValueError(f"virtual host {vhost.get('name')!r} has no catch-all route")
        route = copy.deepcopy(templates[0])
        [header] = [h for h in route["match"]["headers"] if h.get("name") == PROVIDER_HEADER]
        header["string_match"] = {"exact": name}
        route["route"]["cluster"] = name
        route["route"]["host_rewrite_literal"] = host if host is not None else f"{name}.invalid"
        routes.insert(catch_all, route)
        added += 1
    if not added:
        raise ValueError(f"no virtual host routes '{TEMPLATE_PROVIDER}'; nothing to copy")
    cluster = copy.deepcopy(template_cluster)
    cluster["name"] = name
    _make_plain_static(cluster, upstream_port)
    clusters.append(cluster)
    return config


def write(config: Config, out: Path, note: str = "") -> Path:
    """Write a (rendered, possibly extended) config to `out` for start_envoy(); return `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by tests/harness/envoy_config.py" + (f" ({note})" if note else "") + "; do not edit.\n"
    out.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


def _virtual_hosts(config: Config) -> list[Config]:
    """Every virtual host of every HTTP connection manager in the config's listeners."""
    found = []
    for listener in config.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                route_config = f.get("typed_config", {}).get("route_config", {})
                found.extend(route_config.get("virtual_hosts", []))
    return found


def _provider_of(route: Config) -> str | None:
    """The x-keygate-provider value a route matches exactly, if any."""
    for h in route.get("match", {}).get("headers", []) or []:
        if h.get("name") == PROVIDER_HEADER:
            return h.get("string_match", {}).get("exact")
    return None


def listener_port(config: Config) -> int:
    """Port of the first listener in a (rendered) config."""
    return int(config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"])


def admin_port_of(config: Config) -> int:
    """Port of the admin interface in a (rendered) config."""
    return int(config["admin"]["address"]["socket_address"]["port_value"])


def start_envoy(
    config_path: Path,
    workdir: Path,
    base_id: int | None = None,
    *,
    concurrency: int = 2,
    log_level: str = "info",
    ready_timeout: float = ENVOY_READY_TIMEOUT,
) -> Proc:
    """Start Envoy on `config_path` and wait until admin /ready answers 200.

    Envoy keeps hot-restart state (shared memory, domain sockets) keyed by a "base
    id"; two Envoys with the same id on one host collide. With `base_id=None` the
    server picks a free one itself (`--use-dynamic-base-id`, written to
    <workdir>/envoy.N.base-id), which is safe under pytest-xdist; pass an int to pin it
    (`--base-id N`). The admin port is read from the config. The Proc's log holds
    Envoy's own log and the stdout access log.
    """
    config_path = Path(config_path)
    admin_port = admin_port_of(load(config_path))
    cmd: list[str] = [str(venv_bin("envoy")), "-c", str(config_path), "--log-level", log_level]
    cmd += ["--concurrency", str(concurrency)]
    # Access log lines reach the log file within 100 ms instead of Envoy's default 10 s.
    cmd += ["--file-flush-interval-msec", "100"]
    if base_id is None:
        cmd += ["--use-dynamic-base-id", "--base-id-path", str(_base_id_path(Path(workdir)))]
    else:
        cmd += ["--base-id", str(base_id)]
    proc = Proc(cmd, workdir, name="envoy")
    try:
        proc.wait_http(f"http://{HOST}:{admin_port}/ready", timeout=ready_timeout, expect_status=200)
    except BaseException:
        proc.stop()
        raise
    return proc


def _socket_address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": HOST, "port_value": int(port)}}


def _set_single_endpoint(cluster: Config, address: dict[str, Any]) -> None:
    name = cluster["name"]
    cluster["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
    }


def _make_plain_static(cluster: Config, port: int) -> None:
    cluster["type"] = "STATIC"
    for key in ("transport_socket", "transport_socket_matches", "dns_lookup_family", "dns_refresh_rate",
                "respect_dns_ttl", "typed_dns_resolver_config", "upstream_http_protocol_options"):
        cluster.pop(key, None)
    _set_single_endpoint(cluster, _socket_address(port))


def _base_id_path(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    n = 1
    path = workdir / "envoy.base-id"
    while path.exists():
        n += 1
        path = workdir / f"envoy.{n}.base-id"
    return path

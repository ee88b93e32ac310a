"""keygate's gRPC listener with mutual TLS (`listeners.grpc_tls`), for deployments where Envoy
reaches keygate over a network: every allowed answer carries a provider key, so only a caller
with a client certificate from the configured CA may get one. Envoy with its certificate is
served; Envoy without one, and plain-text callers, get nothing from keygate, and the shipped
fail-closed settings turn that into a 503 with nothing forwarded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from harness.envoy_config import render, start_envoy
from harness.mock import mock_clear, mock_requests
from harness.paths import REPO_ROOT
from harness.ports import free_port
from harness.stack import Stack, start_stack
from harness.tls import Authority


def tls_cluster(config_path: Path, ca: Path, client: tuple[Path, Path] | None) -> None:
    """Give the rendered config's keygate cluster an upstream TLS context (SAN pinned), with
    `client` as Envoy's certificate when given."""
    config = yaml.safe_load(config_path.read_text())
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "keygate")
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": str(ca)},
            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "keygate.local"}}],
        },
    }
    if client:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": str(client[0])}, "private_key": {"filename": str(client[1])}}
        ]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "keygate.local",
            "common_tls_context": common,
        },
    }
    config_path.write_text(yaml.safe_dump(config))


def chat_status(port: int, key: str) -> int:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=10)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        return 200
    except openai.APIStatusError as e:
        return e.status_code


@pytest.mark.parametrize("mode", ["ext_authz", "ext_proc"])
def test_only_envoy_with_a_client_certificate_is_answered(cargo_build, workdir: Path, mode: str) -> None:
    pki = Authority(workdir / "pki", "keygate-ca")
    server = pki.issue("keygate", dns=["keygate.local"], ips=["127.0.0.1"])
    envoy_cert = pki.issue("envoy", dns=[], ips=[], client=True)
    tls = {"cert_file": str(server.cert), "key_file": str(server.key), "client_ca_file": str(pki.pem.cert)}
    s: Stack = start_stack(workdir, mode, {"listeners": {"grpc_tls": tls}})
    extra_envoys = []
    try:
        key = s.keys["openai"].key
        mock_clear(s.mock_port)
        assert chat_status(s.envoy_port, key) == 503, "plain-text gRPC to a TLS listener gets nothing"

        def envoy_with(name: str, client: tuple[Path, Path] | None) -> int:
            port = free_port()
            config = render(REPO_ROOT / "envoy" / f"{mode}.yaml", workdir / f"envoy-{name}.yaml", listen_port=port,
                            admin_port=free_port(), keygate_port=s.keygate.grpc_port, upstream_port=s.mock_port)
            tls_cluster(config, pki.pem.cert, client)
            (workdir / name).mkdir()
            extra_envoys.append(start_envoy(config, workdir / name))
            return port

        without = envoy_with("no-cert", None)
        assert chat_status(without, key) == 503, "TLS without Envoy's certificate is refused"
        assert mock_requests(s.mock_port) == [], "nothing reached the provider"

        with_cert = envoy_with("cert", (envoy_cert.cert, envoy_cert.key))
        assert chat_status(with_cert, key) == 200
        assert len(mock_requests(s.mock_port)) == 1
    finally:
        for envoy in extra_envoys:
            envoy.stop()
        s.stop()


def test_keygate_check_names_a_missing_grpc_tls_file_and_warns_about_an_exposed_port(cargo_build, tmp_path: Path) -> None:
    import subprocess

    from harness.keygate import keygate_bin

    (tmp_path / "secrets.yaml").write_text("openai/production: {api_key: sk-check-0001}\n")
    base = {
        "credentials": {"source": "file", "path": "secrets.yaml"},
        "providers": {"openai": {"kind": "openai", "credentials": {"production": "openai/production"}}},
    }

    def check(listeners: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "keygate.yaml"
        config.write_text(yaml.safe_dump({**base, "listeners": listeners}))
        return subprocess.run([str(keygate_bin()), "check", "--config", str(config)], capture_output=True, text=True, timeout=30)

    missing = check({"grpc_tls": {"cert_file": "nope.crt", "key_file": "nope.key", "client_ca_file": "ca.crt"}})
    assert missing.returncode == 1
    assert "listeners.grpc_tls.cert_file" in missing.stderr and "nope.crt" in missing.stderr

    exposed = check({"grpc": "0.0.0.0:50051"})
    assert exposed.returncode == 0, exposed.stderr
    assert "warning: listeners.grpc 0.0.0.0:50051 is reachable beyond loopback without listeners.grpc_tls" in exposed.stdout

"""The admin gRPC API over TLS and mutual TLS (`admin.tls`), driven by the keygate CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import keygate_bin, leaks
from harness.keygate import Keygate, mint_key, start_keygate
from harness.ports import free_port
from harness.stack import consumer, providers
from harness.tls import Authority

ADMIN_TOKEN = "admin-token-tls-tests-93ab"

# When each test ends, keygate's log is scanned for every registered secret (the admin token,
# the provider keys, the consumer keys: conftest.py `leak_scan`); CLI output is checked in place.
pytestmark = pytest.mark.usefixtures("leak_scan")


def start(workdir: Path, tls: dict[str, str]) -> Keygate:
    leaks.register(ADMIN_TOKEN)
    key = mint_key("team-a")
    config = {
        "providers": providers(),
        "consumers": [consumer("team-a", "openai", ["POST /v1/chat/completions"], key)],
        "admin": {"listen": f"127.0.0.1:{free_port()}", "state_file": str(workdir / "state.yaml"), "tls": tls},
    }
    return start_keygate(workdir, config, {"openai/production": "sk-tls-test", "anthropic/production": "sk-ant-tls"},
                         env={"KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN})


def cli(kg: Keygate, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYGATE_ADMIN_TOKEN": ADMIN_TOKEN, "USER": "oncall"}
    out = subprocess.run([str(keygate_bin()), *args, "--targets", kg.config["admin"]["listen"]],
                         capture_output=True, text=True, timeout=30, env=env)
    leaks.assert_absent(out.stdout + out.stderr, f"the output of keygate {' '.join(args)}")
    return out


@pytest.fixture
def pki(workdir: Path) -> tuple[Authority, Authority]:
    return Authority(workdir / "pki", "server-ca"), Authority(workdir / "pki", "client-ca")


def test_tls_admin_api_needs_the_right_ca_and_name(cargo_build, workdir: Path, pki) -> None:
    server_ca, client_ca = pki
    server = server_ca.issue("keygate-admin", dns=["keygate-admin.ai-gateway.svc"], ips=["127.0.0.1"])
    kg = start(workdir, {"cert_file": str(server.cert), "key_file": str(server.key)})
    ca = ["--tls-ca", str(server_ca.pem.cert)]

    out = cli(kg, "suspend", "team-a", "--reason", "over tls", *ca)
    assert out.returncode == 0, out.stderr
    listing = cli(kg, "consumers", "list", *ca)
    assert listing.returncode == 0 and "suspended" in listing.stdout, listing.stderr
    named = cli(kg, "consumers", "list", *ca, "--tls-server-name", "keygate-admin.ai-gateway.svc")
    assert named.returncode == 0, named.stderr

    plaintext = cli(kg, "consumers", "list")
    assert plaintext.returncode != 0
    foreign = cli(kg, "consumers", "list", "--tls-ca", str(client_ca.pem.cert))
    assert foreign.returncode != 0 and "certificate" in foreign.stderr.lower(), foreign.stderr
    wrong_name = cli(kg, "consumers", "list", *ca, "--tls-server-name", "someone-else.example")
    assert wrong_name.returncode != 0 and "certificate" in wrong_name.stderr.lower(), wrong_name.stderr
    assert ADMIN_TOKEN not in kg.proc.log_text()


def test_mutual_tls_refuses_a_caller_without_a_client_certificate(cargo_build, workdir: Path, pki) -> None:
    server_ca, client_ca = pki
    server = server_ca.issue("keygate-admin", dns=[], ips=["127.0.0.1"])
    oncall = client_ca.issue("oncall", dns=[], ips=[], client=True)
    stranger = server_ca.issue("stranger", dns=[], ips=[], client=True)
    kg = start(workdir, {"cert_file": str(server.cert), "key_file": str(server.key),
                         "client_ca_file": str(client_ca.pem.cert)})
    ca = ["--tls-ca", str(server_ca.pem.cert)]

    assert cli(kg, "consumers", "list", *ca).returncode != 0
    assert cli(kg, "consumers", "list", *ca, "--tls-cert", str(stranger.cert), "--tls-key", str(stranger.key)).returncode != 0
    out = cli(kg, "consumers", "list", *ca, "--tls-cert", str(oncall.cert), "--tls-key", str(oncall.key))
    assert out.returncode == 0, out.stderr
    assert "team-a" in out.stdout


@pytest.mark.parametrize("broken", ["missing_file", "not_pem"])
def test_check_names_a_bad_admin_certificate(cargo_build, workdir: Path, pki, broken: str) -> None:
    server_ca, _ = pki
    server = server_ca.issue("keygate-admin", dns=[], ips=["127.0.0.1"])
    cert = workdir / "nope.crt"
    if broken == "not_pem":
        cert.write_text("this is not a certificate\n")
    secrets = workdir / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"openai/production": {"api_key": "sk-x"}, "anthropic/production": {"api_key": "sk-y"}}))
    config = {
        "credentials": {"source": "file", "path": str(secrets)},
        "providers": providers(),
        "consumers": [consumer("team-a", "openai", ["POST /v1/chat/completions"], mint_key("team-a"))],
        "admin": {"tls": {"cert_file": str(cert), "key_file": str(server.key)}},
    }
    path = workdir / "keygate.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([str(keygate_bin()), "check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "admin.tls.cert_file" in out.stderr, out.stderr
    leaks.assert_absent(out.stdout + out.stderr, "keygate check's output", ["sk-x", "sk-y"])

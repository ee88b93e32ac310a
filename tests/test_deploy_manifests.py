"""The Kubernetes and Istio manifests stay consistent with the code: keygate's embedded config
passes `keygate check` up to the credentials it cannot reach here, and the Istio ext_proc
filter matches the shipped Envoy config's fail-closed settings and allowed overrides."""

from __future__ import annotations

import subprocess

import yaml

from harness import REPO_ROOT, keygate_bin

DEPLOY = REPO_ROOT / "deploy"


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kubernetes_config_parses_with_field_paths(cargo_build, tmp_path) -> None:
    config_map = next(d for d in docs(DEPLOY / "kubernetes" / "keygate.yaml") if d["kind"] == "ConfigMap")
    path = tmp_path / "keygate.yaml"
    path.write_text(config_map["data"]["keygate.yaml"])
    out = subprocess.run([str(keygate_bin()), "check", "--config", str(path)], capture_output=True, text=True, timeout=60)
    # No Vault here: the config itself must be valid; only the credential load may fail.
    assert "credentials:" in out.stderr or "consumers:" in out.stderr, out.stderr
    assert "unknown field" not in out.stderr and "invalid" not in out.stderr.split("credentials:")[0]


def test_istio_ext_proc_matches_the_shipped_envoy_filter() -> None:
    shipped = yaml.safe_load((REPO_ROOT / "envoy" / "ext_proc.yaml").read_text())
    hcm = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    want = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    [patch] = [p for p in docs(DEPLOY / "istio" / "keygate-ext-proc.yaml")[0]["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    got = patch["patch"]["value"]["typed_config"]
    for field in ("failure_mode_allow", "message_timeout", "processing_mode", "allowed_override_modes", "allow_mode_override"):
        assert got[field] == want[field], field


def test_istio_gateway_hcm_matches_the_shipped_path_hygiene() -> None:
    """The Istio patch gives the gateway's connection manager the shipped configs' path
    normalization and the JSON body for Envoy's own rejection of an escaped slash."""
    shipped = yaml.safe_load((REPO_ROOT / "envoy" / "ext_proc.yaml").read_text())
    want = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [patch] = [p for p in docs(DEPLOY / "istio" / "keygate-ext-proc.yaml")[0]["spec"]["configPatches"]
               if p["applyTo"] == "NETWORK_FILTER"]
    assert patch["patch"]["operation"] == "MERGE"
    got = patch["patch"]["value"]["typed_config"]
    for field in ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "local_reply_config"):
        assert got[field] == want[field], field


def test_istio_ext_authz_fails_closed() -> None:
    text = (DEPLOY / "istio" / "keygate-ext-authz.yaml").read_text()
    assert "failOpen: false" in text
    policy = docs(DEPLOY / "istio" / "keygate-ext-authz.yaml")[0]
    assert policy["spec"]["action"] == "CUSTOM" and policy["spec"]["provider"]["name"] == "keygate"

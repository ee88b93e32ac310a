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


def check(config_text: str, path) -> subprocess.CompletedProcess[str]:
    path.write_text(config_text)
    return subprocess.run([str(keygate_bin()), "check", "--config", str(path)], capture_output=True, text=True, timeout=60)


def test_kubernetes_config_parses_with_field_paths(cargo_build, tmp_path) -> None:
    """`keygate check` validates the whole config (every field, with its path) before it loads
    a credential, so failing only where it builds the Vault client (whose CA file exists in the
    pod, not here) means everything before that is valid. A broken field makes it fail earlier,
    naming the file and the field path: the control case proves the check got that far."""
    config_map = next(d for d in docs(DEPLOY / "kubernetes" / "keygate.yaml") if d["kind"] == "ConfigMap")
    text = config_map["data"]["keygate.yaml"]
    config = yaml.safe_load(text)
    path = tmp_path / "keygate.yaml"
    out = check(text, path)
    assert out.returncode == 1, out
    assert out.stdout == ""
    # No Vault here: the one error is the credential source's, at the CA file only the pod has.
    assert out.stderr.splitlines() == [
        f"keygate: error: credentials: vault configuration: client: Error reading file: {config['credentials']['vault']['ca_cert']}"
    ], out.stderr

    broken = check(text.replace("method: kubernetes", "method: kubernetez"), path)
    assert broken.returncode == 1
    assert broken.stderr.startswith(f"keygate: error: {path}: credentials: unknown variant `kubernetez`"), broken.stderr


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


def mesh_config_snippet(path) -> dict:
    """The `meshConfig:` block in the file's header comment (the part an operator pastes into
    the mesh config), uncommented and parsed."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "#    meshConfig:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#    "):
            break
        block.append(line[len("#    "):])
    return yaml.safe_load("\n".join(block))["meshConfig"]


def test_istio_ext_authz_fails_closed() -> None:
    path = DEPLOY / "istio" / "keygate-ext-authz.yaml"
    [provider] = [p for p in mesh_config_snippet(path)["extensionProviders"] if p["name"] == "keygate"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["failOpen"] is False, "keygate unreachable must deny, not allow"
    assert grpc["statusOnError"] == "503", "the same status as the shipped ext_authz config's status_on_error"
    assert (grpc["service"], grpc["port"], grpc["timeout"]) == ("keygate.ai-gateway.svc.cluster.local", 50051, "0.5s")
    policy = docs(path)[0]
    assert policy["spec"]["action"] == "CUSTOM" and policy["spec"]["provider"]["name"] == "keygate"

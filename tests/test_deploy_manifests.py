"""The Kubernetes and Istio manifests stay consistent with the code: keygate's embedded config
passes `keygate check` up to the credentials it cannot reach here, and the Istio ext_proc
filter matches the shipped Envoy config's fail-closed settings and allowed overrides.

And a cluster would accept them: every Kubernetes object in deploy/ passes the Kubernetes
OpenAPI schemas (kubernetes-validate, strict, oldest and newest shipped minor), every Istio
object passes Istio's CRD schemas (tests/istio/validate.mjs), offline. The Deployment runs the
image the way it was built (user 65532, read-only root, no capabilities), probes the admin
listener keygate's config opens, and the NetworkPolicy opens only what docs/kubernetes-istio.md says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import yaml

from harness import REPO_ROOT, keygate_bin, venv_bin

DEPLOY = REPO_ROOT / "deploy"


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def check(config_text: str, path) -> subprocess.CompletedProcess[str]:
    path.write_text(config_text)
    return subprocess.run([str(keygate_bin()), "check", "--config", str(path)], capture_output=True, text=True, timeout=60)


def test_kubernetes_config_parses_with_field_paths(cargo_build, tmp_path) -> None:
    """`keygate check` validates the whole config (every field, with its path) before it reads
    the files it names, so failing only at the first of those (the admin TLS certificate, which
    exists in the pod, not here) means everything before that is valid. A broken field makes it fail earlier,
    naming the file and the field path: the control case proves the check got that far."""
    config_map = next(d for d in docs(DEPLOY / "kubernetes" / "keygate.yaml") if d["kind"] == "ConfigMap")
    text = config_map["data"]["keygate.yaml"]
    config = yaml.safe_load(text)
    path = tmp_path / "keygate.yaml"
    out = check(text, path)
    assert out.returncode == 1, out
    assert out.stdout == ""
    # `check` reads the config's own files before it loads a credential: the one error is the
    # admin API's certificate, which only the pod has.
    assert out.stderr.splitlines() == [
        f"keygate: error: admin.tls.cert_file: {config['admin']['tls']['cert_file']}: No such file or directory (os error 2)"
    ], out.stderr

    broken = check(text.replace("method: kubernetes", "method: kubernetez"), path)
    assert broken.returncode == 1
    assert broken.stderr.startswith(f"keygate: error: {path}: credentials: unknown variant `kubernetez`"), broken.stderr


def test_istio_ext_proc_matches_the_shipped_envoy_filter() -> None:
    shipped = yaml.safe_load((REPO_ROOT / "envoy" / "ext_proc.yaml").read_text())
    hcm = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    patches = [p["patch"]["value"] for p in docs(DEPLOY / "istio" / "keygate-ext-proc.yaml")[0]["spec"]["configPatches"]
               if p["applyTo"] == "HTTP_FILTER"]
    # Both filters (the decision, then the response observer), in the shipped order.
    assert [p["name"] for p in patches] == [f["name"] for f in hcm["http_filters"][:-1]]
    for patch in patches:
        want = next(f for f in hcm["http_filters"] if f["name"] == patch["name"])["typed_config"]
        got = patch["typed_config"]
        # The observer is wrapped in the same matcher (skipped on keygate's own denials).
        assert got.get("xds_matcher") == want.get("xds_matcher"), patch["name"]
        if "extension_config" in want:
            assert got["extension_config"]["name"] == want["extension_config"]["name"]
            want, got = want["extension_config"]["typed_config"], got["extension_config"]["typed_config"]
        for field in ("failure_mode_allow", "message_timeout", "processing_mode", "allowed_override_modes",
                      "allow_mode_override", "request_attributes", "metadata_options", "observability_mode",
                      "deferred_close_timeout"):
            assert got.get(field) == want.get(field), (patch["name"], field)
        assert got["grpc_service"].get("initial_metadata") == want["grpc_service"].get("initial_metadata")


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
    assert (grpc["service"], grpc["port"], grpc["timeout"]) == ("keygate.local", 50051, "0.5s")
    shipped = yaml.safe_load((REPO_ROOT / "envoy" / "ext_authz.yaml").read_text())
    hcm = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    body = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")["typed_config"]["with_request_body"]
    assert grpc["includeRequestBodyInCheck"] == {
        "maxRequestBytes": body["max_request_bytes"], "allowPartialMessage": body["allow_partial_message"],
        "packAsBytes": body["pack_as_bytes"]}, "the same body check as the shipped ext_authz config"
    policy = docs(path)[0]
    assert policy["spec"]["action"] == "CUSTOM" and policy["spec"]["provider"]["name"] == "keygate"


# -- schemas: what a cluster would accept ---------------------------------------------------

# The oldest and the newest Kubernetes minor whose OpenAPI schemas kubernetes-validate ships
# (strict: unknown fields are errors, as with `kubectl apply --validate=strict`).
K8S_VERSIONS = ("1.29", "1.37")


def manifest_objects() -> list[tuple[str, dict]]:
    """Every object in deploy/kubernetes and deploy/istio, with the file it came from. Every
    YAML document there must be a Kubernetes object (the other deploy/ folders hold configs of
    Prometheus, Grafana and scanners, not objects)."""
    found = []
    for path in sorted([*DEPLOY.glob("kubernetes/*.yaml"), *DEPLOY.glob("istio/*.yaml")]):
        for doc in docs(path):
            assert "apiVersion" in doc and "kind" in doc, f"{path}: a document that is not a Kubernetes object"
            found.append((str(path.relative_to(REPO_ROOT)), doc))
    return found


def is_istio(obj: dict) -> bool:
    return obj["apiVersion"].split("/")[0].endswith(".istio.io")


def test_kubernetes_objects_match_the_kubernetes_openapi_schemas() -> None:
    import kubernetes_validate

    objects = [(src, obj) for src, obj in manifest_objects() if not is_istio(obj)]
    kinds = {obj["kind"] for _, obj in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    problems = []
    for version in K8S_VERSIONS:
        for src, obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(map(str, e.absolute_path))
                problems.append(f"{src}: {obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {where}: {e.message}")
    assert not problems, "\n".join(problems)


def test_istio_objects_match_istios_crd_schemas(tmp_path) -> None:
    objects = [dict(obj, __source=src) for src, obj in manifest_objects() if is_istio(obj)]
    assert {o["kind"] for o in objects} >= {"EnvoyFilter", "AuthorizationPolicy", "ServiceEntry", "PeerAuthentication"}
    listing = tmp_path / "istio-objects.json"
    listing.write_text(json.dumps(objects))
    node = shutil.which("node")
    assert node, "node not found: run scripts/setup"
    out = subprocess.run([node, str(REPO_ROOT / "tests" / "istio" / "validate.mjs"), str(listing)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(objects)} objects, 0 problems" in out.stdout


# -- the Deployment is the one the image was built for ----------------------------------------


def kube(kind: str, name: str, file: str = "keygate.yaml") -> dict:
    return next(d for d in docs(DEPLOY / "kubernetes" / file) if d["kind"] == kind and d["metadata"]["name"] == name)


def keygate_container() -> dict:
    pod = kube("Deployment", "ai-gateway")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "keygate")


def test_keygate_container_runs_the_pinned_image_as_the_image_user() -> None:
    version = next(line.split('"')[1] for line in (REPO_ROOT / "Cargo.toml").read_text().splitlines()
                   if line.startswith("version = "))
    pod = kube("Deployment", "ai-gateway")["spec"]["template"]["spec"]
    c = keygate_container()
    assert c["image"].endswith(f"/keygate:{version}"), c["image"]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"][0] == "serve"  # the image's entrypoint is keygate itself
    sc = {**pod["securityContext"], **c["securityContext"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for side in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][side]), side
    for other in pod["containers"]:
        assert other["securityContext"]["readOnlyRootFilesystem"] is True, other["name"]
        assert other["securityContext"]["capabilities"] == {"drop": ["ALL"]}, other["name"]
        assert {"cpu", "memory"} <= set(other["resources"]["requests"]), other["name"]


def test_probes_and_writable_paths_match_keygates_config() -> None:
    config = yaml.safe_load(kube("ConfigMap", "keygate-config")["data"]["keygate.yaml"])
    c = keygate_container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    admin_port = int(config["listeners"]["admin"].rsplit(":", 1)[1])
    assert config["listeners"]["admin"].startswith("0.0.0.0:"), "the kubelet probes the pod IP"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == admin_port, probe
    assert ports["admin-grpc"] == int(config["admin"]["listen"].rsplit(":", 1)[1])
    # keygate writes only under the state volume: the root filesystem and the config are read-only.
    state = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "state")
    for written in (config["usage"]["ledger"], config["admin"]["state_file"], config["admin"]["audit_log"]):
        assert written.startswith(state + "/"), written
    assert config["listeners"]["grpc"].startswith("127.0.0.1:"), "the gRPC port is for the Envoy in the pod only"


def test_network_policy_opens_only_the_gateway_metrics_and_admin_ports() -> None:
    config = yaml.safe_load(kube("ConfigMap", "keygate-config")["data"]["keygate.yaml"])
    grpc_port = int(config["listeners"]["grpc"].rsplit(":", 1)[1])
    policy = kube("NetworkPolicy", "ai-gateway")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app": "ai-gateway"}
    opened = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "an ingress rule open to every source"
        for port in rule["ports"]:
            opened.setdefault(port["port"], []).append(rule["from"])
    assert grpc_port not in opened
    assert set(opened) == {10000, 9090, 50052}
    # Envoy's port: only namespaces enabled with the label docs/kubernetes-istio.md and deploy/istio document.
    [gateway_from] = opened[10000]
    assert gateway_from == [{"namespaceSelector": {"matchLabels": {"keygate.io/ai-gateway": "enabled"}}}]
    for doc in (REPO_ROOT / "docs" / "kubernetes-istio.md", DEPLOY / "istio" / "README.md"):
        assert "kubectl label namespace team-a keygate.io/ai-gateway=enabled" in doc.read_text(), doc


def test_envoy_configmap_recipe_listens_on_the_pod_ip(tmp_path) -> None:
    """The manifest's header turns envoy/ext_proc.yaml into the pod's Envoy config with one sed:
    the listener moves to 0.0.0.0 (the Service reaches it), the admin stays on loopback, and the
    result still passes `envoy --mode validate`."""
    header = (DEPLOY / "kubernetes" / "keygate.yaml").read_text()
    expr = re.search(r"sed '([^']+)'", header).group(1)
    out = subprocess.run(["sed", expr, str(REPO_ROOT / "envoy" / "ext_proc.yaml")], capture_output=True,
                         text=True, check=True)
    rendered = yaml.safe_load(out.stdout)
    listener = rendered["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert (listener["address"], listener["port_value"]) == ("0.0.0.0", 10000)
    assert rendered["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    path = tmp_path / "ext_proc.yaml"
    path.write_text(out.stdout)
    envoy = subprocess.run([str(venv_bin("envoy")), "--mode", "validate", "-c", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr


def test_istio_recipe_keeps_the_sidecars_client_cert_header(tmp_path) -> None:
    """Behind the gateway pod's sidecar, the caller's SPIFFE ID arrives in
    x-forwarded-client-cert: the Istio README's recipe makes Envoy keep it (the shipped SANITIZE
    would drop it on the plaintext hop), the result validates, and keygate's ConfigMap names the
    setting that trusts it, off until an operator follows that README."""
    readme = (DEPLOY / "istio" / "README.md").read_text()
    recipe = readme[readme.index("sed -e"):readme.index("> ext_proc.yaml")]
    expressions = re.findall(r"-e '([^']+)'", recipe)
    assert len(expressions) == 2, recipe
    args = [arg for e in expressions for arg in ("-e", e)]
    out = subprocess.run(["sed", *args, str(REPO_ROOT / "envoy" / "ext_proc.yaml")], capture_output=True,
                         text=True, check=True)
    rendered = yaml.safe_load(out.stdout)
    listener = rendered["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["address"] == "0.0.0.0"
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["forward_client_cert_details"] == "ALWAYS_FORWARD_ONLY"
    path = tmp_path / "ext_proc.yaml"
    path.write_text(out.stdout)
    envoy = subprocess.run([str(venv_bin("envoy")), "--mode", "validate", "-c", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr
    config = yaml.safe_load(kube("ConfigMap", "keygate-config")["data"]["keygate.yaml"])
    assert config["network"]["trust_forwarded_client_cert"] is False
    assert "trust_forwarded_client_cert: true" in readme


def test_redis_manifest_is_the_one_keygates_config_points_at() -> None:
    config = yaml.safe_load(kube("ConfigMap", "keygate-config")["data"]["keygate.yaml"])
    service = kube("Service", "keygate-redis", "redis.yaml")
    [port] = service["spec"]["ports"]
    assert config["limits"]["redis"]["url"].startswith(f"redis://{service['metadata']['name']}:{port['port']}/")
    policy = kube("NetworkPolicy", "keygate-redis", "redis.yaml")
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"app": "ai-gateway"}}}],
                                          "ports": [{"protocol": "TCP", "port": port["port"]}]}]
    args = kube("Deployment", "keygate-redis", "redis.yaml")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"


def test_istio_custom_policy_covers_every_request_on_the_gateway() -> None:
    """Clients address the gateway itself, so a CUSTOM rule on the providers' hostnames would
    match nothing and leave every request unchecked: the rule must match all paths."""
    policy = docs(DEPLOY / "istio" / "keygate-ext-authz.yaml")[0]
    assert policy["spec"]["selector"]["matchLabels"] == {"app": "ai-gateway"}
    [rule] = policy["spec"]["rules"]
    assert rule == {"to": [{"operation": {"paths": ["/*"]}}]}


# -- the rotation CronJob (deploy/kubernetes/keygate-rotate.yaml) ------------------------------


def rotate_pod() -> dict:
    return kube("CronJob", "keygate-rotate", "keygate-rotate.yaml")["spec"]["jobTemplate"]["spec"]["template"]


def flag(args: list[str], name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def test_rotation_cronjob_runs_rotate_due_on_the_gateways_config_against_every_replica() -> None:
    """`keygate rotate --due` with the gateway's ConfigMap, reaching every replica's admin API
    through the headless Service, from a pod the NetworkPolicy admits to the admin port, under
    its own service account and Vault role (the replicas keep theirs, read-only)."""
    job = kube("CronJob", "keygate-rotate", "keygate-rotate.yaml")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = rotate_pod()
    [c] = pod["spec"]["containers"]
    args = c["args"]
    assert args[:2] == ["rotate", "--due"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_path = flag(args, "config")
    [config_volume] = [n for n, path in mounts.items() if config_path.startswith(path + "/")]
    assert volumes[config_volume]["configMap"]["name"] == "keygate-config"
    config = yaml.safe_load(kube("ConfigMap", "keygate-config")["data"]["keygate.yaml"])
    assert config["rotation"]["credentials"], "the config names the credentials the schedule rotates"

    service = kube("Service", "keygate-admin")
    assert service["spec"]["clusterIP"] == "None", "dns: reaches every replica only through a headless Service"
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "admin-grpc")
    assert port == int(config["admin"]["listen"].rsplit(":", 1)[1])
    assert flag(args, "targets") == f"dns:keygate-admin.ai-gateway.svc.cluster.local:{port}"
    assert flag(args, "token-file").startswith(mounts["admin-token"] + "/")
    assert volumes["admin-token"]["secret"]["secretName"] == "keygate-admin-token"
    assert flag(args, "tls-ca").startswith(mounts["admin-ca"] + "/")

    admin_rule = next(r for r in kube("NetworkPolicy", "ai-gateway")["spec"]["ingress"]
                      if {"protocol": "TCP", "port": port} in r["ports"])
    [selector] = [f["podSelector"]["matchLabels"] for f in admin_rule["from"]]
    assert selector.items() <= pod["metadata"]["labels"].items(), "the NetworkPolicy must admit the Job to the admin API"

    gateway = kube("Deployment", "ai-gateway")["spec"]["template"]["spec"]
    assert pod["spec"]["serviceAccountName"] != gateway["serviceAccountName"]
    rotator_auth = config["rotation"]["vault"]["auth"]
    assert rotator_auth["method"] == "kubernetes"
    assert rotator_auth["role"] != config["credentials"]["vault"]["auth"]["role"]
    assert c["image"] == keygate_container()["image"]
    sc = {**pod["spec"]["securityContext"], **c["securityContext"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False


def test_rotation_cronjob_arguments_and_config_are_accepted(cargo_build, tmp_path) -> None:
    """The Job's arguments parse and its config loads: run here, it gets as far as the Vault
    CA certificate, a file only the pod has."""
    [c] = rotate_pod()["spec"]["containers"]
    config = tmp_path / "keygate.yaml"
    config.write_text(kube("ConfigMap", "keygate-config")["data"]["keygate.yaml"])
    args = [f"--config={config}" if a.startswith("--config=") else a for a in c["args"]]
    out = subprocess.run([str(keygate_bin()), *args], capture_output=True, text=True, timeout=60)
    rotation = yaml.safe_load(config.read_text())["rotation"]
    assert out.returncode == 1
    assert out.stderr.strip().endswith(f"keygate: error: vault configuration: client: Error reading file: "
                                       f"{rotation['vault']['ca_cert']}"), out.stderr

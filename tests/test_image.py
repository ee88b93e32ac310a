"""keygate's container image, built offline by scripts/build-image (the same image the
Containerfile describes, from this machine's binary, libraries and CA bundle):

- the image's config runs keygate as the non-root user 65532 with keygate as the entrypoint,
  and the Containerfile says the same;
- its filesystem holds keygate, exactly the libraries it loads, the CA bundle and a passwd file
  naming 65532, and no shell;
- run by a container runtime (rootful podman with runc, read-only root, no capabilities, no
  network), `keygate --version` and `keygate check` on the example config succeed, a file only
  root may read is refused (so keygate is not root), and `keygate serve` becomes ready on a
  read-only root filesystem with its state on a volume;
- the same from the image's unpacked root filesystem (umoci unpack of the OCI archive, then
  chroot as uid 65532), which needs no runtime.

The image is built from the debug binary the suite already has (the release build would add
minutes to CI); scripts/build-image without --binary builds the release image docs/kubernetes-istio.md sizes.
Needs root, buildah, podman, runc and umoci (scripts/setup installs them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml

from harness import REPO_ROOT, Proc, free_port, keygate_bin

USER = "65532:65532"
ENTRYPOINT = ["/usr/local/bin/keygate"]
CMD = ["serve", "--config", "/etc/keygate/keygate.yaml"]
# The sandbox this runs in caps open files below podman's default ulimits, and crun cannot
# work with its hybrid cgroups: runc with explicit ulimits runs containers here.
PODMAN_RUN = ["run", "--rm", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="scripts/build-image needs root (buildah)")


def podman() -> list[str]:
    return ["podman", "--runtime", "runc"] if shutil.which("runc") else ["podman"]


def run(cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}", pytrace=False)
    return out


class Image:
    def __init__(self, tag: str, archive: Path, version: str) -> None:
        self.tag, self.archive, self.version = tag, archive, version

    def oci_config(self) -> dict:
        """The image config as the OCI archive holds it (what `podman load` / a registry gets)."""
        with tarfile.open(self.archive) as tar:
            def blob(digest: str) -> dict:
                return json.load(tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}"))
            index = json.load(tar.extractfile("index.json"))
            manifest = blob(index["manifests"][0]["digest"])
            return blob(manifest["config"]["digest"])

    def layer_files(self) -> dict[str, tarfile.TarInfo]:
        with tarfile.open(self.archive) as tar:
            index = json.load(tar.extractfile("index.json"))
            manifest = json.load(tar.extractfile(f"blobs/sha256/{index['manifests'][0]['digest'].split(':')[1]}"))
            files: dict[str, tarfile.TarInfo] = {}
            for layer in manifest["layers"]:
                data = tar.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
                with tarfile.open(fileobj=data, mode="r:*") as layer_tar:
                    for member in layer_tar.getmembers():
                        files[member.name.lstrip("./").rstrip("/")] = member
            return files


@pytest.fixture(scope="module")
def image(cargo_build, tmp_path_factory) -> Image:
    for tool in ("buildah", "umoci"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: run scripts/setup", pytrace=False)
    binary = Path(os.environ.get("KEYGATE_IMAGE_BINARY") or keygate_bin())
    tag = f"localhost/keygate-test:{uuid.uuid4().hex[:12]}"
    out = tmp_path_factory.mktemp("image")
    run([str(REPO_ROOT / "scripts" / "build-image"), "--binary", str(binary), "--tag", tag, "--out", str(out)],
        timeout=300)
    version = run([str(binary), "--version"]).stdout.split()[1]
    try:
        yield Image(tag, out / f"keygate-{version}.oci.tar", version)
    finally:
        subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True, timeout=60, check=False)


def config_dir(tmp_path: Path, **listeners: str) -> Path:
    """The example config and secrets in a folder of their own, root-owned and world-readable."""
    cfg = tmp_path / "config"
    cfg.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "examples" / "secrets.yaml", cfg / "secrets.yaml")
    config = yaml.safe_load((REPO_ROOT / "examples" / "keygate.yaml").read_text())
    if listeners:
        config["listeners"] = listeners
        config["usage"] = {"ledger": "/var/lib/keygate/ledger.redb"}  # the config folder is read-only
    (cfg / "keygate.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for f in (cfg, *cfg.iterdir()):
        f.chmod(0o755 if f.is_dir() else 0o644)
    return cfg


def test_image_config_runs_keygate_as_nonroot(image: Image) -> None:
    inspected = json.loads(run(["buildah", "inspect", "--type", "image", image.tag]).stdout)["OCIv1"]["config"]
    for config in (inspected, image.oci_config()["config"]):
        assert config["User"] == USER
        assert config["Entrypoint"] == ENTRYPOINT
        assert config["Cmd"] == CMD
        assert config["WorkingDir"] == "/var/lib/keygate"
        assert config["Labels"]["org.opencontainers.image.version"] == image.version
        assert set(config["ExposedPorts"]) == {"50051/tcp", "9090/tcp", "50052/tcp"}


def test_image_holds_keygate_its_libraries_and_the_ca_bundle_and_no_shell(image: Image) -> None:
    files = image.layer_files()
    libs = re.findall(r"(/\S+) \(0x", run(["ldd", str(keygate_bin())]).stdout)
    assert libs, "ldd listed no libraries"
    for path in ["usr/local/bin/keygate", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group",
                 *(lib.lstrip("/") for lib in libs)]:
        assert path in files and files[path].isfile(), f"{path} missing from the image"
    assert files["usr/local/bin/keygate"].mode & 0o111
    assert files["var/lib/keygate"].uid == 65532 and files["var/lib/keygate"].isdir()
    for shell in ("bin/sh", "bin/bash", "usr/bin/sh", "bin/busybox"):
        assert shell not in files, f"{shell} in the image"
    regular = [name for name, info in files.items() if info.isfile()]
    # keygate, the CA bundle, passwd, group, nsswitch.conf and the libraries: nothing else.
    assert len(regular) == 5 + len(libs), sorted(regular)


def test_containerfile_describes_the_same_image(image: Image) -> None:
    text = (REPO_ROOT / "Containerfile").read_text()
    runtime = text.split("\nFROM ")[-1]  # the last stage is the image
    assert re.search(r"^USER 65532:65532$", runtime, re.M)
    assert re.search(r"^WORKDIR /var/lib/keygate$", runtime, re.M)
    assert json.loads(re.search(r"^ENTRYPOINT (.+)$", runtime, re.M).group(1)) == ENTRYPOINT
    assert json.loads(re.search(r"^CMD (.+)$", runtime, re.M).group(1)) == CMD
    assert set(re.search(r"^EXPOSE (.+)$", runtime, re.M).group(1).split()) == {"50051", "9090", "50052"}
    labels = image.oci_config()["config"]["Labels"]
    for key in re.findall(r"(org\.opencontainers\.image\.[a-z]+)=", runtime):
        assert key in labels, key
    assert f'ARG VERSION={image.version}' in runtime


def podman_works(image: Image) -> str | None:
    """None if podman runs the image here, else why not (the runtime, not keygate)."""
    if not shutil.which("podman"):
        return "podman not installed"
    out = run([*podman(), *PODMAN_RUN, "--network", "none", image.tag, "--version"], check=False)
    # 125: podman itself failed; 126: the OCI runtime could not start the container. Anything
    # else is keygate's own exit status, which the test then checks.
    if out.returncode in (125, 126) and "keygate" not in out.stdout:
        return out.stderr.strip()
    return None


def test_runs_in_podman_as_nonroot_on_a_readonly_root(image: Image, tmp_path: Path) -> None:
    why = podman_works(image)
    if why:
        pytest.skip(f"no working container runtime here: {why}")
    version = run([*podman(), *PODMAN_RUN, "--network", "none", image.tag, "--version"])
    assert version.stdout.strip() == f"keygate {image.version}"

    cfg = config_dir(tmp_path)
    mount = ["-v", f"{cfg}:/etc/keygate:ro"]
    check = run([*podman(), *PODMAN_RUN, "--network", "none", *mount, image.tag, "check", "--config",
                 "/etc/keygate/keygate.yaml"])
    assert "ok (2 providers, 2 consumers, 2 credentials)" in check.stdout + check.stderr

    # A secrets file only root may read: keygate inside the container is refused.
    (cfg / "secrets.yaml").chmod(0o600)
    refused = run([*podman(), *PODMAN_RUN, "--network", "none", *mount, image.tag, "check", "--config",
                   "/etc/keygate/keygate.yaml"], check=False)
    assert refused.returncode != 0 and "ermission denied" in refused.stderr, refused.stderr

    # serve: read-only root, the config read-only, state on a volume owned by 65532.
    grpc, admin = free_port(), free_port()
    cfg = config_dir(tmp_path / "serve", grpc=f"127.0.0.1:{grpc}", admin=f"127.0.0.1:{admin}")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65532, 65532)
    name = f"keygate-test-{uuid.uuid4().hex[:12]}"
    proc = Proc([*podman(), *PODMAN_RUN, "--name", name, "--network", "host", "-v", f"{cfg}:/etc/keygate:ro",
                 "-v", f"{state}:/var/lib/keygate", image.tag], tmp_path, name="podman-keygate")
    try:
        proc.wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=30, expect_status=200)
        ledger = state / "ledger.redb"
        assert ledger.exists() and ledger.stat().st_uid == 65532, "the ledger is not written by uid 65532"
    finally:
        proc.stop()
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60, check=False)


def test_runs_from_the_unpacked_root_filesystem_as_65532(image: Image, tmp_path: Path) -> None:
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    layout.mkdir()
    with tarfile.open(image.archive) as tar:
        tar.extractall(layout, filter="tar")
    run(["umoci", "unpack", "--image", f"{layout}:keygate:{image.version}", str(bundle)])
    runtime_config = json.loads((bundle / "config.json").read_text())["process"]
    assert runtime_config["user"]["uid"] == 65532 and runtime_config["user"]["gid"] == 65532
    assert runtime_config["args"] == ENTRYPOINT + CMD
    rootfs = bundle / "rootfs"
    as_65532 = ["chroot", "--userspec=65532:65532", "--groups=65532", str(rootfs)]

    version = run([*as_65532, "/usr/local/bin/keygate", "--version"])
    assert version.stdout.strip() == f"keygate {image.version}"
    cfg = config_dir(tmp_path)
    for f in cfg.iterdir():
        shutil.copy(f, rootfs / "etc" / "keygate" / f.name)
    check = run([*as_65532, "/usr/local/bin/keygate", "check", "--config", "/etc/keygate/keygate.yaml"])
    assert "ok (2 providers, 2 consumers, 2 credentials)" in check.stdout + check.stderr
    (rootfs / "etc" / "keygate" / "secrets.yaml").chmod(0o600)
    refused = run([*as_65532, "/usr/local/bin/keygate", "check", "--config", "/etc/keygate/keygate.yaml"],
                  check=False)
    assert refused.returncode != 0 and "ermission denied" in refused.stderr, refused.stderr

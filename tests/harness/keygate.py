"""Start keygate for a test: mint consumer keys with the real CLI, write a config and a
secrets file, run `keygate serve`, wait for /readyz."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import leaks
from .paths import keygate_bin
from .ports import HOST, free_port
from .procs import Proc

READY_TIMEOUT = 20.0


@dataclass
class MintedKey:
    key: str
    hash: str


def mint_key(consumer: str, env: str = "live", expires: str | None = None) -> MintedKey:
    """Create a key with `keygate keys create`; the key is on stdout, the record on stderr.
    The key is registered for the leak scan (harness.leaks)."""
    cmd = [str(keygate_bin()), "keys", "create", "--consumer", consumer, "--env", env]
    if expires:
        cmd += ["--expires", expires]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    record = yaml.safe_load(out.stderr)
    key = out.stdout.strip()
    leaks.register(key)
    return MintedKey(key=key, hash=record[0]["hash"])


@dataclass
class Keygate:
    proc: Proc
    grpc_port: int
    admin_port: int
    config_path: Path
    config: dict[str, Any] = field(repr=False)

    def admin(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.admin_port}{path}", timeout=5) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> str:
        return self.admin("/metrics")[1]

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file atomically (the running keygate reloads it)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.config_path)
        self.config = config

    def write_secrets(self, secrets: dict[str, str], metadata: dict[str, dict[str, str]] | None = None) -> None:
        """Replace the `source: file` secrets file (reference → key, plus optional metadata
        fields per reference such as `rotated_at`) atomically, as an operator rotating a
        provider key would; the keys are registered for the leak scan."""
        credentials = self.config["credentials"]
        assert credentials["source"] == "file", "only a file credential source has a secrets file"
        write_secrets_file(self.config_path.parent / credentials["path"], secrets, metadata)


def start_keygate(
    workdir: Path, config: dict[str, Any], secrets: dict[str, str], env: dict[str, str] | None = None
) -> Keygate:
    """Run keygate with `config` (listeners are filled in) and `secrets` (reference → key)."""
    grpc_port, admin_port = free_port(), free_port()
    config = dict(config)
    config["listeners"] = {
        **config.get("listeners", {}),
        "grpc": f"{HOST}:{grpc_port}",
        "admin": f"{HOST}:{admin_port}",
    }
    config.setdefault("credentials", {"source": "file", "path": "secrets.yaml"})
    config.setdefault("reload", {"watch_interval": "200ms"})
    write_secrets_file(workdir / "secrets.yaml", secrets)
    config_path = workdir / "keygate.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = Proc([keygate_bin(), "serve", "--config", config_path], workdir, name="keygate", env=env)
    kg = Keygate(proc, grpc_port, admin_port, config_path, config)
    proc.wait_http(f"http://{HOST}:{admin_port}/readyz", timeout=READY_TIMEOUT, expect_status=200)
    return kg


def write_secrets_file(path: Path, secrets: dict[str, str], metadata: dict[str, dict[str, str]] | None = None) -> None:
    """Write a `source: file` secrets file (reference → {api_key, **metadata[reference]}) by
    rename, so a watcher never reads half of it; register every key for the leak scan."""
    leaks.register(*secrets.values())
    tmp = path.with_suffix(".tmp")
    meta = metadata or {}
    tmp.write_text(yaml.safe_dump({ref: {**meta.get(ref, {}), "api_key": key} for ref, key in secrets.items()}))
    tmp.replace(path)


def counter(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples whose labels include `labels`."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def readyz(kg: Keygate) -> dict[str, Any]:
    return json.loads(kg.admin("/readyz")[1])

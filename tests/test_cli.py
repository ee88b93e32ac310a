"""The keygate CLI as an operator meets it: `--help` on every command, `keygate check` (with
KEYGATE_CONFIG instead of --config, and field-path errors), and `keys create` / `keys hash`.
No server is started."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import keygate_bin, mint_key
from harness.keygate import write_secrets_file
from harness.stack import consumer

KEY_FORMAT = re.compile(r"kg_(live|test)_[0-9A-Za-z]{30}_[0-9A-Za-z]{6}")

# Every command, by its path under `keygate`, and options its --help must name.
# test_help_covers_every_command keeps this table in step with the binary.
HELP: dict[str, list[str]] = {
    "": ["serve", "check", "keys", "revoke", "suspend", "resume", "consumers", "unthrottle", "whoami", "leaks", "admin",
         "rotate", "credentials", "--version"],
    "serve": ["--config", "KEYGATE_CONFIG", "--log-format", "KEYGATE_LOG_FORMAT"],
    "check": ["--config", "KEYGATE_CONFIG"],
    "keys": ["create", "hash"],
    "keys create": ["--consumer", "--env", "live", "test", "--expires", "--store"],
    "keys hash": ["stdin"],
    "revoke": ["consumer", "key", "--targets", "KEYGATE_ADMIN_TARGETS", "--token-file"],
    "revoke consumer": ["--reason", "--targets", "<NAME>"],
    "revoke key": ["--reason", "--targets", "<KEY_ID>"],
    "suspend": ["--reason", "--targets", "--token-file", "<NAME>"],
    "resume": ["--targets", "--token-file", "<NAME>"],
    "consumers": ["list", "--targets"],
    "consumers list": ["--targets", "--token-file"],
    "unthrottle": ["--reason", "--targets", "--token-file", "--tls-cert", "<NAME>"],
    "whoami": ["--targets", "--token-file", "--tls-cert"],
    "leaks": ["report"],
    "leaks report": ["<FILE>", "--repository", "--targets", "--token-file"],
    "admin": ["token"],
    "admin token": ["create"],
    "admin token create": ["--name", "--role"],
    "rotate": ["[CREDENTIAL]", "--due", "--new-key-file", "--new-key-stdin", "--config", "KEYGATE_CONFIG", "--targets",
               "--token-file", "--actor"],
    "credentials": ["list", "revoke", "--targets", "--token-file", "--config"],
    "credentials list": ["--json", "--targets", "--token-file"],
    "credentials revoke": ["[CREDENTIAL]", "--provider", "--reason", "--rotate", "--new-key-file", "--new-key-stdin",
                           "--targets", "--config"],
}


def keygate(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the keygate binary with a clean environment: no KEYGATE_* leaks in from the caller."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
    return subprocess.run(
        [str(keygate_bin()), *args], input=stdin, capture_output=True, text=True, timeout=30,
        env={**base, **(env or {})}, cwd=cwd, check=False,
    )


def subcommands(help_text: str) -> list[str]:
    """The names listed under `Commands:` in a clap help page (without `help`)."""
    if "\nCommands:\n" not in help_text:
        return []
    section = help_text.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    names = [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]
    return [n for n in names if n != "help"]


def write_config(workdir: Path, consumers: list[dict[str, Any]], secrets: dict[str, str]) -> Path:
    """A complete keygate config (file credentials next to it) with `consumers`; return its path."""
    write_secrets_file(workdir / "secrets.yaml", secrets)
    config = {
        "listeners": {"grpc": "127.0.0.1:50051", "admin": "127.0.0.1:9090"},
        "credentials": {"source": "file", "path": "secrets.yaml"},
        "providers": {"openai": {"kind": "openai", "credentials": {"production": "openai/production"}}},
        "consumers": consumers,
    }
    path = workdir / "keygate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def three_consumers() -> list[dict[str, Any]]:
    routes = ["POST /v1/chat/completions", "GET /v1/models"]
    return [consumer(f"team-{i}", "openai", list(routes), mint_key(f"team-{i}")) for i in range(3)]


SECRETS = {"openai/production": "sk-proj-cli-test-0f9e8d7c"}


# -- help ----------------------------------------------------------------------


def test_help_covers_every_command(cargo_build) -> None:
    """Walking the `Commands:` sections of the help pages finds exactly the commands in HELP."""
    found, todo = set(), [""]
    while todo:
        path = todo.pop()
        found.add(path)
        out = keygate(*path.split(), "--help")
        assert out.returncode == 0, (path, out.stderr)
        todo += [f"{path} {name}".strip() for name in subcommands(out.stdout)]
    assert found == set(HELP)


@pytest.mark.parametrize("path", sorted(HELP), ids=lambda p: p or "keygate")
def test_help_exits_zero_and_names_the_options(cargo_build, path: str) -> None:
    """`keygate [COMMAND…] --help` exits 0 and its page shows the usage line and the options."""
    out = keygate(*path.split(), "--help")
    assert out.returncode == 0, out.stderr
    assert f"Usage: keygate {path}".rstrip() in out.stdout
    for option in [*HELP[path], "--help"]:
        assert option in out.stdout, f"`keygate {path} --help` does not mention {option}"


# -- check -----------------------------------------------------------------------


def test_check_reads_keygate_config_from_the_environment(cargo_build, workdir: Path) -> None:
    """`keygate check` with no --config validates the file named by KEYGATE_CONFIG, from any
    directory (the secrets path is relative to the config); without either it refuses."""
    config = write_config(workdir, three_consumers(), SECRETS)
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    out = keygate("check", env={"KEYGATE_CONFIG": str(config)}, cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout and "3 consumers" in out.stdout
    missing = keygate("check", cwd=elsewhere)
    assert missing.returncode != 0
    assert "--config" in missing.stderr


def test_check_names_the_field_path_of_an_unknown_method(cargo_build, workdir: Path) -> None:
    """A typo'd method in the third consumer's second route fails `keygate check` with the
    exact field path, and nothing on stdout claims the file is ok."""
    consumers = three_consumers()
    consumers[2]["scope"]["routes"][1] = "POTS /v1/models"
    config = write_config(workdir, consumers, SECRETS)
    out = keygate("check", env={"KEYGATE_CONFIG": str(config)})
    assert out.returncode != 0
    assert 'consumers[2].scope.routes[1]: unknown method "POTS"' in out.stderr
    assert "keygate.yaml" in out.stderr
    assert "ok" not in out.stdout


@pytest.mark.parametrize("secrets", [{"openai/staging": "sk-proj-wrong-ref"}, None], ids=["not-in-file", "no-file"])
def test_check_names_the_credential_it_cannot_find(cargo_build, workdir: Path, secrets: dict[str, str] | None) -> None:
    """A provider credential the secrets file lacks (or no secrets file at all) fails `keygate
    check`, naming the config field that references it."""
    config = write_config(workdir, three_consumers(), secrets or SECRETS)
    if secrets is None:
        (workdir / "secrets.yaml").unlink()
    out = keygate("check", "--config", str(config))
    assert out.returncode != 0
    assert "providers.openai.credentials.production" in out.stderr
    if secrets is not None:
        assert '"openai/production"' in out.stderr


# -- keys --------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["live", "test"])
def test_keys_create_prints_a_key_that_keys_hash_maps_to_the_record(cargo_build, env: str) -> None:
    """`keys create` prints only the key on stdout and the config record on stderr; `keys hash`
    of that key gives the record's hash, which is SHA-256 of the key."""
    out = keygate("keys", "create", "--consumer", "ml-team", "--env", env, "--expires", "90d")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert out.stdout == key + "\n"
    assert KEY_FORMAT.fullmatch(key) and key.startswith(f"kg_{env}_"), key
    [record] = yaml.safe_load(out.stderr)
    assert record["hash"] == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert record["env"] == env
    expires = record["expires"]
    expires = expires if isinstance(expires, datetime) else datetime.fromisoformat(expires.replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(timezone.utc) + timedelta(days=90))) < timedelta(minutes=5)
    assert key not in out.stderr

    hashed = keygate("keys", "hash", stdin=key + "\n")
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout.strip() == record["hash"]
    assert keygate("keys", "create", "--consumer", "ml-team").stdout.strip() != key, "a fresh key every time"


def test_keys_hash_refuses_a_key_with_a_bad_checksum(cargo_build) -> None:
    """`keys hash` checks the checksum first: a one-character typo is refused, not hashed."""
    key = mint_key("typo-team").key
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    out = keygate("keys", "hash", stdin=typo)
    assert out.returncode != 0
    assert "sha256:" not in out.stdout

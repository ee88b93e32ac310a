"""Locations of the repository, built binaries and virtualenv tools."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
ENVOY_DIR: Path = REPO_ROOT / "envoy"
EXT_PROC_CONFIG: Path = ENVOY_DIR / "ext_proc.yaml"
EXT_AUTHZ_CONFIG: Path = ENVOY_DIR / "ext_authz.yaml"


def repo_root() -> Path:
    """The keygate repository root."""
    return REPO_ROOT


def target_dir() -> Path:
    """Cargo's target directory: $CARGO_TARGET_DIR (relative to the repo root) or <root>/target."""
    return REPO_ROOT / os.environ.get("CARGO_TARGET_DIR", "target")


def keygate_bin() -> Path:
    """The keygate binary: $KEYGATE_BIN or <target>/debug/keygate (target: $CARGO_TARGET_DIR or <root>/target)."""
    env = os.environ.get("KEYGATE_BIN")
    return Path(env) if env else target_dir() / "debug" / "keygate"


def mock_provider_bin() -> Path:
    """The mock provider binary: $MOCK_PROVIDER_BIN or <target>/debug/mock-provider."""
    env = os.environ.get("MOCK_PROVIDER_BIN")
    return Path(env) if env else target_dir() / "debug" / "mock-provider"


def venv_bin(name: str) -> Path:
    """A tool from the project's virtualenv (<root>/.venv/bin/NAME).

    Falls back to the bin directory of the running interpreter when the repo
    virtualenv does not have it (e.g. tests run from another venv).
    """
    candidate = REPO_ROOT / ".venv" / "bin" / name
    if candidate.exists():
        return candidate
    return Path(sys.executable).parent / name

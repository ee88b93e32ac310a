"""Test harness for keygate integration tests: start real processes on free ports.

Everything binds 127.0.0.1 on a port chosen by the test (safe under pytest-xdist),
logs to files in the test's work directory, and is always cleaned up.
"""

from .envoy_config import render, start_envoy
from .keygate import Keygate, MintedKey, counter, mint_key, start_keygate
from .mock import mock_clear, mock_requests, start_mock
from .paths import REPO_ROOT, keygate_bin, mock_provider_bin, venv_bin
from .ports import free_port, wait_port
from .procs import Proc, ProcError

__all__ = [
    "REPO_ROOT",
    "Keygate",
    "MintedKey",
    "Proc",
    "counter",
    "mint_key",
    "start_keygate",
    "ProcError",
    "free_port",
    "keygate_bin",
    "mock_clear",
    "mock_provider_bin",
    "mock_requests",
    "render",
    "start_envoy",
    "start_mock",
    "venv_bin",
    "wait_port",
]

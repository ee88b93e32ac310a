"""The mock AI provider (bench/mock-provider): start it and read what it received.

Contract of the binary (built as target/debug/mock-provider):
  mock-provider --listen 127.0.0.1:PORT   prints "listening on 127.0.0.1:PORT" when ready
  GET    /__mock/requests   -> JSON list of {method, path, headers: [[name, value], ...], body_len, body}
  DELETE /__mock/requests   -> forget recorded requests
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from .paths import mock_provider_bin
from .ports import HOST, free_port
from .procs import Proc

MOCK_READY_TIMEOUT = 15.0

MockRequest = dict[str, Any]


def start_mock(workdir: Path, port: int | None = None) -> tuple[Proc, int]:
    """Start the mock provider on 127.0.0.1 (a free port unless given); return (proc, port).

    Waits for its "listening on 127.0.0.1:PORT" line.
    """
    port = port if port is not None else free_port()
    addr = f"{HOST}:{port}"
    proc = Proc([mock_provider_bin(), "--listen", addr], workdir, name="mock-provider")
    try:
        proc.wait_for_line(rf"listening on {re.escape(addr)}\b", timeout=MOCK_READY_TIMEOUT)
    except BaseException:
        proc.stop()
        raise
    return proc, port


def mock_requests(port: int) -> list[MockRequest]:
    """Requests the mock received so far, oldest first (GET /__mock/requests)."""
    with _call("GET", port) as response:
        data = json.loads(response.read().decode("utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"/__mock/requests returned {type(data).__name__}, expected a list")
    return data


def mock_clear(port: int) -> None:
    """Forget every recorded request (DELETE /__mock/requests)."""
    with _call("DELETE", port) as response:
        response.read()


def header_values(request: MockRequest, name: str) -> list[str]:
    """All values of header `name` (case-insensitive) in a recorded mock request."""
    wanted = name.lower()
    return [value for header, value in request.get("headers", []) if header.lower() == wanted]


def _call(method: str, port: int) -> Any:
    request = urllib.request.Request(f"http://{HOST}:{port}/__mock/requests", method=method)
    return urllib.request.urlopen(request, timeout=5.0)  # noqa: S310 (loopback only)


# -- provider keys (enforcement and the admin APIs) -------------------------------------------


def _json_call(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5.0) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read().decode("utf-8"))


def mock_seed(port: int, *, enforce: bool | None = None, keys: list[dict[str, Any]] | None = None,
              admin_keys: list[str] | None = None, minted_latency_ms: int | None = None,
              refuse_minted: bool | None = None) -> None:
    """Seed the mock's key store (POST /__mock/keys): with `enforce`, an unknown or revoked
    provider key gets the provider's own 401. Every key and admin key is registered for the
    leak scan."""
    from . import leaks

    leaks.register(*(k["value"] for k in keys or []), *(admin_keys or []))
    seed: dict[str, Any] = {"keys": keys or [], "admin_keys": admin_keys or []}
    if enforce is not None:
        seed["enforce"] = enforce
    if minted_latency_ms is not None:
        seed["minted_latency_ms"] = minted_latency_ms
    if refuse_minted is not None:
        seed["refuse_minted"] = refuse_minted
    _json_call(port, "POST", "/__mock/keys", seed)


def mock_keys(port: int) -> list[dict[str, Any]]:
    """Every key the mock knows, with its status (GET /__mock/keys). Keys minted through its
    admin API are registered for the leak scan as they are seen."""
    from . import leaks

    keys = _json_call(port, "GET", "/__mock/keys")
    leaks.register(*(k["value"] for k in keys))
    return keys


def mock_console_key(port: int, provider: str = "anthropic", name: str = "console key") -> dict[str, Any]:
    """A key made by hand in the provider's console (the only way to make an Anthropic key);
    registered for the leak scan."""
    from . import leaks

    key = _json_call(port, "POST", "/__mock/console_keys", {"provider": provider, "name": name})
    leaks.register(key["value"])
    return key

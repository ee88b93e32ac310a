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

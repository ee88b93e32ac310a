"""Port helpers: pick free loopback ports and wait for listeners."""

from __future__ import annotations

import socket
import time

HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Binds port 0, reads the port the kernel picked and closes the socket. There is a
    small race until the caller binds it; ephemeral ports are picked at random so
    collisions between parallel workers are rare.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """True if something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 10.0, host: str = HOST) -> None:
    """Block until host:port accepts TCP connections; raise TimeoutError after timeout s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")

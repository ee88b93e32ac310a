"""A real redis-server (Debian package) for a test, on a free loopback port, no persistence."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from .ports import HOST, free_port
from .procs import Proc


def start_redis(workdir: Path, port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = Proc(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        workdir, name="redis",
    )
    deadline = time.monotonic() + 15
    while not ping(port):
        if time.monotonic() > deadline or not proc.alive():
            proc.stop()
            raise RuntimeError(f"redis did not start:\n{proc.log_tail()}")
        time.sleep(0.05)
    return proc, port


def command(port: int, *args: str) -> bytes:
    """Sends one command in RESP and returns the raw reply."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection((HOST, port), timeout=2) as s:
        s.sendall(payload.encode())
        return s.recv(65536)


def ping(port: int) -> bool:
    try:
        return command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False

"""A TCP proxy a test can switch between forwarding, answering garbage and never answering,
to see how keygate handles a Vault that misbehaves in ways a real server will not on demand."""

from __future__ import annotations

import socket
import threading
from typing import Callable

from .ports import HOST, free_port

GARBAGE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{not json"


def pipe(src: socket.socket, dst: socket.socket, on_chunk: Callable[[bytes], None] | None = None) -> None:
    """Copy `src` to `dst` until either side closes (calling `on_chunk` with each chunk), then
    shut both down. Run it on a thread per direction."""
    try:
        while chunk := src.recv(65536):
            if on_chunk is not None:
                on_chunk(chunk)
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FaultProxy:
    """mode: "forward" (default), "garbage" or "blackhole"."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.mode = "forward"
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, self.port))
        self._sock.listen(64)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._live: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        mode = self.mode
        if mode == "blackhole":
            self._held.append(client)
            return
        if mode == "garbage":
            try:
                client.recv(65536)
                client.sendall(GARBAGE)
            finally:
                client.close()
            return
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        self._live += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    def set_mode(self, mode: str) -> None:
        """Switch mode and cut every forwarded connection, so the next request reconnects."""
        self.mode = mode
        live, self._live = self._live, []
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for s in self._held:
            s.close()

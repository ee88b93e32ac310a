"""A TCP proxy between Envoy and the mock provider that keeps every byte the provider sends
back, so a test can compare what the client got with what the provider sent."""

from __future__ import annotations

import socket
import threading
from typing import Callable

from .faultproxy import pipe
from .ports import HOST


class UpstreamRecorder:
    """A TCP proxy between Envoy and the mock provider that keeps every byte the provider sends
    back, so a test can compare what the client got with what the provider sent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server((HOST, 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._received: list[bytearray] = []  # per upstream connection, in accept order
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            record = bytearray()
            with self._lock:
                self._received.append(record)
                self._sockets += [client, upstream]
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client, self._keeper(record)), daemon=True).start()

    def _keeper(self, record: bytearray) -> Callable[[bytes], None]:
        def keep(chunk: bytes) -> None:
            with self._lock:
                record.extend(chunk)
        return keep

    def mark(self) -> list[int]:
        """Where every connection's record ends now."""
        with self._lock:
            return [len(r) for r in self._received]

    def since(self, mark: list[int]) -> bytes:
        """The bytes the provider sent after `mark`; they must all be on one connection (one
        response: tests send one request at a time)."""
        with self._lock:
            new = [bytes(r[mark[i]:] if i < len(mark) else r) for i, r in enumerate(self._received)]
        new = [b for b in new if b]
        assert len(new) == 1, f"expected one upstream response, got {len(new)}"
        return new[0]

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass

"""A real webhook receiver: an HTTP server on loopback that records what it is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [headers.get("Taskroute-Event-Type", "") for headers, _ in self.deliveries]


class _Handler(BaseHTTPRequestHandler):
    received: Received

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.deliveries.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # quiet: the test reads what was received, not a log


@contextmanager
def receiving(port: int = 0) -> Iterator[tuple[str, Received]]:
    """The receiver's URL and what it got; stopped on exit."""
    received = Received()
    handler = type("Receiver", (_Handler,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

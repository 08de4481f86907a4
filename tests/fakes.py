"""Stand-ins, on loopback, for services that cannot run here: Telegram's Bot API."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeTelegram:
    """Answers `POST /bot<token>/sendMessage` like the Bot API, from a script of (status, JSON body) pairs
    (then 200 ok), and records each call: (monotonic time, token, JSON body)."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]] | None = None) -> None:
        self.script = list(script or [])
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                parts = self.path.strip("/").split("/")
                if len(parts) != 2 or not parts[0].startswith("bot") or parts[1] != "sendMessage":
                    status, answer = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
                else:
                    fake.calls.append((time.monotonic(), parts[0][3:], json.loads(raw)))
                    status, answer = fake.script.pop(0) if fake.script else (200, {"ok": True, "result": {}})
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self) -> list[dict[str, Any]]:
        return [body for _, _, body in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def too_many_requests(retry_after: int) -> tuple[int, dict[str, Any]]:
    """Telegram's 429, with the wait in `parameters.retry_after` as the Bot API sends it."""
    return 429, {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after}",
        "parameters": {"retry_after": retry_after},
    }

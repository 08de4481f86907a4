"""A fake OpenAI-compatible chat server on loopback, for testing the LLM agent without a model.

`POST /v1/chat/completions` answers `"echo: <last user message>"` with usage, unless the user message
contains a directive:

- `[status=N]`   answer HTTP N with an OpenAI-style error body;
- `[flaky=N]`    answer HTTP N the first time this exact message arrives, then normally;
- `[hang]`       do not answer until the server is closed (the client's timeout must fire);
- `[garbage]`    answer 200 with a body that is not a chat completion.

`GET /material/NAME` serves `materials[NAME]` as text (404 when absent); `GET /redirect/NAME` answers 302
to `redirects[NAME]`. Every chat request is recorded (headers lower-cased, JSON body) in `requests`, every
material or redirect GET's path in `fetched`.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.materials: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.fetched: list[str] = []
        self.seen: set[str] = set()
        self.models: list[str] = []  # what GET /v1/models lists (empty: nothing to check against)
        self.lock = threading.Lock()
        self.closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in outer.models]})
                    return
                with outer.lock:
                    outer.fetched.append(self.path)
                name = self.path.removeprefix("/material/")
                target = outer.redirects.get(self.path.removeprefix("/redirect/"))
                if self.path.startswith("/redirect/") and target:
                    self.send_response(302)
                    self.send_header("location", target)
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif self.path.startswith("/material/") and name in outer.materials:
                    self._send(200, outer.materials[name], "text/plain; charset=utf-8")
                else:
                    self._send(404, {"error": "no such material"})

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                body = json.loads(raw)
                with outer.lock:
                    outer.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                if m := re.search(r"\[status=(\d+)\]", user):
                    status = int(m.group(1))
                    self._send(status, {"error": {"message": f"fake says {status}", "type": "fake_error"}})
                    return
                if m := re.search(r"\[flaky=(\d+)\]", user):
                    with outer.lock:
                        first = user not in outer.seen
                        outer.seen.add(user)
                    if first:
                        self._send(int(m.group(1)), {"error": {"message": "fake hiccup"}})
                        return
                if "[hang]" in user:
                    outer.closing.wait(120)
                    return
                if "[garbage]" in user:
                    self._send(200, "<html>not json</html>", "text/html")
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "model": body["model"] + "-fake",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"echo: {user}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 2, "total_tokens": 9},
                    },
                )

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The base URL, as for OpenAI: `.../v1`."""
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, as `--allow-fetch` takes it."""
        return f"127.0.0.1:{self.server.server_port}"

    def material_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/material/{name}"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

"""A fake OpenAI-compatible chat server on loopback, for testing the LLM agent without a model.

`POST /v1/chat/completions` answers `"echo: <last user message>"` with usage, unless the user message
contains a directive:

- `[status=N]`   answer HTTP N with an OpenAI-style error body;
- `[flaky=N]`    answer HTTP N the first time this exact message arrives, then normally;
- `[hang]`       do not answer until the server is closed (the client's timeout must fire);
- `[garbage]`    answer 200 with a body that is not a chat completion.

A request with `"stream": true` is answered as real servers do, with Server-Sent Events over a chunked body:
a role chunk, the answer one word per chunk (`chunk_delay` seconds apart, so progress can be watched), a
chunk with the finish reason, a usage chunk when `stream_options.include_usage` asks for it, then
`data: [DONE]`. `streaming = "json"` makes it a server that ignores `stream` (the whole completion as JSON),
`streaming = "refuse"` one that answers such a request HTTP 400. Directives for streamed answers:

- `[cut=N]`      after N words, close the connection in the middle of the chunked body;
- `[end=N]`      after N words, end the body cleanly, but without finish reason or `[DONE]`;
- `[oops=N]`     after N words, send an error event (`data: {"error": {...}}`) and stop.

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


def words(text: str) -> list[str]:
    """`text` in the pieces a streamed answer sends: each word with the spaces after it (joined: `text`)."""
    return re.findall(r"\S+\s*|\s+", text)


class FakeOpenAI:
    def __init__(self, *, chunk_delay: float = 0.0) -> None:
        self.chunk_delay = chunk_delay  # seconds between two chunks of a streamed answer
        self.streaming = "sse"  # or "json" (ignores `stream`), or "refuse" (400 to a stream request)
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
                if body.get("stream") and outer.streaming == "refuse":
                    self._send(400, {"error": {"message": "streaming is not supported", "type": "fake_error"}})
                    return
                if body.get("stream") and outer.streaming == "sse":
                    self._stream(body, user)
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

            def _chunk(self, data: str) -> None:
                """One Server-Sent Event as one HTTP chunk."""
                raw = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                self.wfile.flush()

            def _stream(self, body: dict[str, Any], user: str) -> None:
                self.protocol_version = "HTTP/1.1"  # for a chunked body; this connection closes after it
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("transfer-encoding", "chunked")
                self.send_header("connection", "close")
                self.end_headers()
                model = body["model"] + "-fake"

                def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish}
                    return json.dumps(
                        {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
                        | {"choices": [choice]}
                        | extra
                    )

                stop = {k: int(m.group(1)) for k in ("cut", "end", "oops") if (m := re.search(rf"\[{k}=(\d+)\]", user))}
                self._chunk(chunk({"role": "assistant", "content": ""}))
                for i, piece in enumerate(words(f"echo: {user}")):
                    if i == stop.get("cut"):
                        self.wfile.write(b'ff\r\ndata: {"choi')  # half a chunk, then the connection drops
                        self.wfile.flush()
                        return
                    if i == stop.get("end"):
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    if i == stop.get("oops"):
                        self._chunk(json.dumps({"error": {"message": "fake ran out of memory", "type": "fake_error"}}))
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    if outer.closing.wait(outer.chunk_delay):
                        return
                    self._chunk(chunk({"content": piece}))
                self._chunk(chunk({}, "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {"prompt_tokens": len(user.split()), "completion_tokens": 2, "total_tokens": 9}
                    self._chunk(json.dumps({"id": "chatcmpl-fake", "model": model, "choices": [], "usage": usage}))
                self._chunk("[DONE]")
                self.wfile.write(b"0\r\n\r\n")

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

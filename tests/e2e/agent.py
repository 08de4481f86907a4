"""A stdlib-only MCS agent for the end-to-end tests; it runs inside containers that have Python but not
the mcs package. It registers with a notify_url (retrying until the api answers, so it can start before a
tunnel is up, and re-registering every few seconds), verifies each webhook's Standard Webhooks signature
itself, answers 204, then claims and completes the task. The result carries the webhook exactly as it
arrived so the test can verify the signature again on the host. Every step is a JSON line on stdout.

Environment: MCS_URL, MCS_AGENT_ID, MCS_AGENT_SECRET, MCS_WEBHOOK_SECRET, AGENT_CAPABILITY,
AGENT_LISTEN (host:port to serve webhooks on), AGENT_NOTIFY_URL (what MCS should POST to).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

URL = os.environ["MCS_URL"].rstrip("/")
NAME = os.environ["MCS_AGENT_ID"]
SECRET = os.environ["MCS_AGENT_SECRET"]
WEBHOOK_KEY = base64.b64decode(os.environ["MCS_WEBHOOK_SECRET"].removeprefix("whsec_"))
CAPABILITY = os.environ["AGENT_CAPABILITY"]
LISTEN_HOST, LISTEN_PORT = os.environ.get("AGENT_LISTEN", "0.0.0.0:8765").rsplit(":", 1)
NOTIFY_URL = os.environ["AGENT_NOTIFY_URL"]
REGISTER_EVERY = 5.0  # seconds
TOLERANCE = 300  # seconds a webhook timestamp may be off, as the Standard Webhooks libraries allow

_print_lock = threading.Lock()


def event(kind: str, **fields: Any) -> None:
    with _print_lock:
        print(json.dumps({"event": kind, "at": time.time(), **fields}), flush=True)


def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("X-Agent-ID", NAME)
    req.add_header("X-Agent-Secret", SECRET)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def verify(headers: Any, body: bytes) -> bool:
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures) or abs(time.time() - int(stamp)) > TOLERANCE:
        return False
    mac = hmac.new(WEBHOOK_KEY, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    return any(
        hmac.compare_digest(expected, sig.split(",", 1)[1]) for sig in signatures.split() if sig.startswith("v1,")
    )


def register_forever() -> None:
    registered = False
    while True:
        try:
            status, body = call("POST", "/v1/agents/register", {"capabilities": [CAPABILITY], "notify_url": NOTIFY_URL})
        except OSError as exc:  # the api (or the tunnel to it) is not there yet
            status, body = 0, str(exc)
        if status == 200 and not registered:
            event("registered", notify_url=NOTIFY_URL)
        elif status != 200:
            event("register_failed", status=status, detail=str(body)[:200])
        registered = status == 200
        time.sleep(REGISTER_EVERY if registered else 0.5)


jobs: queue.Queue[tuple[str, dict[str, str], str]] = queue.Queue()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not verify(self.headers, body):
            event("bad_signature", headers=dict(self.headers.items()))
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(204)  # answer at once, then work
        self.end_headers()
        task_id = json.loads(body)["data"]["task"]["id"]
        hook = {h: self.headers[h] for h in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        event("webhook", task=task_id, webhook_id=hook["webhook-id"])
        jobs.put((task_id, hook, body.decode()))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def work() -> None:
    while True:
        task_id, hook, body = jobs.get()
        try:
            status, task = call("POST", f"/v1/tasks/{task_id}/claim")
            if status != 200:
                event("claim_refused", task=task_id, status=status)
                continue
            event("claimed", task=task_id)
            result = {"agent": NAME, "payload": task["payload"], "webhook": {"headers": hook, "body": body}}
            done = {"claim_token": task["claim_token"], "result": result}
            status, _ = call("POST", f"/v1/tasks/{task_id}/complete", done)
            event("completed" if status == 200 else "complete_refused", task=task_id, status=status)
        except OSError as exc:
            event("error", task=task_id, detail=str(exc))


def main() -> None:
    server = ThreadingHTTPServer((LISTEN_HOST, int(LISTEN_PORT)), Handler)
    event("listening", on=f"{LISTEN_HOST}:{LISTEN_PORT}")
    for target in (register_forever, work, work):
        threading.Thread(target=target, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

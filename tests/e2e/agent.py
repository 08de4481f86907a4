"""A stdlib-only MCS agent for the end-to-end tests; it runs inside containers that have Python but not
the mcs package. It registers with a notify_url (retrying until the api answers, so it can start before a
tunnel is up, and re-registering every few seconds), verifies each webhook's Standard Webhooks signature
itself, answers 204, then claims and completes the task. The result carries the webhook exactly as it
arrived so the test can verify the signature again on the host. Every step is a JSON line on stdout.

Environment: MCS_URL, MCS_AGENT_ID, MCS_AGENT_SECRET, MCS_WEBHOOK_SECRET, AGENT_CAPABILITY,
AGENT_LISTEN (host:port to serve webhooks on), AGENT_NOTIFY_URL (what MCS should POST to; empty: the
agent pulls instead, long-polling POST /v1/tasks/claim), AGENT_CONCURRENCY (tasks at once, registered as
its concurrency; default 1). A webhook that carries a claim_token (claim_on_push) is completed without a
claim. A payload's `sleep` (seconds) is how long the work takes. Requests that fail on the way (a replica
killed under them) are retried.
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
NOTIFY_URL = os.environ.get("AGENT_NOTIFY_URL") or None
CONCURRENCY = int(os.environ.get("AGENT_CONCURRENCY", "1"))
PULL_WAIT = 5  # seconds a pulling claim waits for a task
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
            registration = {"capabilities": [CAPABILITY], "notify_url": NOTIFY_URL, "concurrency": CONCURRENCY}
            status, body = call("POST", "/v1/agents/register", registration)
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
        task = json.loads(body)["data"]["task"]
        hook = {h: self.headers[h] for h in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        event("webhook", task=task["id"], webhook_id=hook["webhook-id"], pushed_claim="claim_token" in task)
        jobs.put((task["id"], hook, body.decode()))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def call_retrying(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """`call`, again while the request failed on the way (connection lost, or a 502/503 from a proxy whose
    replica went away): completing twice with one claim token is safe, the second answer says so."""
    for attempt in range(40):
        try:
            status, answer = call(method, path, body)
        except OSError as exc:
            status, answer = 0, str(exc)
        if status not in (0, 502, 503, 504):
            return status, answer
        event("retry", path=path, status=status, attempt=attempt)
        time.sleep(0.25)
    return status, answer


def finish(task: dict[str, Any], result: dict[str, Any]) -> None:
    payload = task.get("payload")
    if isinstance(payload, dict) and payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    done = {"claim_token": task["claim_token"], "result": {"agent": NAME, "payload": payload, **result}}
    status, _ = call_retrying("POST", f"/v1/tasks/{task['id']}/complete", done)
    event("completed" if status == 200 else "complete_refused", task=task["id"], status=status)


def work() -> None:
    while True:
        task_id, hook, body = jobs.get()
        try:
            task = json.loads(body)["data"]["task"]
            if "claim_token" not in task:  # claim_on_push sends the claim with the webhook
                status, task = call_retrying("POST", f"/v1/tasks/{task_id}/claim")
                if status != 200:
                    event("claim_refused", task=task_id, status=status)
                    continue
            event("claimed", task=task_id)
            finish(task, {"webhook": {"headers": hook, "body": body}})
        except OSError as exc:
            event("error", task=task_id, detail=str(exc))


def pull() -> None:
    while True:
        try:
            status, task = call("POST", "/v1/tasks/claim", {"wait": PULL_WAIT})
        except OSError as exc:  # a replica went away under the long poll
            event("error", detail=str(exc))
            time.sleep(0.25)
            continue
        if status == 200:
            event("claimed", task=task["id"])
            try:
                finish(task, {})
            except OSError as exc:
                event("error", task=task["id"], detail=str(exc))
        elif status != 204:
            event("claim_failed", status=status)
            time.sleep(0.25)


def main() -> None:
    server = ThreadingHTTPServer((LISTEN_HOST, int(LISTEN_PORT)), Handler)
    event("listening", on=f"{LISTEN_HOST}:{LISTEN_PORT}")
    workers = [work] * max(2, CONCURRENCY) if NOTIFY_URL else [pull] * CONCURRENCY
    for target in (register_forever, *workers):
        threading.Thread(target=target, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""A minimal MCS agent: registers, receives signed webhooks, claims the task, does it, completes it.

    export MCS_URL=http://127.0.0.1:8080 MCS_AGENT_ID=echo MCS_AGENT_SECRET=... MCS_WEBHOOK_SECRET=whsec_...
    python examples/echo_agent.py --capability echo --port 8765

It echoes each task's payload back as the result. Replace `work()` with your model call.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mcs.client import Client, McsApiError
from mcs.webhooks import InvalidSignature, verify

log = logging.getLogger("echo-agent")
HEARTBEAT_EVERY = 240  # seconds; the server's default TTL is 300


def work(task: dict[str, Any]) -> Any:
    """The agent's actual job. Here: echo the payload."""
    return {"echo": task["payload"], "by": os.environ.get("MCS_AGENT_ID")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capability", "-c", action="append", default=None, help="repeatable; default: echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    client = Client.from_env()
    webhook_secret = os.environ["MCS_WEBHOOK_SECRET"]
    jobs: queue.Queue[str] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
            try:
                verify(secret=webhook_secret, headers=dict(self.headers), body=body)
            except InvalidSignature as exc:
                log.warning("rejected webhook: %s", exc)
                self.send_response(401)
                self.end_headers()
                return
            self.send_response(204)  # answer 2xx at once, then do the work
            self.end_headers()
            jobs.put(json.loads(body)["data"]["task"]["id"])

        def log_message(self, format: str, *a: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    capabilities = args.capability or ["echo"]
    notify_url = f"http://{args.host}:{server.server_port}/"

    def heartbeat() -> None:
        while True:
            client.register(capabilities, notify_url=notify_url)
            threading.Event().wait(HEARTBEAT_EVERY)

    threading.Thread(target=heartbeat, daemon=True).start()
    log.info("listening on %s with capabilities %s", notify_url, capabilities)
    while True:
        task_id = jobs.get()
        try:
            task = client.claim(task_id)
        except McsApiError as exc:
            log.info("could not claim %s: %s", task_id, exc.message)
            continue
        try:
            client.complete(task["id"], task["claim_token"], work(task))
            log.info("completed %s", task["id"])
        except Exception as exc:  # report the failure so MCS retries it
            client.fail(task["id"], task["claim_token"], str(exc))


if __name__ == "__main__":
    main()

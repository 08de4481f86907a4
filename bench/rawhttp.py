"""A minimal HTTP/1.1 keep-alive client and webhook server on asyncio streams, for the bench's agents.

The agents must stay cheap so the benchmark measures MCS, not the agents: a hand-written request and
response costs a fraction of what httpx does per call. Enough HTTP for loopback traffic with Hypercorn and
httpx (Content-Length and chunked bodies, keep-alive); not a general-purpose library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> tuple[dict[bytes, bytes], bytes]:
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get(b"content-length")
    if length is not None:
        n = int(length)
        return headers, (await reader.readexactly(n)) if n else b""
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return headers, b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return headers, b""


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """One request on this kept-alive connection; reconnects once if the server had closed it."""
        for attempt in (1, 2):
            if self.writer is None:
                await self._open()
            assert self.reader is not None and self.writer is not None
            head = (
                f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-length: {len(body)}\r\n"
            ).encode()
            try:
                self.writer.write(head + headers + b"\r\n" + body)
                status_head = await self.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
                continue
            status = int(status_head.split(b" ", 2)[1])
            resp_headers, data = await _read_body(self.reader, status_head)
            if resp_headers.get(b"connection", b"").lower() == b"close":
                self.close()
            return status, data
        raise AssertionError("unreachable")


class Pool:
    """Up to `size` kept-alive connections to one server, shared by concurrent requests."""

    def __init__(self, host: str, port: int, *, size: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.slots = asyncio.Semaphore(size)
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else Connection(self.host, self.port)
            try:
                result = await conn.request(method, path, self.headers, body)
            except BaseException:
                conn.close()
                raise
            if conn.writer is not None:
                self.idle.append(conn)
            return result

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def serve(host: str, port: int, on_request: Callable[[bytes, bytes], None]) -> asyncio.Server:
    """A server that answers every request 204 at once and hands (request line, body) to `on_request`
    right after the body has been read (the moment it is timestamped there)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                _, body = await _read_body(reader, head)
                on_request(head.split(b"\r\n", 1)[0], body)
                writer.write(_NO_CONTENT)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # peer closed, or the loop is shutting down: end quietly
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)

"""The httpx transport that checks the egress policy (`mcs.egress`) at connect time and connects to the
very address it checked. Its own module so that importing the policy does not import httpx."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from mcs.egress import EgressRefused, Policy, Unresolvable


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but every TCP connection is checked first and goes to a checked address."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.policy.check(host, port)
        except Unresolvable as exc:
            raise httpcore.ConnectError(str(exc)) from None
        last: Exception | None = None
        for address in addresses:  # the checked addresses themselves: no second lookup
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused(f"{self.policy.what}: Unix sockets are refused always")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every policy-checked client (loading the CA bundle per client costs ~20 ms)."""
    return httpx.create_ssl_context(trust_env=False)


class EgressTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the policy checked at connect time. TLS still verifies the URL's host name
    (SNI and certificate), the Host header is the URL's, and proxies from the environment are not used
    (a proxy would make the connection where the policy cannot see it)."""

    def __init__(
        self, policy: Policy, *, limits: httpx.Limits | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        # Not super().__init__(): it builds a pool (and a TLS context) only to be replaced. httpx's
        # transport keeps everything it needs in `_pool`, which is what this sets.
        limits = limits or httpx.Limits()
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or _ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )

"""The client's HTTP clients: an SSL context is built only when an ``https://`` URL is first used.

httpx2 builds its verifying SSL context (the CA bundle read from disk: about 30 ms) when a client
is made, whatever the URL. A client of ``http://127.0.0.1:...`` (the embedded server, a server on
this machine) never needs it. Here the default transport routes by scheme: ``http://`` goes to a
connection pool with no SSL context; ``https://`` (a server, or a signed link redirected to a CDN)
goes to httpx2's own transport, made on first use with the client's ``verify``/``cert`` settings.

Proxies from the environment, ``mounts`` and an injected ``transport`` behave as in httpx2.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx2


def _pool_options(options: dict[str, Any]) -> dict[str, Any]:
    limits = options.get("limits") or httpx2.Limits(max_connections=100, max_keepalive_connections=20)
    return dict(max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry, http1=options.get("http1", True),
                http2=options.get("http2", False))


class PlainTransport(httpx2.HTTPTransport):
    """httpx2's transport for ``http://`` URLs only: its pool holds no SSL context.

    (Were it ever handed an ``https://`` URL, httpcore2 would build its default verifying context
    for that connection: never an unverified one.)
    """

    def __init__(self, **options: Any) -> None:  # noqa: D107 (no super().__init__: that builds the context)
        import httpcore2

        self._pool = httpcore2.ConnectionPool(ssl_context=None, **_pool_options(options))


class AsyncPlainTransport(httpx2.AsyncHTTPTransport):
    """The asyncio twin of :class:`PlainTransport`."""

    def __init__(self, **options: Any) -> None:
        import httpcore2

        self._pool = httpcore2.AsyncConnectionPool(ssl_context=None, **_pool_options(options))


class _Routes:
    """The plain transport, and the TLS one made under a lock on the first ``https://`` request."""

    def __init__(self, plain, make_tls: Callable[[], Any]) -> None:
        self.plain, self.tls, self._make_tls, self._lock = plain, None, make_tls, threading.Lock()

    def pick(self, request: httpx2.Request):
        if request.url.scheme != "https":
            return self.plain
        if self.tls is None:
            with self._lock:
                if self.tls is None:
                    self.tls = self._make_tls()
        return self.tls

    def made(self) -> list:
        return [t for t in (self.plain, self.tls) if t is not None]


class SchemeTransport(httpx2.BaseTransport):
    def __init__(self, **options: Any) -> None:
        self.routes = _Routes(PlainTransport(**options), lambda: httpx2.HTTPTransport(**options))

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.routes.pick(request).handle_request(request)

    def close(self) -> None:
        for transport in self.routes.made():
            transport.close()


class AsyncSchemeTransport(httpx2.AsyncBaseTransport):
    def __init__(self, **options: Any) -> None:
        self.routes = _Routes(AsyncPlainTransport(**options), lambda: httpx2.AsyncHTTPTransport(**options))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self.routes.pick(request).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self.routes.made():
            await transport.aclose()


class Client(httpx2.Client):
    """``httpx2.Client`` whose default transport builds no SSL context for ``http://``."""

    def _init_transport(self, transport: httpx2.BaseTransport | None = None, **options: Any) -> httpx2.BaseTransport:
        return transport if transport is not None else SchemeTransport(**options)


class AsyncClient(httpx2.AsyncClient):
    """``httpx2.AsyncClient`` whose default transport builds no SSL context for ``http://``."""

    def _init_transport(self, transport: httpx2.AsyncBaseTransport | None = None,
                        **options: Any) -> httpx2.AsyncBaseTransport:
        return transport if transport is not None else AsyncSchemeTransport(**options)

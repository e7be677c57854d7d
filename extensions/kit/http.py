"""A small HTTP/1.1 client for the requests every Service makes: the API server's writes, Consul, the BIG-IP.

Why not aiohttp for these: a provisioned Service makes eight requests
(finalizer, result, Event, IP claim; Consul's read and transaction; the
F5's pool and virtual server), and aiohttp's request machinery cost the
controller about 0.19 ms of CPU each, against 0.06 ms here (bench/RESULTS.md:
"HTTP client").  What this client does is only what those calls need:

* keep-alive connections per client (one scheme, host and port), at most
  ``limit`` at once, an idle one dropped after ``keepalive`` seconds;
* TLS with the caller's context (verification, CA, client certificate) and
  the host as server name;
* ``Content-Length`` bodies out; ``Content-Length``, chunked or
  until-close bodies in, parsed by httptools (llhttp, the parser of
  Node.js; uvloop's authors keep the binding);
* ``Accept-Encoding: identity``; a gzip or deflate answer anyway (a proxy
  between may compress) is decompressed;
* a total timeout per request; a request cut short (timeout, cancel,
  error) drops its connection;
* like aiohttp, an idempotent request whose reused connection turns out to
  be closed by the server is sent once more on a new connection; a POST or
  PATCH is not (it may have been done).

No proxies, no redirects, no cookies, no HEAD: callers that
need those use aiohttp (the API server behind a proxy does).
"""

from __future__ import annotations

import asyncio
import re
import ssl as _ssl
import time
import zlib
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

import httptools

IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "OPTIONS"})
# What a request target may not hold: it would end the request line or smuggle another.
_UNSAFE_IN_TARGET = re.compile(r"[\s\0]")
USER_AGENT = "interlook"


class HttpProtocolError(ConnectionError):
    """The server's answer was not HTTP/1.1 we can read, or the connection ended before it was whole."""


class NotSent(HttpProtocolError):
    """The connection was found closed before the request was written: safe to send again, whatever the method."""


class ConnectFailed(ConnectionError):
    """No connection to the server (refused, unreachable, name unknown); ``os_error`` says why."""

    def __init__(self, address: str, os_error: OSError):
        self.os_error = os_error
        super().__init__(f"cannot connect to {address}: {os_error.strerror or os_error}")


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    # Header names in lower case; a repeated header keeps its last value.
    headers: dict[str, str]
    content: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.reused = False
        self.received = False  # any byte of the current answer
        self.idle_since = 0.0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._headers_done = False

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: a server talking out of turn is not to be trusted
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(f"unreadable HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self._headers_done and "content-length" not in self._headers \
                and "chunked" not in self._headers.get("transfer-encoding", "").lower():
            self._complete()  # a body that ends where the connection does (a clean close, not a reset)
            return
        if exc is not None and not isinstance(exc, ConnectionError):
            self._fail(exc)
        else:
            state = "in the middle of the answer" if self.received else "before answering"
            self._fail(HttpProtocolError(f"the server closed the connection {state}"))

    # -- httptools callbacks ------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reason, self._headers, self._body, self._headers_done = "", {}, [], False

    def on_status(self, status: bytes) -> None:
        self._reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            return  # informational (100 Continue, 103 Early Hints): the answer follows
        self._complete()
        if not self.parser.should_keep_alive():
            self.close()

    # -- ours ---------------------------------------------------------------------------
    def _complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        content = b"".join(self._body)
        coding = self._headers.get("content-encoding", "identity").strip().lower()
        if content and coding not in ("identity", ""):
            # Asked for none (Accept-Encoding: identity), but a proxy between may still compress.
            try:
                content = _decode(coding, content)
            except (ValueError, zlib.error) as exc:
                waiter.set_exception(HttpProtocolError(f"cannot read an answer in content coding {coding!r}: {exc}"))
                return
        waiter.set_result(Response(self.parser.get_status_code(), self._reason, self._headers, content))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None
        # Nothing of the last answer may be taken for this one's (an answer that ends with the connection).
        self.received, self._reason, self._headers, self._body, self._headers_done = False, "", {}, [], False
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        if self.transport.is_closing():  # closed under us: nothing is written, nothing would come
            waiter.set_exception(NotSent("the server closed the connection before the request was sent"))
            return waiter
        self.waiter = waiter
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def time_out(self) -> None:
        """The request's time is up: it fails, and the connection goes (a late answer must not be taken)."""
        self._fail(TimeoutError("no answer in time"))
        self.close()


@dataclass
class HttpClient:
    """Requests to one server: ``base_url`` is scheme, host, port and an optional path prefix."""

    base_url: str
    # None: the system's CAs for https; a context: what it says (CA, client certificate,
    # verification); False: no verification at all (the user's explicit choice).
    ssl: _ssl.SSLContext | bool | None = None
    timeout: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)
    limit: int = 100
    keepalive: float = 15.0
    _idle: list[_Connection] = field(default_factory=list, init=False)
    _open: int = field(default=0, init=False)  # connections in use or idle
    # Requests waiting for a connection, in order: each gets one handed over, or None to open one.
    _waiters: list[asyncio.Future[_Connection | None]] = field(default_factory=list, init=False)
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {self.base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._context = self._tls_context(parts.scheme)
        shown = f"[{self._host}]" if ":" in self._host else self._host
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        self._address = shown if default_port else f"{shown}:{self._port}"
        # No compression asked for: on the hot path it costs more CPU than it saves on a near network.
        self._head = _header_lines({"Host": self._address, "User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                    **self.headers})

    def _tls_context(self, scheme: str) -> _ssl.SSLContext | None:
        if scheme == "http":
            return None
        if isinstance(self.ssl, _ssl.SSLContext):
            return self.ssl
        context = _ssl.create_default_context()
        if self.ssl is False:
            context.check_hostname = False
            context.verify_mode = _ssl.CERT_NONE
        return context

    async def request(self, method: str, target: str, body: bytes | None = None,
                      headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Response:
        """``target``: the path (below the base URL's) with its query, already percent-encoded."""
        if method == "HEAD":
            raise ValueError("HEAD is not supported")
        if not method.isalpha() or _UNSAFE_IN_TARGET.search(target):
            raise ValueError(f"not a request line: {method!r} {target!r}")
        head = f"{method} {self._prefix}{target} HTTP/1.1\r\n".encode("latin-1") + self._head
        if headers:
            head += _header_lines(headers)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head += b"Content-Length: %d\r\n" % len(body or b"")
        data = head + b"\r\n" + (body or b"")
        loop = asyncio.get_running_loop()
        # One timer per request, not asyncio.timeout's machinery: this is every Service's hot path.
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            # Those already waiting for a connection come first.
            connection = (None if self._waiters else self._take_idle()) or await self._connect(deadline)
            waiter = connection.send(data)
            timer = loop.call_at(deadline, connection.time_out)
            try:
                response = await waiter
            except NotSent:
                self._drop(connection)
                continue  # nothing was written: once more, on another connection
            except HttpProtocolError:
                self._drop(connection)
                if connection.reused and not connection.received and method in IDEMPOTENT:
                    continue  # the server had closed it while idle: once more, on a new one
                raise
            except BaseException:  # timeout, cancel: what the connection carries is unknown
                self._drop(connection)
                raise
            finally:
                timer.cancel()
            self._release(connection)
            return response

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive:
                connection.reused = True
                return connection
            self._drop(connection)
        return None

    async def _connect(self, deadline: float) -> _Connection:
        """A new connection once fewer than ``limit`` are open (in use or idle); else wait for one, in turn."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            turn = len(self._waiters)  # at the back of the line; back at its head if woken for nothing
            while self._open >= self.limit:
                waiter: asyncio.Future[_Connection | None] = loop.create_future()
                self._waiters.insert(turn, waiter)
                turn = 0
                try:
                    handed = await waiter
                except BaseException:  # out of time or cancelled
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                    elif waiter.done() and not waiter.cancelled():  # woken, but it will not use its turn
                        handed = waiter.result()
                        if handed is None:
                            self._hand_over(None)
                        else:
                            self._release(handed)
                    raise
                if handed is not None:
                    handed.reused = True
                    return handed
                # a connection was dropped: a new one may be opened
            self._open += 1
            try:
                _, connection = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._context,
                    server_hostname=self._host if self._context is not None else None)
            except BaseException as exc:
                self._open -= 1
                self._hand_over(None)
                if isinstance(exc, OSError) and not isinstance(exc, _ssl.SSLError):
                    # (a certificate or handshake problem says more as it is)
                    raise ConnectFailed(self._address, exc) from exc
                raise
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.closed or self._closed:
            self._drop(connection)
            return
        connection.idle_since = now = time.monotonic()
        if not self._hand_over(connection):
            self._idle.append(connection)
        while self._idle and now - self._idle[0].idle_since >= self.keepalive:
            self._drop(self._idle.pop(0))  # the oldest, unused for too long

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1
        self._hand_over(None)

    def _hand_over(self, connection: _Connection | None) -> bool:
        """Give the first waiter a connection (or, None: leave to open one); False if nobody waits."""
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self._drop(connection)


def _decode(coding: str, content: bytes) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return zlib.decompress(content, wbits=zlib.MAX_WBITS | 16)
    if coding == "deflate":
        try:
            return zlib.decompress(content)  # as the RFC says: zlib-wrapped
        except zlib.error:
            return zlib.decompress(content, wbits=-zlib.MAX_WBITS)  # as many servers send it: raw
    raise ValueError("not supported")


def _header_lines(headers: Mapping[str, str]) -> bytes:
    out = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"header {name!r} holds a character a header cannot carry")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("latin-1")

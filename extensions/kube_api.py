"""An async client for the few requests Interlook itself makes to the API server.

kopf watches; the write-back (annotations, status, Events, the finalizer)
and the IPAllocation store make a handful of plain JSON requests per
Service.  The official client is blocking: each call costs a thread hop, and
its urllib3/http.client stack took about a fifth of the controller's CPU at
50 Services a second (bench/RESULTS.md).  This one speaks HTTP/1.1 on the
operator's loop through extensions/kit/http.py (aiohttp when a proxy is
configured).  Where the server is and who we are comes as
:class:`Credentials`: what a kubeconfig or a service account says (the kopf
layer reads them, controller/main.py), including a service-account token
that is rotated on disk; or, where the official client is at hand (tests),
its ``Configuration`` through :class:`ClientConfiguration`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import aiohttp
from yarl import URL

from extensions.kit.http import HttpClient

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = 30.0
RETRIES_ON_429 = 10
# A token file (a projected service-account token, rotated by the kubelet) is read again this often.
TOKEN_FILE_REREAD = 60.0


class ApiCredentials(Protocol):
    """Where the API server is and how to prove who we are."""

    @property
    def server(self) -> str: ...

    @property
    def proxy(self) -> str | None: ...

    def ssl_context(self) -> ssl.SSLContext: ...

    def auth_headers(self) -> dict[str, str]: ...


@dataclass
class Credentials:
    """What a kubeconfig or a service account gives: server, CA, client certificate, token or password.

    ``*_data`` values are base64, as a kubeconfig writes them.  A token read
    from ``token_path`` is read again every minute, like client-go does, so a
    rotated service-account token is picked up without a restart.
    """

    server: str
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None
    scheme: str | None = None   # of the token; "Bearer" when not said
    token: str | None = None
    token_path: str | None = None
    username: str | None = None
    password: str | None = None
    proxy: str | None = None
    _token_read_at: float = field(default=float("-inf"), repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context: the CA, the client certificate, and verification unless told off.

        A kubeconfig may say ``insecure-skip-tls-verify`` and still
        authenticate with a client certificate, so the certificate is loaded
        either way.
        """
        cadata = base64.b64decode(self.ca_data).decode() if self.ca_data else None
        context = ssl.create_default_context(cafile=self.ca_path or None, cadata=cadata)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certificate_path or self.certificate_data:
            with _pem_file(self.certificate_path, self.certificate_data) as cert, \
                    _pem_file(self.private_key_path, self.private_key_data) as key:
                context.load_cert_chain(cert, key or None)
        return context

    def auth_headers(self) -> dict[str, str]:
        if self.token_path and time.monotonic() - self._token_read_at >= TOKEN_FILE_REREAD:
            try:
                with open(self.token_path, encoding="utf-8") as f:
                    self.token = f.read().strip() or self.token
                self._token_read_at = time.monotonic()
            except OSError:
                pass  # keep the last one read; the API server says if it is no longer good
        if self.token:
            return {"Authorization": f"{self.scheme or 'Bearer'} {self.token}"}
        if self.username:
            pair = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}


class ClientConfiguration:
    """The official client's ``Configuration`` as credentials (tests, and code that has one at hand).

    Read at each request, so the client's refresh hook (an in-cluster token
    rotated on disk) runs first, as it would for the client's own calls.
    """

    def __init__(self, configuration: Any):
        self.configuration = configuration

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    @property
    def proxy(self) -> str | None:
        return getattr(self.configuration, "proxy", None) or None

    def ssl_context(self) -> ssl.SSLContext:
        c = self.configuration
        return Credentials(server=self.server, ca_path=c.ssl_ca_cert or None,
                           insecure=not getattr(c, "verify_ssl", True),
                           certificate_path=getattr(c, "cert_file", None) or None,
                           private_key_path=getattr(c, "key_file", None) or None).ssl_context()

    def auth_headers(self) -> dict[str, str]:
        headers = {str(s["key"]): str(s["value"]) for s in self.configuration.auth_settings().values()
                   if s.get("in") == "header" and s.get("value")}
        if not headers and getattr(self.configuration, "username", None):
            headers["Authorization"] = self.configuration.get_basic_auth_token()
        return headers


class KubeApiError(Exception):
    """The API server answered with an error status (``status``, ``reason`` as in its Status object)."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{method} {path}: {status} {reason}: {message}")


class KubeApi:
    """JSON requests to one API server; one connection pool, made on the loop that uses it."""

    def __init__(self, credentials: ApiCredentials):
        self.credentials = credentials
        self.host = credentials.server.rstrip("/")
        self._ssl = credentials.ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._http: HttpClient | None = None

    @classmethod
    def from_api_client(cls, api_client: Any) -> KubeApi:
        """From the official client's ApiClient (its configuration)."""
        return cls(ClientConfiguration(api_client.configuration))

    def use(self, credentials: ApiCredentials) -> None:
        """New credentials after a new login (an expired token): the next requests use them.

        A change of server or TLS material takes a new connection pool; the
        old one is closed once the requests already on it are done.
        """
        old = self.credentials
        self.credentials = credentials
        if credentials.server.rstrip("/") == self.host and _same_tls(old, credentials):
            return
        self.host = credentials.server.rstrip("/")
        self._ssl = credentials.ssl_context()
        loop = asyncio.get_running_loop()
        if self._session is not None:
            session, self._session = self._session, None
            loop.call_later(REQUEST_TIMEOUT, lambda: asyncio.ensure_future(session.close()))
        if self._http is not None:
            http, self._http = self._http, None
            loop.call_later(REQUEST_TIMEOUT, lambda: asyncio.ensure_future(http.close()))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- verbs -----------------------------------------------------------------
    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, body: Mapping[str, Any], *, decode: bool = True) -> Any:
        """``decode`` False: the answer is not needed (an Event, a claim), {} is returned without parsing it."""
        return await self.request("POST", path, body, decode=decode)

    async def patch(self, path: str, body: Mapping[str, Any], content_type: str = MERGE_PATCH, *,
                    decode: bool = True) -> Any:
        return await self.request("PATCH", path, body, content_type=content_type, decode=decode)

    async def delete(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return await self.request("DELETE", path, body)

    async def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                      content_type: str = JSON, decode: bool = True) -> Any:
        """The decoded JSON answer; KubeApiError on an error status."""
        headers = {"Accept": JSON, **self.credentials.auth_headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        for attempt in range(RETRIES_ON_429 + 1):
            status, reason, retry_after, content = await self._send(method, path, data, headers)
            # Like client-go: "come back later" (429, with Retry-After; e.g. a CRD's storage
            # still initialising) is waited for a few times before it counts as an error.
            if status == 429 and attempt < RETRIES_ON_429:
                await asyncio.sleep(retry_after)
                continue
            if status >= 400:
                raise _error(status, reason, content, method, path)
            break
        return json.loads(content) if content and decode else {}

    # -- internals ---------------------------------------------------------------
    async def _send(self, method: str, path: str, data: bytes | None,
                    headers: dict[str, str]) -> tuple[int, str, float, bytes]:
        """Status, reason, how long a 429 asks to wait, and the body."""
        if self.credentials.proxy:
            async with self._client().request(method, URL(self.host + path, encoded=True), data=data,
                                              headers=headers, proxy=self.credentials.proxy) as response:
                content = await response.read()
                return (response.status, response.reason or "", _retry_after(response.headers.get("Retry-After")),
                        content)
        if self._http is None:
            self._http = HttpClient(self.host, ssl=self._ssl, timeout=REQUEST_TIMEOUT)
        answer = await self._http.request(method, path, data, headers)
        return answer.status, answer.reason, _retry_after(answer.header("Retry-After")), answer.content

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        return self.credentials.auth_headers()


class _pem_file:
    """A PEM given as a path, or as base64 data written to a private temporary file for ssl to load."""

    def __init__(self, path: str | None, data: str | None):
        self.path, self.data, self._temporary = path, data, ""

    def __enter__(self) -> str:
        if self.path or not self.data:
            return self.path or ""
        descriptor, self._temporary = tempfile.mkstemp(suffix=".pem")
        with os.fdopen(descriptor, "wb") as f:
            f.write(base64.b64decode(self.data))
        return self._temporary

    def __exit__(self, *_: Any) -> None:
        if self._temporary:
            os.unlink(self._temporary)


def _same_tls(one: ApiCredentials, other: ApiCredentials) -> bool:
    if isinstance(one, Credentials) and isinstance(other, Credentials):
        fields = ("ca_path", "ca_data", "insecure", "certificate_path", "certificate_data", "private_key_path",
                  "private_key_data")
        return all(getattr(one, name) == getattr(other, name) for name in fields)
    return one is other


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or "1"), 0.1), 10.0)
    except ValueError:
        return 1.0


def _error(status: int, reason: str, content: bytes, method: str, path: str) -> KubeApiError:
    message = content.decode("utf-8", "replace")[:500]
    try:
        decoded = json.loads(content)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        message = str(decoded.get("message") or message)
        reason = str(decoded.get("reason") or reason)
    return KubeApiError(status, reason, message, method, path)


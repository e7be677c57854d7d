"""An async client for the few requests Interlook itself makes to the API server.

kopf watches; the write-back (annotations, status, Events, the finalizer)
and the IPAllocation store make a handful of plain JSON requests per
Service.  The official client is blocking: each call costs a thread hop, and
its urllib3/http.client stack took about a fifth of the controller's CPU at
50 Services a second (bench/RESULTS.md).  This one speaks aiohttp on the
operator's loop and takes everything it needs (server, CA, client
certificate, token, proxy) from the official client's ``Configuration``, so
in-cluster and kubeconfig set-ups work the same way as before, including a
service-account token that is rotated on disk.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any, Mapping

import aiohttp
from yarl import URL

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = 30.0
RETRIES_ON_429 = 10


class KubeApiError(Exception):
    """The API server answered with an error status (``status``, ``reason`` as in its Status object)."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{method} {path}: {status} {reason}: {message}")


class KubeApi:
    """JSON requests to one API server; one connection pool, made on the loop that uses it."""

    def __init__(self, configuration: Any):
        self.configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        self._ssl = _ssl_setting(configuration)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_api_client(cls, api_client: Any) -> KubeApi:
        return cls(api_client.configuration)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- verbs -----------------------------------------------------------------
    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: Mapping[str, Any], content_type: str = MERGE_PATCH) -> Any:
        return await self.request("PATCH", path, body, content_type=content_type)

    async def delete(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return await self.request("DELETE", path, body)

    async def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                      content_type: str = JSON) -> Any:
        """The decoded JSON answer; KubeApiError on an error status."""
        headers = {"Accept": JSON, **self._auth_headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        extra: dict[str, Any] = {}
        if getattr(self.configuration, "proxy", None):
            extra["proxy"] = self.configuration.proxy
        if getattr(self.configuration, "tls_server_name", None):
            extra["server_hostname"] = self.configuration.tls_server_name
        for attempt in range(RETRIES_ON_429 + 1):
            async with self._client().request(method, URL(self.host + path, encoded=True), data=data,
                                              headers=headers, **extra) as response:
                content = await response.read()
                status, reason, retry_after = response.status, response.reason or "", _retry_after(response)
            # Like client-go: "come back later" (429, with Retry-After; e.g. a CRD's storage
            # still initialising) is waited for a few times before it counts as an error.
            if status == 429 and attempt < RETRIES_ON_429:
                await asyncio.sleep(retry_after)
                continue
            if status >= 400:
                raise _error(status, reason, content, method, path)
            break
        return json.loads(content) if content else {}

    # -- internals ---------------------------------------------------------------
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        # The official client's own rules (BearerToken or authorization key, prefix);
        # reading them runs its refresh hook first, so an in-cluster token is re-read
        # from disk when it is due.
        headers = {str(s["key"]): str(s["value"]) for s in self.configuration.auth_settings().values()
                   if s.get("in") == "header" and s.get("value")}
        if not headers and getattr(self.configuration, "username", None):
            headers["Authorization"] = self.configuration.get_basic_auth_token()
        return headers


def _ssl_setting(configuration: Any) -> ssl.SSLContext:
    """The TLS context of the kubeconfig: its CA, its client certificate, and verification unless told off.

    A kubeconfig may say ``insecure-skip-tls-verify`` and still authenticate
    with a client certificate, so the certificate is loaded either way.
    """
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not getattr(configuration, "verify_ssl", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if getattr(configuration, "cert_file", None):
        context.load_cert_chain(configuration.cert_file, getattr(configuration, "key_file", None) or None)
    return context


def _retry_after(response: aiohttp.ClientResponse) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.1), 10.0)
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


"""A small async iControl REST client: token session, requests, and the appliance's errors.

Only what the provisioner needs.  The token is taken with
``/mgmt/shared/authn/login`` and renewed before it expires (and once more if
the appliance answers 401 anyway, e.g. after a restart dropped its tokens).
Errors keep the appliance's status and message, never a credential.

It speaks HTTP through extensions/kit/http.py: at 50 Services a second
httpx's connection pool alone took a fifth of the controller's CPU, and
aiohttp three times what that client takes per request (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

from extensions.kit.http import ConnectFailed, HttpClient
from extensions.provisioners.f5ltm.config import F5Config
from extensions.tls import verify_setting

log = logging.getLogger("interlook.provisioner.f5ltm.client")

_BUSY = (502, 503, 504)
# Only reads: on iControl REST even a PATCH can create (a policy draft), and a
# repeated DELETE that had worked turns into a 404.
_IDEMPOTENT = ("GET",)
_BUSY_RETRY_DELAYS = (0.1, 0.5)

# Renew the token when less than this share of its lifetime is left (at least 30 s).
_RENEW_SHARE = 0.1
_RENEW_MIN = 30.0


class BigIPError(Exception):
    """The BIG-IP answered with an error: HTTP status plus its own message."""

    def __init__(self, status: int, message: str, method: str, path: str):
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"BIG-IP answered {status} to {method} {path}: {message}")


class BigIPUnreachable(Exception):
    """No answer at all: connection refused, TLS failure, timeout."""


def uri_id(full_path: str) -> str:
    """``/Common/Drafts/p`` -> ``~Common~Drafts~p``, as iControl REST wants it in URIs."""
    return quote(full_path.replace("/", "~"), safe="~:.-_%")


def _describe_transport_error(exc: BaseException, url: str) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError) and hasattr(cause, "verify_message"):
            return (f"TLS certificate of {url} could not be verified ({cause.verify_message}); "
                    "set caFile to the CA that signed it")
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {url} failed ({cause.reason or cause})"
    if isinstance(exc, TimeoutError):
        return f"no answer from {url} in time ({type(exc).__name__})"
    if isinstance(exc, ConnectFailed):
        return f"cannot connect to {url}: {exc.os_error.strerror or exc.os_error or 'connection refused'}"
    return f"connection to {url} failed: {type(exc).__name__}: {exc}"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and its chain."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        cause = todo.pop()
        if cause is None or cause in out:
            continue
        out.append(cause)
        todo.extend((getattr(cause, "certificate_error", None), getattr(cause, "os_error", None),
                     cause.__cause__, cause.__context__))
    return out


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read in full."""

    status_code: int
    reason_phrase: str
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class BigIPClient:
    """One token session with one BIG-IP, shared by every message being handled."""

    def __init__(self, config: F5Config, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self._verify = verify_setting(config.ca_file, config.insecure_skip_verify)
        self._http: HttpClient | None = None  # made on the loop that uses it
        self._token = ""
        self._renew_at = 0.0
        self._login_lock = asyncio.Lock()

    async def close(self) -> None:
        """Give the token back (BIG-IP limits live tokens per user), then close the connections."""
        if self._token:
            try:
                await self._send("DELETE", f"/mgmt/shared/authz/tokens/{self._token}", None, self._token)
            except BigIPUnreachable:
                pass  # it expires on its own
            self._token = ""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- session -----------------------------------------------------------
    async def login(self) -> None:
        """Take a fresh token (the password goes in this request body only)."""
        body = {"username": self.config.username, "password": self.config.password,
                "loginProviderName": self.config.auth_provider}
        path = "/mgmt/shared/authn/login"
        response = await self._send("POST", path, body, token=None)
        if response.status_code == 401:
            raise BigIPError(401, f"login as {self.config.username!r} refused: "
                                  f"{_message(response)}", "POST", path)
        if response.status_code >= 400:
            raise BigIPError(response.status_code, _message(response), "POST", path)
        token = response.json().get("token") or {}
        value = str(token.get("token", ""))
        if not value:
            raise BigIPError(response.status_code, "login answer holds no token", "POST", path)
        lifetime = float(token.get("timeout") or 1200)
        self._token = value
        self._renew_at = self.clock() + lifetime - max(lifetime * _RENEW_SHARE, min(_RENEW_MIN, lifetime / 2))
        log.debug("logged in to %s, token valid for %.0fs", self.config.base_url, lifetime)

    async def _ensure_token(self, stale: str | None = None) -> str:
        async with self._login_lock:
            # Another message may have renewed it while we waited for the lock.
            if self._token and self._token != stale and self.clock() < self._renew_at:
                return self._token
            await self.login()
            return self._token

    # -- requests ------------------------------------------------------------
    def _client(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(self.config.base_url, ssl=self._verify, timeout=self.config.request_timeout,
                                    headers={"Content-Type": "application/json"})
        return self._http

    async def _send(self, method: str, path: str, body: Any, token: str | None) -> Answer:
        headers = {"X-F5-Auth-Token": token} if token else None
        # The path is quoted already (uri_id).
        data = json.dumps(body).encode() if body is not None else None
        try:
            answer = await self._client().request(method, path, data, headers)
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            raise BigIPUnreachable(_describe_transport_error(exc, self.config.base_url)) from None
        return Answer(answer.status, answer.reason, answer.content)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a call; BigIPError on an error status."""
        token = await self._ensure_token()
        response = await self._send(method, path, body, token)
        if response.status_code == 401:
            # Dropped or expired despite our bookkeeping: log in once more.
            token = await self._ensure_token(stale=token)
            response = await self._send(method, path, body, token)
        for delay in _BUSY_RETRY_DELAYS:
            # A busy appliance (restjavad) answers 502/503/504 now and then: a
            # read is asked again at once rather than failing the whole step
            # (and waiting out the core's backoff).
            if response.status_code not in _BUSY or method not in _IDEMPOTENT:
                break
            await asyncio.sleep(delay)
            response = await self._send(method, path, body, token)
        if response.status_code >= 400:
            raise BigIPError(response.status_code, _message(response), method, path.split("?")[0])
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {}

    async def get(self, path: str) -> Any | None:
        """The object at ``path``, or None when the BIG-IP says it does not exist."""
        try:
            return await self.request("GET", path)
        except BigIPError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, path: str) -> bool:
        """Delete; True when deleted, False when it was already gone."""
        try:
            await self.request("DELETE", path)
        except BigIPError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _message(response: Answer) -> str:
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] if text else response.reason_phrase
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return response.reason_phrase

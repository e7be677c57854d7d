"""A simulator of the F5 BIG-IP iControl REST API, for the f5ltm provisioner's tests.

A BIG-IP cannot run here, so this HTTPS server answers the part of iControl
REST that Interlook uses the way the public documentation describes it: token
login (``/mgmt/shared/authn/login``, ``X-F5-Auth-Token``, timeout and expiry,
401 on a bad or expired token), ``ltm/pool`` with its ``members``,
``ltm/node``, ``ltm/virtual`` and ``ltm/policy`` with drafts and publish,
partitions and ``~``-paths, and the appliance's error bodies
(``{"code": 404, "message": "01020036:3: ...", "errorStack": [], "apiError": 3}``).
Objects in use cannot be deleted, duplicates answer 409.

State lives in memory.  ``/__sim/*`` endpoints (no auth) let tests look at it
and inject faults: ``GET /__sim/stats`` (write counter), ``GET /__sim/state``,
``POST /__sim/faults`` (latency, a share of 5xx answers, down, failing
publish), ``POST /__sim/expire-tokens``, ``POST /__sim/reset``.

Run on its own: ``python -m tests.simulators.f5 --port 8443`` (user
``admin``, password ``admin``); it prints the URL and the CA file.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import ipaddress
import json
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from tests.simulators.tlsutil import SimulatorTLS, ensure_tls

VERSION = "15.1.8"
MAX_TOKEN_TIMEOUT = 36000
DEFAULT_TOKEN_TIMEOUT = 1200
BUILTIN_MONITORS = ("gateway_icmp", "http", "https", "icmp", "tcp", "tcp_half_open", "udp", "none")
BUILTIN_PARTITIONS = ("Common",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class F5Error(Exception):
    """An iControl REST error answer: status plus the appliance's message."""

    def __init__(self, status: int, message: str, *, api_error: int | None = 3):
        super().__init__(message)
        self.status = status
        self.message = message
        self.api_error = api_error

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.status, "message": self.message, "errorStack": []}
        if self.api_error is not None:
            body["apiError"] = self.api_error
        return body


# -- names and paths --------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9_.:%-][A-Za-z0-9_.:%-]*$")


def split_full_path(full_path: str) -> tuple[str, str, str]:
    """``/Common/Drafts/x`` -> (partition, subPath, name)."""
    parts = [p for p in full_path.split("/") if p]
    if len(parts) == 1:
        return "Common", "", parts[0]
    if len(parts) == 2:
        return parts[0], "", parts[1]
    return parts[0], "/".join(parts[1:-1]), parts[-1]


def path_from_uri_id(uri_id: str, default_partition: str = "Common") -> str:
    """The full path named by a URI component: ``~Common~p`` or ``p``."""
    if uri_id.startswith("~"):
        return uri_id.replace("~", "/")
    return f"/{default_partition}/{uri_id}"


def full_path_of(body: dict[str, Any], default_partition: str = "Common") -> str:
    """The full path named by a POST body: ``name`` plus ``partition``/``subPath``, or a ``/``-path name."""
    name = str(body.get("name", ""))
    if name.startswith("/"):
        return name
    partition = str(body.get("partition", default_partition) or default_partition)
    sub_path = str(body.get("subPath", "") or "")
    if "/" in name:  # e.g. "Drafts/p"
        return f"/{partition}/{name}"
    return f"/{partition}/{sub_path}/{name}" if sub_path else f"/{partition}/{name}"


def ref_path(value: str, partition: str) -> str:
    """A reference as BIG-IP stores it: names without a folder resolve in the object's partition."""
    value = value.strip()
    if not value or value.startswith("/"):
        return value
    return f"/{partition}/{value}"


def member_parts(name: str) -> tuple[str, int]:
    """``10.0.0.1:80`` -> (10.0.0.1, 80); IPv6 members use a dot: ``2001:db8::1.80``."""
    base = name.rsplit("/", 1)[-1]
    if base.count(":") > 1:
        host, _, port = base.rpartition(".")
    else:
        host, _, port = base.rpartition(":")
    if not host or not port.isdigit():
        raise F5Error(400, f"01070587:3: The requested pool member ({name}) has an invalid service port.")
    return host, int(port)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return True


# -- state ------------------------------------------------------------------


@dataclass
class Token:
    token: str
    user: str
    provider: str
    timeout: int
    start: float
    address: str

    def expires_at(self) -> float:
        return self.start + self.timeout


@dataclass
class Faults:
    latency: float = 0.0          # seconds added to every /mgmt answer
    error_rate: float = 0.0       # share of /mgmt/tm answers replaced by a 5xx
    error_status: int = 503
    down: bool = False            # connections are closed without an answer
    fail_publish: bool = False    # policy publish answers 400

    def update(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if not hasattr(self, key):
                raise F5Error(400, f"unknown fault {key!r}", api_error=None)
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class Stats:
    requests: int = 0
    writes: int = 0               # POST/PUT/PATCH/DELETE under /mgmt/tm, answered or not
    logins: int = 0
    unauthorized: int = 0
    errors_injected: int = 0
    listings: int = 0             # collections answered (one per page): what a bulk read costs the appliance
    by_method: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "writes": self.writes, "logins": self.logins,
                "unauthorized": self.unauthorized, "errors_injected": self.errors_injected,
                "listings": self.listings, "by_method": dict(self.by_method)}


class BigIPState:
    """The configuration objects, keyed by full path, with BIG-IP's rules on them."""

    def __init__(self) -> None:
        self.partitions: set[str] = set(BUILTIN_PARTITIONS)
        self.pools: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, dict[str, Any]]] = {}   # pool path -> member path -> member
        self.nodes: dict[str, dict[str, Any]] = {}
        self.virtuals: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}             # includes drafts (/P/Drafts/name)
        self.rules: dict[str, list[dict[str, Any]]] = {}           # policy path -> ordered rules
        self.generation = 1

    def bump(self) -> int:
        self.generation += 1
        return self.generation

    def snapshot(self) -> dict[str, Any]:
        return {
            "partitions": sorted(self.partitions),
            "pools": copy.deepcopy(self.pools),
            "members": copy.deepcopy(self.members),
            "nodes": copy.deepcopy(self.nodes),
            "virtuals": copy.deepcopy(self.virtuals),
            "policies": copy.deepcopy(self.policies),
            "rules": copy.deepcopy(self.rules),
        }

    def check_partition(self, full_path: str) -> None:
        partition = split_full_path(full_path)[0]
        if partition not in self.partitions:
            raise F5Error(400, f"01020036:3: The requested folder (/{partition}) was not found.")

    # -- helpers used by the seeding API and the tests -------------------
    def add_policy(self, full_path: str, *, strategy: str = "/Common/first-match",
                   requires: tuple[str, ...] = ("http",), controls: tuple[str, ...] = ("forwarding",),
                   status: str = "published") -> dict[str, Any]:
        partition, sub_path, name = split_full_path(full_path)
        policy = {"name": name, "partition": partition, "fullPath": full_path, "status": status,
                  "strategy": strategy, "requires": list(requires), "controls": list(controls),
                  "description": "", "generation": self.bump()}
        if sub_path:
            policy["subPath"] = sub_path
        self.policies[full_path] = policy
        self.rules.setdefault(full_path, [])
        return policy

    def drafts(self) -> list[str]:
        return sorted(p for p, pol in self.policies.items() if pol.get("status") == "draft")


# -- one dispatch for every collection ------------------------------------------

Item = dict[str, Any]
Answer = dict[str, Any] | None
METHOD_NOT_ALLOWED = "Method not allowed"


@dataclass(frozen=True)
class Resource:
    """What each method does on one iControl REST collection and on one of its items.

    Every collection answers the same way (GET lists, POST creates; on an item
    GET reads, PATCH and PUT modify, DELETE deletes; anything else is 405), so
    :func:`serve` holds that once and a collection only says what it does.
    """

    list: Callable[[], Answer]
    create: Callable[[Item], Answer]
    find: Callable[[str], Item]                       # a URI component -> the item, or F5Error 404
    read: Callable[[Item], Answer]
    modify: Callable[[Item, Item], Answer]            # PATCH and PUT (the method is on the request)
    delete: Callable[[Item], None]
    # Paths below an item (``members``, ``rules``...); None: the rest of the path is not looked at.
    below: Callable[[Item, list[str], Item], Answer] | None = None


def serve(resource: Resource, method: str, tail: list[str], body: Item) -> Answer:
    """Answer ``method`` on ``resource`` (``tail`` empty) or on the item ``tail`` names."""
    if not tail:
        if method == "GET":
            return resource.list()
        if method == "POST":
            return resource.create(body)
        raise F5Error(405, METHOD_NOT_ALLOWED, api_error=None)
    item = resource.find(tail[0])
    if len(tail) > 1 and resource.below is not None:
        return resource.below(item, tail[1:], body)
    if method == "GET":
        return resource.read(item)
    if method in ("PATCH", "PUT"):
        return resource.modify(item, body)
    if method == "DELETE":
        resource.delete(item)
        return None
    raise F5Error(405, METHOD_NOT_ALLOWED, api_error=None)


# -- the server ---------------------------------------------------------------


class F5Simulator:
    """An in-memory BIG-IP behind HTTPS; ``await start()`` gives the URL, ``ca_file`` the CA."""

    def __init__(self, *, username: str = "admin", password: str = "admin", host: str = "127.0.0.1",
                 port: int = 0, tls: SimulatorTLS | None = None, tls_dir: str | Path | None = None,
                 token_timeout: int = DEFAULT_TOKEN_TIMEOUT, seed: int | None = None):
        self.users = {username: password}
        self.host = host
        self.port = port
        self.tls = tls or ensure_tls(tls_dir)
        self.token_timeout = token_timeout
        self.state = BigIPState()
        self.tokens: dict[str, Token] = {}
        self.faults = Faults()
        self.stats = Stats()
        self._random = random.Random(seed)
        self._clock_offset = 0.0
        self._operation_id = 1000
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def ca_file(self) -> str:
        return str(self.tls.ca_file)

    def now(self) -> float:
        return time.time() + self._clock_offset

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/__sim/{what}", self._sim)
        app.router.add_route("*", "/mgmt/shared/authn/login", self._login)
        app.router.add_route("*", "/mgmt/shared/authz/tokens/{token}", self._token)
        app.router.add_route("*", "/mgmt/tm/sys/version", self._version)
        app.router.add_route("*", "/mgmt/tm/{module}/{collection}", self._tm)
        app.router.add_route("*", "/mgmt/tm/{module}/{collection}/{tail:.+}", self._tm)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls.server_context())
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the real port when 0 asked for a free one
        self.url = f"https://{self.host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> F5Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test controls (also reachable over /__sim) --------------------------
    def expire_tokens(self) -> None:
        """Every issued token is now past its expiry, as after a long pause."""
        for token in self.tokens.values():
            token.start -= token.timeout + 1

    def reset(self) -> None:
        self.state = BigIPState()
        self.tokens.clear()
        self.faults = Faults()
        self.stats = Stats()

    # -- plumbing ------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/__sim/"):
            return await self._guard(request, handler)
        self.stats.requests += 1
        self.stats.by_method[request.method] = self.stats.by_method.get(request.method, 0) + 1
        if path.startswith("/mgmt/tm/") and request.method != "GET":
            self.stats.writes += 1
        if self.faults.down:
            # An appliance that is down answers nothing: the connection just closes.
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError()
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if (path.startswith("/mgmt/tm/") and self.faults.error_rate
                and self._random.random() < self.faults.error_rate):
            self.stats.errors_injected += 1
            status = self.faults.error_status
            return web.json_response({"code": status, "message": "Service Unavailable", "errorStack": [],
                                      "apiError": 1}, status=status)
        return await self._guard(request, handler)

    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except F5Error as exc:
            if exc.status == 401:
                self.stats.unauthorized += 1
            return web.json_response(exc.body(), status=exc.status)
        except web.HTTPException:
            raise

    def _auth_error(self, message: str, request: web.Request) -> F5Error:
        self._operation_id += 1
        return F5Error(401, message, api_error=None)

    def _authenticate(self, request: web.Request) -> str:
        token_value = request.headers.get("X-F5-Auth-Token")
        if token_value is not None:
            token = self.tokens.get(token_value)
            if token is None:
                raise self._auth_error("X-F5-Auth-Token does not exist.", request)
            if self.now() >= token.expires_at():
                # BIG-IP drops an expired token: from then on it is unknown.
                del self.tokens[token_value]
                raise self._auth_error("X-F5-Auth-Token does not exist.", request)
            return token.user
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            import base64

            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                user, password = "", ""
            if self.users.get(user) == password and user:
                return user
        raise self._auth_error("Authorization failed: no user authentication header or token detected. "
                               "Uri:http://localhost:8100" + request.path + " Referrer:"
                               + (request.remote or "") + " Sender:" + (request.remote or ""), request)

    async def _json(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise F5Error(400, "Found invalid JSON body in the request.", api_error=1) from None
        if not isinstance(data, dict):
            raise F5Error(400, "Found invalid JSON body in the request.", api_error=1)
        return data

    def _link(self, request: web.Request, path: str) -> str:
        return f"https://localhost{path}?ver={VERSION}"

    # -- /__sim ----------------------------------------------------------------
    async def _sim(self, request: web.Request) -> web.StreamResponse:
        what = request.match_info["what"]
        if what == "stats" and request.method == "GET":
            return web.json_response(self.stats.to_dict())
        if what == "state" and request.method == "GET":
            return web.json_response(self.state.snapshot())
        if what == "faults" and request.method == "GET":
            return web.json_response(self.faults.__dict__)
        if what == "faults" and request.method in ("POST", "PUT"):
            data = await self._json(request)
            if data.get("clear"):
                self.faults = Faults()
                data = {k: v for k, v in data.items() if k != "clear"}
            self.faults.update(data)
            return web.json_response(self.faults.__dict__)
        if what == "expire-tokens" and request.method == "POST":
            self.expire_tokens()
            return web.json_response({"expired": len(self.tokens)})
        if what == "reset" and request.method == "POST":
            self.reset()
            return web.json_response({})
        if what == "seed" and request.method == "POST":
            data = await self._json(request)
            for partition in data.get("partitions", []):
                self.state.partitions.add(str(partition))
            for policy in data.get("policies", []):
                self.state.add_policy(str(policy["fullPath"]), requires=tuple(policy.get("requires", ["http"])))
            return web.json_response(self.state.snapshot())
        raise F5Error(404, f"unknown simulator endpoint {request.method} {request.path}", api_error=None)

    # -- authentication ------------------------------------------------------------
    async def _login(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise F5Error(405, METHOD_NOT_ALLOWED, api_error=None)
        body = await self._json(request)
        user = str(body.get("username", ""))
        password = str(body.get("password", ""))
        provider = str(body.get("loginProviderName", "") or "tmos")
        if provider not in ("tmos", "local") or self.users.get(user) != password or not user:
            # The appliance echoes the request without the password.
            echoed = {k: v for k, v in body.items() if k != "password"}
            self._operation_id += 1
            return web.json_response({"code": 401, "message": "Authentication failed.",
                                      "originalRequestBody": json.dumps(echoed),
                                      "referer": request.remote or "", "restOperationId": self._operation_id,
                                      "errorStack": [], "kind": ":resterrorresponse"}, status=401)
        self.stats.logins += 1
        value = secrets.token_hex(13).upper()
        token = Token(value, user, provider, self.token_timeout, self.now(), request.remote or "")
        self.tokens[value] = token
        return web.json_response({
            "username": user,
            "loginReference": {"link": f"https://localhost/mgmt/cm/system/authn/providers/{provider}/login"},
            "loginProviderName": provider,
            "token": self._token_body(token),
            "generation": 0,
            "lastUpdateMicros": 0,
        })

    def _token_body(self, token: Token) -> dict[str, Any]:
        micros = int(token.start * 1_000_000)
        return {
            "token": token.token,
            "name": token.token,
            "userName": token.user,
            "authProviderName": token.provider,
            "user": {"link": f"https://localhost/mgmt/shared/authz/users/{token.user}"},
            "groupReferences": [],
            "timeout": token.timeout,
            "startTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(token.start)) + ".000000-0000",
            "address": token.address,
            "partition": "[All]",
            "generation": 1,
            "lastUpdateMicros": micros,
            "expirationMicros": int(token.expires_at() * 1_000_000),
            "kind": "shared:authz:tokens:authtokenitemstate",
            "selfLink": f"https://localhost/mgmt/shared/authz/tokens/{token.token}",
        }

    async def _token(self, request: web.Request) -> web.StreamResponse:
        user = self._authenticate(request)
        value = request.match_info["token"]
        token = self.tokens.get(value)
        if token is None or token.user != user:
            raise F5Error(404, f"Object not found - {value}", api_error=None)
        if request.method == "GET":
            return web.json_response(self._token_body(token))
        if request.method == "PATCH":
            body = await self._json(request)
            timeout = int(body.get("timeout", token.timeout))
            if timeout > MAX_TOKEN_TIMEOUT:
                raise F5Error(400, f"Auth-token absolute timeout ({MAX_TOKEN_TIMEOUT} seconds) exceeded",
                              api_error=None)
            token.timeout = timeout
            return web.json_response(self._token_body(token))
        if request.method == "DELETE":
            del self.tokens[value]
            return web.json_response(self._token_body(token))
        raise F5Error(405, METHOD_NOT_ALLOWED, api_error=None)

    async def _version(self, request: web.Request) -> web.StreamResponse:
        self._authenticate(request)
        return web.json_response({
            "kind": "tm:sys:version:versionstats",
            "selfLink": self._link(request, "/mgmt/tm/sys/version"),
            "entries": {"https://localhost/mgmt/tm/sys/version/0": {"nestedStats": {"entries": {
                "Product": {"description": "BIG-IP"}, "Version": {"description": VERSION},
                "Build": {"description": "0.0.6"}}}}},
        })

    # -- /mgmt/tm --------------------------------------------------------------------
    async def _tm(self, request: web.Request) -> web.StreamResponse:
        self._authenticate(request)
        module = request.match_info["module"]
        collection = request.match_info["collection"]
        tail = [p for p in request.match_info.get("tail", "").split("/") if p]
        kind = f"{module}/{collection}"
        resources: dict[str, Callable[[web.Request], Resource]] = {
            "ltm/pool": self._pools, "ltm/node": self._nodes, "ltm/virtual": self._virtuals,
            "ltm/policy": self._policies}
        read_only = {"sys/folder": self._folder, "auth/partition": self._partition}
        if kind not in resources and kind not in read_only:
            raise F5Error(400, f"URI path /mgmt/tm/{kind} not registered.  Please verify URI is supported "
                               "and wait for /available suffix to be responsive.", api_error=1)
        body = await self._json(request) if request.method in ("POST", "PUT", "PATCH") else {}
        if kind in read_only:
            result = read_only[kind](request, tail, body)
        else:
            result = serve(resources[kind](request), request.method, tail, body)
        if result is None:
            return web.Response(status=200)
        return web.json_response(result)

    @staticmethod
    def _unregistered(request: web.Request) -> F5Error:
        return F5Error(404, f"Public URI path not registered: {request.path}", api_error=1)

    def _collection(self, request: web.Request, kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A collection, with iControl REST's ``$filter=partition eq P`` and ``$top``/``$skip`` paging."""
        self.stats.listings += 1
        wanted = re.fullmatch(r"\s*partition\s+eq\s+(\S+)\s*", request.query.get("$filter", ""))
        if wanted:
            items = [i for i in items if i.get("partition") == wanted.group(1)]
        answer: dict[str, Any] = {"kind": f"tm:{kind.replace('/', ':')}:{kind.rsplit('/', 1)[-1]}collectionstate",
                                  "selfLink": self._link(request, request.path)}
        top = request.query.get("$top", "")
        if not top.isdigit() or int(top) <= 0:
            return {**answer, "items": items}
        size, skip = int(top), int(request.query.get("$skip", "0") or 0)
        page = items[skip:skip + size]
        answer.update({"items": page, "currentItemCount": len(page), "itemsPerPage": size,
                       "pageIndex": skip // size + 1, "startIndex": skip + 1, "totalItems": len(items),
                       "totalPages": (len(items) + size - 1) // size})
        if skip + size < len(items):
            query = {**request.query, "$skip": str(skip + size)}
            answer["nextLink"] = f"https://localhost{request.path}?" + "&".join(
                f"{k}={v}" for k, v in {**query, "ver": VERSION}.items())
        return answer

    @staticmethod
    def _not_found(what: str, full_path: str) -> F5Error:
        return F5Error(404, f"01020036:3: The requested {what} ({full_path}) was not found.")

    @staticmethod
    def _exists(what: str, full_path: str) -> F5Error:
        partition = split_full_path(full_path)[0]
        return F5Error(409, f"01020066:3: The requested {what} ({full_path}) already exists in partition "
                            f"{partition}.")

    @staticmethod
    def _check_name(name: str) -> None:
        if not name or not _NAME.match(name):
            raise F5Error(400, f"01070022:3: The requested object name ({name}) is invalid.")

    # ---- folders / partitions (read-only here) ----
    def _folder(self, request: web.Request, tail: list[str], body: dict[str, Any]) -> dict[str, Any] | None:
        if request.method != "GET":
            raise F5Error(400, "folders are read-only in the simulator", api_error=1)
        items = [{"name": p, "fullPath": f"/{p}", "kind": "tm:sys:folder:folderstate"}
                 for p in sorted(self.state.partitions)]
        return self._collection(request, "sys/folder", items)

    def _partition(self, request: web.Request, tail: list[str], body: dict[str, Any]) -> dict[str, Any] | None:
        if request.method != "GET":
            raise F5Error(400, "partitions are read-only in the simulator", api_error=1)
        items = [{"name": p, "fullPath": p, "kind": "tm:auth:partition:partitionstate"}
                 for p in sorted(self.state.partitions)]
        if tail:
            name = tail[0].lstrip("~")
            if name not in self.state.partitions:
                raise self._not_found("partition", name)
            return next(i for i in items if i["name"] == name)
        return self._collection(request, "auth/partition", items)

    # ---- pools and members ----
    def _pool_view(self, request: web.Request, pool: dict[str, Any], expand: bool) -> dict[str, Any]:
        view = {"kind": "tm:ltm:pool:poolstate", **copy.deepcopy(pool)}
        uri = "/mgmt/tm/ltm/pool/" + pool["fullPath"].replace("/", "~")
        view["selfLink"] = self._link(request, uri)
        if view.get("monitor"):
            view["monitor"] = view["monitor"] + " "  # the appliance answers with a trailing space
        else:
            view.pop("monitor", None)
        members_ref: dict[str, Any] = {"link": self._link(request, uri + "/members"), "isSubcollection": True}
        if expand:
            members_ref["items"] = [self._member_view(request, pool, m)
                                    for m in self.state.members[pool["fullPath"]].values()]
        view["membersReference"] = members_ref
        return view

    def _member_view(self, request: web.Request, pool: dict[str, Any], member: dict[str, Any]) -> dict[str, Any]:
        view = {"kind": "tm:ltm:pool:members:membersstate", **copy.deepcopy(member)}
        uri = ("/mgmt/tm/ltm/pool/" + pool["fullPath"].replace("/", "~") + "/members/"
               + member["fullPath"].replace("/", "~"))
        view["selfLink"] = self._link(request, uri)
        return view

    def _find(self, objects: dict[str, dict[str, Any]], what: str, uri_id: str) -> dict[str, Any]:
        full_path = path_from_uri_id(uri_id)
        found = objects.get(full_path)
        if found is None:
            raise self._not_found(what, full_path)
        return found

    def _monitor(self, value: Any, partition: str) -> str:
        text = str(value or "").strip()
        if not text:
            return ""
        names = [ref_path(part, "Common") for part in re.split(r"\s+and\s+", text)]
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if not name.startswith("/Common/") or base not in BUILTIN_MONITORS:
                raise F5Error(400, f"01020036:3: The requested monitor rule ({name} on pool ) was not found.")
        return " and ".join(names)

    def _pools(self, request: web.Request) -> Resource:
        expand = request.query.get("expandSubcollections") == "true"

        def below(pool: Item, rest: list[str], body: Item) -> Answer:
            if rest[0] != "members":
                raise self._unregistered(request)
            return serve(self._members(request, pool), request.method, rest[1:], body)

        return Resource(
            list=lambda: self._collection(request, "ltm/pool",
                                          [self._pool_view(request, p, expand) for p in self.state.pools.values()]),
            create=lambda body: self._create_pool(request, body),
            find=lambda uri_id: self._find(self.state.pools, "Pool", uri_id),
            read=lambda pool: self._pool_view(request, pool, expand),
            modify=lambda pool, body: self._modify_pool(request, pool, body, replace=request.method == "PUT"),
            delete=self._delete_pool,
            below=below)

    def _create_pool(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        full_path = full_path_of(body)
        partition, _, name = split_full_path(full_path)
        self._check_name(name)
        self.state.check_partition(full_path)
        if full_path in self.state.pools:
            raise self._exists("Pool", full_path)
        pool = {"name": name, "partition": partition, "fullPath": full_path, "generation": self.state.bump(),
                "allowNat": "yes", "allowSnat": "yes", "description": str(body.get("description", "")),
                "loadBalancingMode": str(body.get("loadBalancingMode", "round-robin")),
                "minActiveMembers": 0, "queueOnConnectionLimit": "disabled", "serviceDownAction": "none",
                "monitor": self._monitor(body.get("monitor"), partition)}
        members = body.get("members") or []
        self.state.pools[full_path] = pool
        self.state.members[full_path] = {}
        try:
            for member in members:
                self._add_member(pool, member if isinstance(member, dict) else {"name": str(member)})
        except F5Error:
            del self.state.pools[full_path]
            del self.state.members[full_path]
            raise
        return self._pool_view(request, pool, False)

    def _modify_pool(self, request: web.Request, pool: dict[str, Any], body: dict[str, Any], *,
                     replace: bool) -> dict[str, Any]:
        allowed = {"description", "loadBalancingMode", "monitor", "members", "name", "partition", "fullPath",
                   "allowNat", "allowSnat", "minActiveMembers", "serviceDownAction", "kind", "generation",
                   "selfLink", "membersReference"}
        unknown = set(body) - allowed
        if unknown:
            raise F5Error(400, f"Query parameter or property {sorted(unknown)[0]} is invalid.", api_error=1)
        if "name" in body and str(body["name"]) not in (pool["name"], pool["fullPath"]):
            raise F5Error(400, "01070734:3: Configuration error: name cannot be changed.")
        if "description" in body:
            pool["description"] = str(body["description"])
        if "loadBalancingMode" in body:
            pool["loadBalancingMode"] = str(body["loadBalancingMode"])
        if "monitor" in body or replace:
            pool["monitor"] = self._monitor(body.get("monitor"), pool["partition"])
        if "members" in body:
            # Modifying a pool with a members list replaces the whole set.
            current = self.state.members[pool["fullPath"]]
            self.state.members[pool["fullPath"]] = {}
            try:
                for member in body["members"] or []:
                    self._add_member(pool, member if isinstance(member, dict) else {"name": str(member)})
            except F5Error:
                self.state.members[pool["fullPath"]] = current
                raise
        pool["generation"] = self.state.bump()
        return self._pool_view(request, pool, False)

    def _pool_users(self, full_path: str) -> list[str]:
        users = [f"Virtual Server ({v['fullPath']})" for v in self.state.virtuals.values()
                 if v.get("pool") == full_path]
        for policy_path, rules in self.state.rules.items():
            for rule in rules:
                if any(a.get("pool") == full_path for a in rule.get("actions", [])):
                    users.append(f"Policy Rule ({policy_path} {rule['name']})")
        return users

    def _delete_pool(self, pool: dict[str, Any]) -> None:
        users = self._pool_users(pool["fullPath"])
        if users:
            raise F5Error(400, f"01070265:3: The Pool ({pool['fullPath']}) cannot be deleted because it is in use "
                               f"by a {users[0]}.")
        del self.state.pools[pool["fullPath"]]
        del self.state.members[pool["fullPath"]]

    def _members(self, request: web.Request, pool: Item) -> Resource:
        members = self.state.members[pool["fullPath"]]

        def create(body: Item) -> Answer:
            member = self._add_member(pool, body)
            pool["generation"] = self.state.bump()
            return self._member_view(request, pool, member)

        def find(uri_id: str) -> Item:
            full_path = path_from_uri_id(uri_id, pool["partition"])
            found = members.get(full_path)
            if found is None:
                host, port = member_parts(full_path)
                raise self._not_found("Pool Member",
                                      f"{pool['fullPath']} {full_path.rsplit('/', 1)[0]}/{host} {port}")
            return found

        def modify(member: Item, body: Item) -> Answer:
            for key in ("ratio", "description", "connectionLimit", "priorityGroup", "session", "state"):
                if key in body:
                    member[key] = int(body[key]) if key in ("ratio", "connectionLimit", "priorityGroup") \
                        else str(body[key])
            if not 1 <= int(member["ratio"]) <= 100:
                raise F5Error(400, f"01070297:3: The ratio ({member['ratio']}) is out of range (1 - 100).")
            member["generation"] = self.state.bump()
            return self._member_view(request, pool, member)

        def delete(member: Item) -> None:
            del members[member["fullPath"]]
            pool["generation"] = self.state.bump()

        return Resource(
            list=lambda: self._collection(request, "ltm/pool/members",
                                          [self._member_view(request, pool, m) for m in members.values()]),
            create=create, find=find, read=lambda member: self._member_view(request, pool, member),
            modify=modify, delete=delete)

    def _add_member(self, pool: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        name = str(body.get("name", ""))
        partition = str(body.get("partition", pool["partition"]) or pool["partition"])
        full_path = name if name.startswith("/") else f"/{partition}/{name}"
        node_name, port = member_parts(full_path)
        node_partition = split_full_path(full_path)[0]
        node_path = f"/{node_partition}/{node_name}"
        address = str(body.get("address", "") or "")
        node = self.state.nodes.get(node_path)
        if node is None:
            address = address or node_name
            if not is_ip(address):
                raise F5Error(400, f"01020036:3: The requested Node ({node_path}) was not found.")
            # Like the appliance: a member on a new address creates its node.
            node = {"name": node_name, "partition": node_partition, "fullPath": node_path, "address": address,
                    "description": "", "generation": self.state.bump(), "connectionLimit": 0, "ratio": 1,
                    "monitor": "default", "session": "user-enabled", "state": "unchecked"}
            self.state.nodes[node_path] = node
        members = self.state.members[pool["fullPath"]]
        if full_path in members:
            raise F5Error(409, f"01020066:3: The requested Pool Member ({pool['fullPath']} {node_path} {port}) "
                               f"already exists in partition {pool['partition']}.")
        ratio = int(body.get("ratio", 1))
        if not 1 <= ratio <= 100:
            raise F5Error(400, f"01070297:3: The ratio ({ratio}) is out of range (1 - 100).")
        member = {"name": full_path.rsplit("/", 1)[-1], "partition": node_partition, "fullPath": full_path,
                  "address": node["address"], "ratio": ratio, "connectionLimit": int(body.get("connectionLimit", 0)),
                  "description": str(body.get("description", "")), "priorityGroup": 0,
                  "session": "user-enabled", "state": "unchecked", "monitor": "default",
                  "generation": self.state.bump()}
        members[full_path] = member
        return member

    # ---- nodes ----
    def _node_view(self, request: web.Request, node: Item) -> Item:
        uri = "/mgmt/tm/ltm/node/" + node["fullPath"].replace("/", "~")
        return {"kind": "tm:ltm:node:nodestate", **copy.deepcopy(node), "selfLink": self._link(request, uri)}

    def _nodes(self, request: web.Request) -> Resource:
        def create(body: Item) -> Answer:
            full_path = full_path_of(body)
            partition, _, name = split_full_path(full_path)
            self._check_name(name)
            self.state.check_partition(full_path)
            if full_path in self.state.nodes:
                raise self._exists("Node", full_path)
            address = str(body.get("address", "") or "")
            if not is_ip(address):
                raise F5Error(400, f"01070587:3: The requested node address ({address}) is invalid.")
            for other in self.state.nodes.values():
                if other["address"] == address and other["partition"] == partition:
                    raise F5Error(409, f"01020066:3: The requested Node ({other['fullPath']}) already exists in "
                                       f"partition {partition}.")
            node: Item = {
                "name": name, "partition": partition, "fullPath": full_path, "address": address,
                "description": str(body.get("description", "")), "generation": self.state.bump(),
                "connectionLimit": 0, "ratio": 1, "monitor": "default", "session": "user-enabled",
                "state": "unchecked"}
            self.state.nodes[full_path] = node
            return self._node_view(request, node)

        def modify(node: Item, body: Item) -> Answer:
            if "description" in body:
                node["description"] = str(body["description"])
            node["generation"] = self.state.bump()
            return self._node_view(request, node)

        def delete(node: Item) -> None:
            full_path = str(node["fullPath"])
            for pool_path, members in self.state.members.items():
                if any(m["address"] == node["address"] and m["partition"] == node["partition"]
                       for m in members.values()):
                    raise F5Error(400, f"01070110:3: Node address '{full_path}' is referenced by a member of "
                                       f"pool '{pool_path}'.")
            del self.state.nodes[full_path]

        return Resource(
            list=lambda: self._collection(request, "ltm/node",
                                          [self._node_view(request, n) for n in self.state.nodes.values()]),
            create=create, find=lambda uri_id: self._find(self.state.nodes, "Node", uri_id),
            read=lambda node: self._node_view(request, node), modify=modify, delete=delete)

    # ---- virtual servers ----
    _VIRTUAL_KEYS = {"name", "partition", "fullPath", "description", "destination", "pool", "ipProtocol", "mask",
                     "source", "sourceAddressTranslation", "profiles", "policies", "rules", "enabled", "disabled",
                     "kind", "generation", "selfLink", "translateAddress", "translatePort", "vlansDisabled",
                     "sourcePort"}

    def _virtual_view(self, request: web.Request, virtual: dict[str, Any]) -> dict[str, Any]:
        uri = "/mgmt/tm/ltm/virtual/" + virtual["fullPath"].replace("/", "~")
        view = {"kind": "tm:ltm:virtual:virtualstate", **copy.deepcopy(virtual),
                "selfLink": self._link(request, uri)}
        view.pop("profiles", None)
        view.pop("policies", None)
        view["profilesReference"] = {"link": self._link(request, uri + "/profiles"), "isSubcollection": True}
        view["policiesReference"] = {"link": self._link(request, uri + "/policies"), "isSubcollection": True}
        if not view.get("pool"):
            view.pop("pool", None)
        return view

    def _destination(self, value: Any, partition: str) -> str:
        text = ref_path(str(value or ""), partition)
        address = text.rsplit("/", 1)[-1]
        host, _, port = address.rpartition("." if address.count(":") > 1 else ":")
        if not is_ip(host) or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise F5Error(400, f"01070022:3: The requested destination ({text}) is invalid.")
        return text

    def _apply_virtual(self, virtual: dict[str, Any], body: dict[str, Any]) -> None:
        unknown = set(body) - self._VIRTUAL_KEYS
        if unknown:
            raise F5Error(400, f"Query parameter or property {sorted(unknown)[0]} is invalid.", api_error=1)
        partition = virtual["partition"]
        if "destination" in body:
            virtual["destination"] = self._destination(body["destination"], partition)
        if "pool" in body:
            pool = ref_path(str(body["pool"] or ""), partition)
            if pool and pool not in self.state.pools:
                raise F5Error(400, f"01070226:3: Pool {pool} does not exist.")
            virtual["pool"] = pool
        for key in ("description", "ipProtocol", "mask", "source"):
            if key in body:
                virtual[key] = str(body[key])
        if "sourceAddressTranslation" in body:
            snat = body["sourceAddressTranslation"] or {}
            virtual["sourceAddressTranslation"] = {"type": str(snat.get("type", "none"))}
        if "profiles" in body:
            virtual["profiles"] = [ref_path(p if isinstance(p, str) else p.get("name", ""), "Common")
                                   for p in body["profiles"] or []]
        if "policies" in body:
            policies = [ref_path(p if isinstance(p, str) else p.get("name", ""), partition)
                        for p in body["policies"] or []]
            for policy in policies:
                if self.state.policies.get(policy, {}).get("status") != "published":
                    raise self._not_found("policy", policy)
            virtual["policies"] = policies
        for other in self.state.virtuals.values():
            if other["fullPath"] != virtual["fullPath"] and other["destination"] == virtual["destination"] \
                    and other.get("ipProtocol") == virtual.get("ipProtocol"):
                raise F5Error(409, f"01070333:3: Virtual Server {virtual['fullPath']} illegally shares destination "
                                   f"address, source address, service port, ip-protocol, and route domain with "
                                   f"Virtual Server {other['fullPath']}.")

    def _virtuals(self, request: web.Request) -> Resource:
        def create(body: Item) -> Answer:
            full_path = full_path_of(body)
            partition, _, name = split_full_path(full_path)
            self._check_name(name)
            self.state.check_partition(full_path)
            if full_path in self.state.virtuals:
                raise self._exists("Virtual Server", full_path)
            if not body.get("destination"):
                raise F5Error(400, "01070022:3: The requested destination () is invalid.")
            virtual: Item = {"name": name, "partition": partition, "fullPath": full_path,
                             "description": "", "ipProtocol": "any", "mask": "255.255.255.255",
                             "source": "0.0.0.0/0", "sourceAddressTranslation": {"type": "none"},
                             "enabled": True, "pool": "", "profiles": ["/Common/fastL4"], "policies": [],
                             "generation": self.state.bump()}
            self._apply_virtual(virtual, body)
            self.state.virtuals[full_path] = virtual
            return self._virtual_view(request, virtual)

        def modify(virtual: Item, body: Item) -> Answer:
            updated = copy.deepcopy(virtual)
            self._apply_virtual(updated, body)
            updated["generation"] = self.state.bump()
            self.state.virtuals[virtual["fullPath"]] = updated
            return self._virtual_view(request, updated)

        def delete(virtual: Item) -> None:
            del self.state.virtuals[virtual["fullPath"]]

        def below(virtual: Item, rest: list[str], body: Item) -> Answer:
            if rest[0] in ("profiles", "policies") and request.method == "GET":
                items = [{"name": p.rsplit("/", 1)[-1], "fullPath": p} for p in virtual.get(rest[0], [])]
                return self._collection(request, f"ltm/virtual/{rest[0]}", items)
            raise self._unregistered(request)

        return Resource(
            list=lambda: self._collection(request, "ltm/virtual",
                                          [self._virtual_view(request, v) for v in self.state.virtuals.values()]),
            create=create, find=lambda uri_id: self._find(self.state.virtuals, "Virtual Server", uri_id),
            read=lambda virtual: self._virtual_view(request, virtual), modify=modify, delete=delete, below=below)

    # ---- policies, drafts and rules ----
    def _policy_view(self, request: web.Request, policy: dict[str, Any], expand: bool) -> dict[str, Any]:
        uri = "/mgmt/tm/ltm/policy/" + policy["fullPath"].replace("/", "~")
        view = {"kind": "tm:ltm:policy:policystate", **copy.deepcopy(policy), "selfLink": self._link(request, uri)}
        ref: dict[str, Any] = {"link": self._link(request, uri + "/rules"), "isSubcollection": True}
        if expand:
            ref["items"] = [self._rule_view(request, policy, r, True) for r in self.state.rules[policy["fullPath"]]]
        view["rulesReference"] = ref
        return view

    def _rule_view(self, request: web.Request, policy: dict[str, Any], rule: dict[str, Any],
                   expand: bool) -> dict[str, Any]:
        uri = "/mgmt/tm/ltm/policy/" + policy["fullPath"].replace("/", "~") + "/rules/" + rule["name"]
        view = {"kind": "tm:ltm:policy:rules:rulesstate", "name": rule["name"], "fullPath": rule["name"],
                "generation": rule["generation"], "ordinal": rule["ordinal"],
                "selfLink": self._link(request, uri)}
        if rule.get("description"):
            view["description"] = rule["description"]
        for sub in ("conditions", "actions"):
            ref: dict[str, Any] = {"link": self._link(request, f"{uri}/{sub}"), "isSubcollection": True}
            if expand:
                ref["items"] = [{"kind": f"tm:ltm:policy:rules:{sub}:{sub}state", "fullPath": item["name"],
                                 "generation": rule["generation"], **copy.deepcopy(item)}
                                for item in rule.get(sub, [])]
            view[f"{sub}Reference"] = ref
        return view

    def _policies(self, request: web.Request) -> Resource:
        expand = request.query.get("expandSubcollections") == "true"

        def create(body: Item) -> Answer:
            if body.get("command") == "publish":
                return self._publish(body)
            return self._create_policy(request, body)

        def modify(policy: Item, body: Item) -> Answer:
            if request.query.get("options") == "create-draft" or body.get("createDraft"):
                return self._create_draft(request, policy)
            self._require_draft(policy)
            for key in ("description", "strategy"):
                if key in body:
                    policy[key] = str(body[key])
            if "rules" in body:
                self.state.rules[policy["fullPath"]] = []
                for rule in body["rules"] or []:
                    self._add_rule(policy, rule)
            policy["generation"] = self.state.bump()
            return self._policy_view(request, policy, False)

        def delete(policy: Item) -> None:
            users = [v["fullPath"] for v in self.state.virtuals.values()
                     if policy["fullPath"] in v.get("policies", [])]
            if users:
                raise F5Error(400, f"01071726:3: Cannot delete policy {policy['fullPath']} because it is in use "
                                   f"by virtual server {users[0]}.")
            del self.state.policies[policy["fullPath"]]
            del self.state.rules[policy["fullPath"]]

        def below(policy: Item, rest: list[str], body: Item) -> Answer:
            if rest[0] != "rules":
                raise self._unregistered(request)
            return serve(self._rules(request, policy, expand), request.method, rest[1:], body)

        return Resource(
            list=lambda: self._collection(request, "ltm/policy", [self._policy_view(request, p, expand)
                                                                  for p in self.state.policies.values()]),
            create=create, find=lambda uri_id: self._find(self.state.policies, "policy", uri_id),
            read=lambda policy: self._policy_view(request, policy, expand), modify=modify, delete=delete,
            below=below)

    def _create_policy(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        full_path = full_path_of(body)
        partition, sub_path, name = split_full_path(full_path)
        self._check_name(name)
        self.state.check_partition(full_path)
        if sub_path != "Drafts":
            raise F5Error(400, f"01071ad3:3: Policy '{full_path}' must be created in the Drafts folder; only draft "
                               "policies can be created or modified.")
        if full_path in self.state.policies:
            raise self._exists("policy", full_path)
        policy = self.state.add_policy(full_path, strategy=ref_path(str(body.get("strategy", "first-match")),
                                                                     "Common"),
                                       requires=tuple(body.get("requires", ["http"])),
                                       controls=tuple(body.get("controls", ["forwarding"])), status="draft")
        policy["description"] = str(body.get("description", ""))
        for rule in body.get("rules") or []:
            self._add_rule(policy, rule)
        return self._policy_view(request, policy, False)

    def _create_draft(self, request: web.Request, policy: dict[str, Any]) -> dict[str, Any]:
        if policy.get("status") != "published":
            raise F5Error(400, f"01071ad4:3: Cannot create a draft of policy '{policy['fullPath']}': it is a draft.")
        partition, _, name = split_full_path(policy["fullPath"])
        draft_path = f"/{partition}/Drafts/{name}"
        if draft_path in self.state.policies:
            raise self._exists("policy", draft_path)
        draft = copy.deepcopy(policy)
        draft.update({"fullPath": draft_path, "subPath": "Drafts", "status": "draft",
                      "generation": self.state.bump()})
        self.state.policies[draft_path] = draft
        self.state.rules[draft_path] = copy.deepcopy(self.state.rules[policy["fullPath"]])
        return self._policy_view(request, draft, False)

    def _publish(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body.get("name", ""))
        draft_path = name if name.startswith("/") else f"/{body.get('partition', 'Common')}/{name}"
        draft = self.state.policies.get(draft_path)
        if draft is None or draft.get("status") != "draft":
            raise self._not_found("policy", draft_path)
        if self.faults.fail_publish:
            raise F5Error(400, f"01071ad8:3: Policy '{draft_path}' cannot be published: the simulator was told to "
                               "fail publishing.")
        partition, _, policy_name = split_full_path(draft_path)
        published_path = f"/{partition}/{policy_name}"
        published = copy.deepcopy(draft)
        published.pop("subPath", None)
        published.update({"fullPath": published_path, "status": "published", "generation": self.state.bump()})
        self.state.policies[published_path] = published
        self.state.rules[published_path] = self.state.rules.pop(draft_path)
        del self.state.policies[draft_path]
        return {"kind": "tm:ltm:policy:policystate", "command": "publish", "name": name}

    def _require_draft(self, policy: dict[str, Any]) -> None:
        if policy.get("status") != "draft":
            raise F5Error(400, f"01071726:3: Policy '{policy['fullPath']}' is published; only a draft policy can be "
                               "modified (create a draft first).")

    def _normalize_rule(self, policy: dict[str, Any], body: dict[str, Any], ordinal: int) -> dict[str, Any]:
        name = str(body.get("name", ""))
        self._check_name(name)
        rule: dict[str, Any] = {"name": name, "ordinal": int(body.get("ordinal", ordinal)),
                                "description": str(body.get("description", "")), "generation": self.state.bump(),
                                "conditions": [], "actions": []}
        for index, condition in enumerate(body.get("conditions") or []):
            item = {k: v for k, v in condition.items() if k not in ("kind", "fullPath", "generation", "selfLink")}
            item["name"] = str(item.get("name", index))
            if "values" in item:
                item["values"] = [str(v) for v in item["values"]]
            rule["conditions"].append(self._condition_defaults(item, index))
        for index, action in enumerate(body.get("actions") or []):
            item = {k: v for k, v in action.items() if k not in ("kind", "fullPath", "generation", "selfLink")}
            item["name"] = str(item.get("name", index))
            if "pool" in item:
                pool = ref_path(str(item["pool"]), policy["partition"])
                if pool not in self.state.pools:
                    raise F5Error(400, f"01070712:3: Values ({pool}) specified for Policy '{policy['fullPath']}' "
                                       f"rule '{name}' action '{item['name']}': pool not found.")
                item["pool"] = pool
            rule["actions"].append(item)
        return rule

    @staticmethod
    def _condition_defaults(condition: dict[str, Any], index: int) -> dict[str, Any]:
        """The flags BIG-IP adds to a stored condition, as its answers show them (tests/fixtures/f5/README.md).

        String comparisons ignore case unless the condition says
        ``caseSensitive``; ``external``, ``present`` and ``remote`` are the
        defaults of the condition's other choices; ``index`` is its position.
        """
        defaults: dict[str, Any] = {"external": True, "index": index, "present": True, "remote": True}
        if not condition.get("caseSensitive"):
            defaults["caseInsensitive"] = True
        return {**defaults, **condition}

    def _add_rule(self, policy: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        rules = self.state.rules[policy["fullPath"]]
        if any(r["name"] == body.get("name") for r in rules):
            raise F5Error(409, f"01020066:3: The requested policy rule ({policy['fullPath']} {body.get('name')}) "
                               f"already exists in partition {policy['partition']}.")
        rule = self._normalize_rule(policy, body, max((r["ordinal"] for r in rules), default=-1) + 1)
        rules.append(rule)
        return rule

    def _rules(self, request: web.Request, policy: Item, expand: bool) -> Resource:
        rules = self.state.rules[policy["fullPath"]]

        def position(rule: Item) -> int:
            return next(i for i, r in enumerate(rules) if r is rule)

        def create(body: Item) -> Answer:
            self._require_draft(policy)
            rule = self._add_rule(policy, body)
            return self._rule_view(request, policy, rule, True)

        def find(name: str) -> Item:
            rule = next((r for r in rules if r["name"] == name), None)
            if rule is None:
                raise self._not_found("policy rule", f"{policy['fullPath']} {name}")
            return rule

        def modify(rule: Item, body: Item) -> Answer:
            self._require_draft(policy)
            merged = {"name": rule["name"], "ordinal": rule["ordinal"], "description": rule.get("description", "")}
            if request.method == "PATCH":
                merged.update({"conditions": rule["conditions"], "actions": rule["actions"]})
            merged.update({k: v for k, v in body.items() if k != "name"})
            index = position(rule)
            rules[index] = self._normalize_rule(policy, merged, rule["ordinal"])
            return self._rule_view(request, policy, rules[index], True)

        def delete(rule: Item) -> None:
            self._require_draft(policy)
            del rules[position(rule)]

        def below(rule: Item, rest: list[str], body: Item) -> Answer:
            if rest[0] in ("conditions", "actions") and request.method == "GET":
                items = rule.get(rest[0], [])
                return self._collection(request, f"ltm/policy/rules/{rest[0]}", copy.deepcopy(items))
            raise self._unregistered(request)

        return Resource(
            list=lambda: self._collection(request, "ltm/policy/rules",
                                          [self._rule_view(request, policy, r, expand) for r in rules]),
            create=create, find=find, read=lambda rule: self._rule_view(request, policy, rule, expand),
            modify=modify, delete=delete, below=below)


# -- running it on its own ---------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="F5 BIG-IP iControl REST simulator (HTTPS)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--tls-dir", default=None, help="where the CA and server certificate live (shared)")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--policy", action="append", default=[],
                        help="a published LTM policy to create at start, e.g. /Common/global-http")
    args = parser.parse_args(argv)

    async def run() -> None:
        simulator = F5Simulator(username=args.username, password=args.password, host=args.host, port=args.port,
                                tls_dir=args.tls_dir)
        for path in args.policy:
            simulator.state.add_policy(path)
        url = await simulator.start()
        print(f"export INTERLOOK_F5_URL={url}", flush=True)
        print(f"export INTERLOOK_SIM_CA={simulator.ca_file}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await simulator.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

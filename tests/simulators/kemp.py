"""A Kemp LoadMaster simulator: the RESTful API (APIv1) over HTTPS, in memory.

A LoadMaster cannot run here, so the provisioner is tested against this
server, written from Kemp's public "RESTful API" interface description and
programmer guide (examples in ``tests/fixtures/kemp/``, which the simulator's
own tests replay):

* commands are ``/access/<command>`` with query parameters (GET) or a form
  body (POST, which the docs recommend to keep parameters out of URLs);
  unknown parameters are ignored, as documented;
* authentication is HTTP basic auth, or an ``apikey`` parameter;
* every answer is ``<?xml version="1.0" encoding="ISO-8859-1"?><Response
  stat="200" code="ok">...`` and the HTTP status equals ``stat``; failures
  are ``<Response stat="422" code="fail"><Error>Unknown VS</Error></Response>``
  style bodies (400 for a missing mandatory parameter, 401 without valid
  credentials);
* a Virtual Service is named by ``vs`` (address) + ``port`` + ``prot`` or by
  its index alone; a Real Server by ``rs`` + ``rsport`` or ``!<RsIndex>``.

Only what Interlook uses is modelled: ``listvs``, ``showvs``, ``addvs``,
``modvs``, ``delvs``, ``showrs``, ``addrs``, ``modrs``, ``delrs``.

A VS nickname is held to the characters Kemp documents for a Virtual
Service's name (WUI configuration guide, "SubVS WUI Options", Service Name):
letters and digits plus ``. @ - _``, a letter or digit first.  Kemp documents
no maximum length and no error text for it: the simulator accepts any length
and answers ``422`` ``Invalid nickname: <value>`` (the form of its other
bad-value answers).

For tests it counts requests and successful writes and can be told to fail:
``GET /__sim/stats``, ``POST /__sim/faults`` (JSON ``latency`` seconds,
``error_rate`` 0..1 answered with ``error_status`` (503), ``down``: the
connection is dropped without an answer), ``DELETE /__sim/faults``,
``POST /__sim/reset``, ``POST /__sim/plant`` (JSON ``address``, ``port``,
``nickname``, optional ``real_servers`` ``[[address, port], ...]``: a VS put
straight into the appliance's state, past the API's checks, as an older tool or
a person at the console may have left it).  The control endpoints need no
credentials.

Run on its own: ``python -m tests.simulators.kemp --port 8443 [--tls-dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import random
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from xml.sax.saxutils import escape

from aiohttp import web

from tests.simulators.tlsutil import SimulatorTLS, ensure_tls

XML_HEADER = '<?xml version="1.0" encoding="ISO-8859-1"?>'
COMPLETED = "Command completed ok"
DEFAULT_WEIGHT = 1000
WRITE_COMMANDS = frozenset({"addvs", "modvs", "delvs", "addrs", "modrs", "delrs"})
VS_TYPES = ("gen", "http", "http2", "ts", "tls", "log")
# What Kemp documents for a Virtual Service's name; empty clears it.
NICKNAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.@_-]*)?$")
CHECK_TYPES = ("icmp", "https", "http", "smtp", "nntp", "ftp", "telnet", "pop3", "imap", "rdp", "ldap", "none", "tcp",
               "dns", "sip", "l7")


class KempFailure(Exception):
    """An error answer of the appliance: HTTP status = ``stat``, text in ``<Error>``."""

    def __init__(self, status: int, text: str):
        self.status = status
        self.text = text
        super().__init__(f"{status} {text}")


def _unknown_vs() -> KempFailure:
    return KempFailure(422, "Unknown VS")


def _unknown_rs() -> KempFailure:
    return KempFailure(422, "Unknown RS")


@dataclass
class RealServer:
    index: int
    address: str
    port: int
    weight: int = DEFAULT_WEIGHT
    forward: str = "nat"
    enable: bool = True
    limit: int = 0
    critical: bool = False

    def fields(self, vs_index: int) -> list[tuple[str, Any]]:
        return [
            ("Status", "Down"), ("VSIndex", vs_index), ("RsIndex", self.index), ("Addr", self.address),
            ("Port", self.port), ("DnsName", ""), ("Forward", self.forward), ("Weight", self.weight),
            ("Limit", self.limit), ("Follow", 0), ("Enable", _yn(self.enable)), ("Critical", _yn(self.critical)),
        ]


@dataclass
class VirtualService:
    index: int
    address: str
    port: int
    protocol: str
    nickname: str = ""
    vstype: str = "http"
    checktype: str = "http"
    enable: bool = True
    transparent: bool = False
    schedule: str = "rr"
    real_servers: dict[int, RealServer] = field(default_factory=dict)

    def fields(self) -> list[tuple[str, Any]]:
        # Element names and order as in the programmer guide's addvs/listvs examples.
        return [
            ("Status", "Down"), ("Index", self.index), ("VSAddress", self.address), ("VSPort", self.port),
            ("Layer", 7), ("NickName", self.nickname), ("Enable", _yn(self.enable)), ("SSLReverse", "N"),
            ("SSLReencrypt", "N"), ("Intercept", "N"),
            ("InterceptOpts", [("Opt", "opnormal"), ("Opt", "auditnone"), ("Opt", "reqdatadisable"),
                               ("Opt", "resdatadisable")]),
            ("AlertThreshold", 0), ("Transactionlimit", 0), ("Transparent", _yn(self.transparent)),
            ("ServerInit", 0), ("StartTLSMode", 0), ("Idletime", 0), ("Cache", "N"), ("Compress", "N"),
            ("Verify", 0), ("UseforSnat", "N"), ("ForceL7", "Y"), ("ClientCert", 0), ("ErrorCode", 0),
            ("CheckUse1.1", "N"), ("MatchLen", 0), ("CheckUseGet", 0), ("SSLRewrite", 0), ("VStype", self.vstype),
            ("FollowVSID", 0), ("Protocol", self.protocol), ("Schedule", self.schedule),
            ("CheckType", self.checktype), ("PersistTimeout", 0), ("CheckPort", 0), ("NRules", 0),
            ("NRequestRules", 0), ("NResponseRules", 0), ("NPreProcessRules", 0), ("EspEnabled", "N"),
            ("InputAuthMode", 0), ("OutputAuthMode", 0), ("MasterVS", 0), ("MasterVSID", 0), ("AddVia", 0),
            ("TlsType", "N"), ("NeedHostName", "N"), ("NumberOfRSs", len(self.real_servers)),
        ] + [("Rs", rs.fields(self.index)) for rs in self.real_servers.values()]


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


def _render(items: list[tuple[str, Any]]) -> str:
    parts = []
    for tag, value in items:
        inner = _render(value) if isinstance(value, list) else escape(str(value))
        parts.append(f"<{tag}>{inner}</{tag}>")
    return "".join(parts)


def success_body(inner: str) -> str:
    return f'{XML_HEADER}<Response stat="200" code="ok"><Success>{inner}</Success></Response>'


def error_body(status: int, text: str) -> str:
    return f'{XML_HEADER}<Response stat="{status}" code="fail"><Error>{escape(text)}</Error></Response>'


@dataclass
class Faults:
    latency: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    down: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"latency": self.latency, "error_rate": self.error_rate, "error_status": self.error_status,
                "down": self.down}


class LoadMaster:
    """The appliance's state and command semantics, free of HTTP."""

    def __init__(self) -> None:
        self.virtual_services: dict[int, VirtualService] = {}
        self._next_vs = 1
        self._next_rs = 1

    # -- lookups ------------------------------------------------------------
    def find_vs(self, params: Mapping[str, str]) -> VirtualService:
        vs = _required(params, "vs")
        if vs.isdigit() and "port" not in params:
            found = self.virtual_services.get(int(vs))
            if found is None:
                raise _unknown_vs()
            return found
        port = _port(params, "port")
        prot = _required(params, "prot").lower()
        for candidate in self.virtual_services.values():
            if candidate.address == vs and candidate.port == port and candidate.protocol == prot:
                return candidate
        raise _unknown_vs()

    def _at(self, address: str, port: int, protocol: str) -> VirtualService | None:
        for candidate in self.virtual_services.values():
            if candidate.address == address and candidate.port == port and candidate.protocol == protocol:
                return candidate
        return None

    @staticmethod
    def find_rs(vs: VirtualService, params: Mapping[str, str]) -> RealServer:
        rs = _required(params, "rs")
        if rs.startswith("!"):
            index = rs[1:]
            found = vs.real_servers.get(int(index)) if index.isdigit() else None
            if found is None:
                raise _unknown_rs()
            return found
        port = _port(params, "rsport")
        for candidate in vs.real_servers.values():
            if candidate.address == rs and candidate.port == port:
                return candidate
        raise _unknown_rs()

    # -- commands -------------------------------------------------------------
    def listvs(self, params: Mapping[str, str]) -> str:
        return success_body("<Data>" + "".join(f"<VS>{_render(vs.fields())}</VS>"
                                               for vs in self.virtual_services.values()) + "</Data>")

    def showvs(self, params: Mapping[str, str]) -> str:
        return success_body(f"<Data>{_render(self.find_vs(params).fields())}</Data>")

    def addvs(self, params: Mapping[str, str]) -> str:
        address = _address(params, "vs")
        port = _port(params, "port")
        prot = _protocol(params)
        if self._at(address, port, prot) is not None:
            raise KempFailure(422, "Virtual Service already exists")
        vs = VirtualService(index=self._next_vs, address=address, port=port, protocol=prot)
        self._apply_vs_options(vs, params)
        self.virtual_services[vs.index] = vs
        self._next_vs += 1
        return success_body(f"<Data>{_render(vs.fields())}</Data>")

    def modvs(self, params: Mapping[str, str]) -> str:
        vs = self.find_vs(params)
        address = _address(params, "vsaddress") if params.get("vsaddress") else vs.address
        port = _port(params, "vsport") if params.get("vsport") else vs.port
        other = self._at(address, port, vs.protocol)
        if other is not None and other is not vs:
            raise KempFailure(422, "Virtual Service already exists")
        self._apply_vs_options(vs, params)
        vs.address, vs.port = address, port
        return success_body(f"<Data>{_render(vs.fields())}</Data>")

    def delvs(self, params: Mapping[str, str]) -> str:
        vs = self.find_vs(params)
        del self.virtual_services[vs.index]
        return success_body(COMPLETED)

    def showrs(self, params: Mapping[str, str]) -> str:
        vs = self.find_vs(params)
        rs = self.find_rs(vs, params)
        return success_body(f"<Data><Rs>{_render(rs.fields(vs.index))}</Rs></Data>")

    def addrs(self, params: Mapping[str, str]) -> str:
        vs = self.find_vs(params)
        address = _address(params, "rs")
        port = _port(params, "rsport")
        if any(rs.address == address and rs.port == port for rs in vs.real_servers.values()):
            raise KempFailure(422, "RS already exists")
        rs = RealServer(index=self._next_rs, address=address, port=port)
        self._apply_rs_options(rs, params)
        vs.real_servers[rs.index] = rs
        self._next_rs += 1
        return success_body(COMPLETED)

    def modrs(self, params: Mapping[str, str]) -> str:
        vs = self.find_vs(params)
        rs = self.find_rs(vs, params)
        new_port = _port(params, "newport") if params.get("newport") else rs.port
        self._apply_rs_options(rs, params)
        rs.port = new_port
        return success_body(COMPLETED)

    def delrs(self, params: Mapping[str, str]) -> str:
        vs = self.find_vs(params)
        rs = self.find_rs(vs, params)
        del vs.real_servers[rs.index]
        return success_body(COMPLETED)

    # -- option parsing -------------------------------------------------------
    @staticmethod
    def _apply_vs_options(vs: VirtualService, params: Mapping[str, str]) -> None:
        if "nickname" in params:
            if not NICKNAME.match(params["nickname"]):
                raise KempFailure(422, f"Invalid nickname: {params['nickname']}")
            vs.nickname = params["nickname"]
        if "vstype" in params:
            vs.vstype = _choice(params, "vstype", VS_TYPES)
        if "checktype" in params:
            vs.checktype = _choice(params, "checktype", CHECK_TYPES)
        if "enable" in params:
            vs.enable = _flag(params, "enable")
        if "transparent" in params:
            vs.transparent = _flag(params, "transparent")
        if "schedule" in params:
            vs.schedule = params["schedule"]

    @staticmethod
    def _apply_rs_options(rs: RealServer, params: Mapping[str, str]) -> None:
        if "weight" in params:
            rs.weight = _int_in(params, "weight", 1, 65535)
        if "forward" in params:
            rs.forward = _choice(params, "forward", ("nat", "route"))
        if "enable" in params:
            rs.enable = _flag(params, "enable")
        if "limit" in params:
            rs.limit = _int_in(params, "limit", 0, 100000)
        if "critical" in params:
            rs.critical = _flag(params, "critical")


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if value == "":
        raise KempFailure(400, f"Mandatory parameter missing: {name}")
    return value


def _address(params: Mapping[str, str], name: str) -> str:
    value = _required(params, name)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise KempFailure(422, f"Invalid address: {value}") from None


def _port(params: Mapping[str, str], name: str) -> int:
    return _int_in(params, name, 1, 65535)


def _int_in(params: Mapping[str, str], name: str, low: int, high: int) -> int:
    value = _required(params, name)
    if not value.isdigit() or not low <= int(value) <= high:
        raise KempFailure(422, f"Invalid {name}: {value}")
    return int(value)


def _protocol(params: Mapping[str, str]) -> str:
    return _choice(params, "prot", ("tcp", "udp"))


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _required(params, name).lower()
    if value not in choices:
        raise KempFailure(422, f"Invalid {name}: {value}")
    return value


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = _required(params, name).upper()
    if value in ("Y", "1", "TRUE", "YES"):
        return True
    if value in ("N", "0", "FALSE", "NO"):
        return False
    raise KempFailure(422, f"Invalid {name}: {value}")


@dataclass
class Stats:
    requests: int = 0
    writes: int = 0
    failures: int = 0
    injected: int = 0
    commands: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "writes": self.writes, "failures": self.failures,
                "injected": self.injected, "commands": dict(self.commands)}


class KempSimulator:
    """The HTTPS server.  ``await start()`` then use ``url`` and ``ca_file``."""

    def __init__(self, *, username: str = "admin", password: str = "admin", api_key: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, tls: SimulatorTLS | None = None,
                 tls_dir: str | Path | None = None, seed: int = 0):
        self.username = username
        self.password = password
        self.api_key = api_key
        self.host = host
        self.port = port
        self.tls = tls or ensure_tls(tls_dir)
        self.appliance = LoadMaster()
        self.stats = Stats()
        self.faults = Faults()
        self._random = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._commands: dict[str, Callable[[Mapping[str, str]], str]] = {
            name: getattr(self.appliance, name)
            for name in ("listvs", "showvs", "addvs", "modvs", "delvs", "showrs", "addrs", "modrs", "delrs")
        }

    # -- lifecycle ------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/__sim/stats", self._stats)
        app.router.add_post("/__sim/faults", self._set_faults)
        app.router.add_delete("/__sim/faults", self._clear_faults)
        app.router.add_post("/__sim/reset", self._reset)
        app.router.add_post("/__sim/plant", self._plant)
        app.router.add_route("*", "/access/{command:.*}", self._access)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls.server_context())
        await site.start()
        if self.port == 0:
            server = site._server  # the bound port, when asked for any free one
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KempSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test controls ----------------------------------------------------------
    def set_faults(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self.faults, key):
                raise ValueError(f"unknown fault {key!r}")
            setattr(self.faults, key, type(getattr(self.faults, key))(value))

    def clear_faults(self) -> None:
        self.faults = Faults()

    def reset(self) -> None:
        self.appliance = LoadMaster()
        self.stats = Stats()
        self.clear_faults()
        self._commands = {name: getattr(self.appliance, name) for name in self._commands}

    async def _stats(self, request: web.Request) -> web.Response:
        data = self.stats.to_dict() | {"faults": self.faults.to_dict(),
                                       "virtual_services": len(self.appliance.virtual_services)}
        return web.json_response(data)

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.set_faults(**(await request.json()))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.to_dict())

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response(self.faults.to_dict())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _plant(self, request: web.Request) -> web.Response:
        body = await request.json()
        appliance = self.appliance
        index = appliance._next_vs
        vs = VirtualService(index=index, address=str(body["address"]), port=int(body["port"]), protocol="tcp",
                            nickname=str(body["nickname"]))
        for address, port in body.get("real_servers") or []:
            rs_index = appliance._next_rs
            vs.real_servers[rs_index] = RealServer(index=rs_index, address=str(address), port=int(port))
            appliance._next_rs += 1
        appliance.virtual_services[index] = vs
        appliance._next_vs += 1
        return web.json_response({"index": index})

    # -- the API ---------------------------------------------------------------
    async def _access(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        if self.faults.down:
            # The appliance is gone: the connection closes without an answer.
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops the request quietly
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        if self.faults.error_rate > 0 and self._random.random() < self.faults.error_rate:
            self.stats.injected += 1
            status = self.faults.error_status
            return web.Response(status=status, text=f"<html><body>{status} Service Unavailable</body></html>",
                                content_type="text/html")
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        elif request.method != "GET":
            return self._xml(405, error_body(405, "Method not allowed"))
        if not self._authorized(request, params):
            response = self._xml(401, error_body(401, "Authorization required"))
            response.headers["WWW-Authenticate"] = 'Basic realm="LM"'
            return response
        command = request.match_info["command"]
        self.stats.commands[command] = self.stats.commands.get(command, 0) + 1
        handler = self._commands.get(command)
        if handler is None:
            self.stats.failures += 1
            return self._xml(422, error_body(422, "Unknown command"))
        try:
            body = handler(params)
        except KempFailure as failure:
            self.stats.failures += 1
            return self._xml(failure.status, error_body(failure.status, failure.text))
        if command in WRITE_COMMANDS:
            self.stats.writes += 1
        return self._xml(200, body)

    def _authorized(self, request: web.Request, params: dict[str, str]) -> bool:
        key = params.pop("apikey", None)
        if key is not None:
            return self.api_key is not None and hmac.compare_digest(key, self.api_key)
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode("latin-1").partition(":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(user, self.username) and hmac.compare_digest(password, self.password)

    @staticmethod
    def _xml(status: int, body: str) -> web.Response:
        return web.Response(status=status, body=body.encode("iso-8859-1", "xmlcharrefreplace"),
                            content_type="text/xml", charset="ISO-8859-1")


async def _serve(args: argparse.Namespace) -> None:
    simulator = KempSimulator(username=args.username, password=args.password, api_key=args.api_key,
                              host=args.host, port=args.port, tls_dir=args.tls_dir)
    await simulator.start()
    print(json.dumps({"url": simulator.url, "ca_file": str(simulator.ca_file)}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await simulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Kemp LoadMaster RESTful API simulator (HTTPS)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--tls-dir", default=None, help="where the CA and server certificate live (shared)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

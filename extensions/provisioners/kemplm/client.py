"""An async client for the LoadMaster RESTful API (APIv1, XML answers).

Every command is ``/access/<command>`` with its parameters; the appliance
answers ``<Response stat="200" code="ok"><Success>...`` or ``<Response
stat="422" code="fail"><Error>Unknown VS</Error>``.  This module turns those
answers into small frozen records and ``KempError``s whose text names the
command, the status and the appliance's message, and never a credential.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping

import httpx

from extensions.provisioners.kemplm.config import KempConfig
from extensions.tls import verify_setting

# The appliance's text for a Virtual Service or Real Server that is not there.
NOT_FOUND_TEXTS = ("unknown vs", "unknown rs", "unknown real server", "no such")


class KempError(Exception):
    """A failed call; ``status`` is the HTTP status (0 when no answer came)."""

    def __init__(self, command: str, status: int, message: str):
        self.command = command
        self.status = status
        self.message = message
        where = f"{status} " if status else ""
        super().__init__(f"LoadMaster {command}: {where}{message}".strip())

    @property
    def not_found(self) -> bool:
        return self.status == 422 and any(text in self.message.lower() for text in NOT_FOUND_TEXTS)


class KempAuthError(KempError):
    pass


class KempConnectionError(KempError):
    pass


@dataclass(frozen=True)
class RealServer:
    index: int
    address: str
    port: int
    weight: int


@dataclass(frozen=True)
class VirtualService:
    index: int
    address: str
    port: int
    protocol: str
    nickname: str
    real_servers: tuple[RealServer, ...] = ()


def _text(element: ET.Element, tag: str, default: str = "") -> str:
    found = element.find(tag)
    return (found.text or "").strip() if found is not None else default


def _int(element: ET.Element, tag: str) -> int:
    try:
        return int(_text(element, tag, "0") or 0)
    except ValueError:
        return 0


def parse_virtual_service(element: ET.Element) -> VirtualService:
    """A VS from the element holding its fields (``<VS>`` of listvs, ``<Data>`` of showvs)."""
    servers = tuple(
        RealServer(index=_int(rs, "RsIndex"), address=_text(rs, "Addr"), port=_int(rs, "Port"),
                   weight=_int(rs, "Weight"))
        for rs in element.findall("Rs")
    )
    return VirtualService(index=_int(element, "Index"), address=_text(element, "VSAddress"),
                          port=_int(element, "VSPort"), protocol=_text(element, "Protocol").lower(),
                          nickname=_text(element, "NickName"), real_servers=servers)


class KempClient:
    def __init__(self, config: KempConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self._secrets = tuple(s for s in (config.password, config.api_key) if s)
        auth = httpx.BasicAuth(config.username, config.password) if not config.api_key else None
        verify = verify_setting(config.ca_file, config.insecure_skip_verify)
        self._http = httpx.AsyncClient(base_url=config.endpoint, auth=auth, verify=verify,
                                       timeout=config.timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    def scrub(self, text: str) -> str:
        """The text with every configured secret blotted out."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def call(self, command: str, params: Mapping[str, str | int] | None = None) -> ET.Element:
        """Run one command and return its ``<Success>`` element; raise KempError otherwise."""
        query = {k: str(v) for k, v in (params or {}).items()}
        try:
            if self.config.api_key:
                # A form body keeps the key out of URLs (and so out of any log line that shows one).
                response = await self._http.post(f"/access/{command}", data=query | {"apikey": self.config.api_key})
            else:
                response = await self._http.get(f"/access/{command}", params=query)
        except httpx.ConnectError as exc:
            raise KempConnectionError(command, 0, self._connect_reason(exc)) from None
        except httpx.TimeoutException:
            raise KempConnectionError(command, 0, f"no answer from {self.config.endpoint} "
                                                  f"within {self.config.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise KempConnectionError(command, 0, self.scrub(f"{type(exc).__name__}: {exc}")) from None
        return self._parse(command, response)

    def _connect_reason(self, exc: httpx.ConnectError) -> str:
        text = self.scrub(str(exc))
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower():
            hint = "set caFile to the CA that signed the LoadMaster's certificate"
            return f"TLS verification of {self.config.endpoint} failed ({text}); {hint}"
        return f"cannot connect to {self.config.endpoint}: {text or type(exc).__name__}"

    def _parse(self, command: str, response: httpx.Response) -> ET.Element:
        status = response.status_code
        try:
            root = ET.fromstring(response.content)
        except ET.ParseError:
            root = None
        if root is None or root.tag != "Response":
            if status == 401:
                raise KempAuthError(command, 401, "authorization refused (check username and password or apiKey)")
            reason = response.reason_phrase or "unexpected answer"
            raise KempError(command, status, f"{reason} (not a LoadMaster API answer)")
        stat = int(root.get("stat", status) or status)
        if root.get("code") == "ok" and stat == 200 and status == 200:
            success = root.find("Success")
            return success if success is not None else ET.Element("Success")
        message = self.scrub(_text(root, "Error") or root.get("code", "") or "failed")
        if stat == 401 or status == 401:
            raise KempAuthError(command, 401, f"{message} (check username and password or apiKey)")
        raise KempError(command, stat if stat != 200 else status, message)

    # -- commands -------------------------------------------------------------
    async def list_virtual_services(self) -> list[VirtualService]:
        success = await self.call("listvs")
        return [parse_virtual_service(vs) for vs in success.iterfind("Data/VS")]

    async def add_virtual_service(self, address: str, port: int, params: Mapping[str, str | int]) -> VirtualService:
        success = await self.call("addvs", {"vs": address, "port": port, "prot": "tcp", **params})
        data = success.find("Data")
        return parse_virtual_service(data if data is not None else ET.Element("Data"))

    async def modify_virtual_service(self, index: int, params: Mapping[str, str | int]) -> None:
        await self.call("modvs", {"vs": index, **params})

    async def delete_virtual_service(self, index: int) -> None:
        await self.call("delvs", {"vs": index})

    async def add_real_server(self, vs_index: int, address: str, port: int, weight: int) -> None:
        await self.call("addrs", {"vs": vs_index, "rs": address, "rsport": port, "weight": weight,
                                  "non_local": 1})

    async def modify_real_server(self, vs_index: int, rs_index: int, params: Mapping[str, str | int]) -> None:
        await self.call("modrs", {"vs": vs_index, "rs": f"!{rs_index}", **params})

    async def delete_real_server(self, vs_index: int, rs_index: int) -> None:
        await self.call("delrs", {"vs": vs_index, "rs": f"!{rs_index}"})


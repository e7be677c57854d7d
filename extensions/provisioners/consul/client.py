"""Calls to one Consul agent, over extensions/kit/http.py on the operator's loop.

The few endpoints the provisioner uses are plain JSON: the catalog and health
reads, and ``/v1/txn`` for every write (py-consul's ``catalog.register``
sends node meta as query parameters, which Consul ignores there, and its
``txn.put`` sends no token).  py-consul's blocking client cost a thread hop
and a requests/urllib3 stack per call, about a fifth of the controller's CPU
at 50 Services a second (bench/RESULTS.md).  Its two errors are kept here
under their names and with their messages; importing them from py-consul
cost 4 MB of memory (its requests/urllib3 stack), so it is no longer a
dependency.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlencode

from extensions.kit.http import HttpClient
from extensions.provisioners.consul.config import ConsulConfig
from extensions.provisioners.consul.records import (
    INSTANCE_KEY,
    MANAGED_KEY,
    OWNER_KEY,
    NameState,
    NodeState,
    OwnedNode,
    Record,
    ServiceInstance,
    mark_of,
    node_state,
)
from extensions.tls import verify_setting

# Seconds before a silent agent counts as unreachable; short enough that an
# outage turns into an entry error well within the core's WIP timeout.
REQUEST_TIMEOUT = 10.0
# Seconds a start-up read of every record we hold may take (one large answer).
BULK_TIMEOUT = 60.0
# Consul refuses a transaction of more than 64 operations before 1.14 (128 since); a record takes 3
# (node, service, check).
MAX_RECORDS_PER_TXN = 64 // 3


class ConsulException(Exception):
    """Consul answered with an error (py-consul's name for it)."""


class ACLPermissionDenied(ConsulException):
    """Consul's ACLs refused the request: the token lacks a permission."""


class ConcurrentChange(ConsulException):
    """Someone changed the node between our read and our write: nothing was written."""


class ConsulUnreachable(Exception):
    """No answer from the agent: connection refused, TLS failure, timeout."""


class ConsulCatalog:
    def __init__(self, config: ConsulConfig):
        self.config = config
        self._base = config.url.rstrip("/")
        # The configured token only (empty: anonymous), whatever CONSUL_HTTP_TOKEN says.
        self._headers = {"X-Consul-Token": config.token} if config.token else {}
        self._http: HttpClient | None = None  # made on the loop that uses it

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- checks -------------------------------------------------------------
    async def leader(self) -> str:
        return str(await self._get("/v1/status/leader") or "")

    async def can_read_catalog(self) -> bool:
        """True when the token sees the catalog: the `consul` service always has an instance.

        With ACLs on, a token that may not read is not refused, its answers
        are filtered; an empty answer is the only sign.
        """
        return bool(await self._get("/v1/catalog/service/consul"))

    # -- reads --------------------------------------------------------------
    async def read_name(self, name: str) -> NameState:
        quoted = _segment(name)
        node, instances = await asyncio.gather(self._get(f"/v1/catalog/node/{quoted}", allow_404=True),
                                               self.service_instances(name))
        checks: list[dict[str, Any]] = []
        if node:
            checks = await self._get(f"/v1/health/node/{quoted}") or []
        return NameState(name=name, node=node_state(node, checks), instances=instances)

    async def service_instances(self, name: str) -> tuple[ServiceInstance, ...]:
        """Every instance of the service ``name``, on whichever node, with that node's marks."""
        instances = await self._get(f"/v1/catalog/service/{_segment(name)}")
        return tuple(ServiceInstance(str(i.get("Node", "")), mark_of(i.get("NodeMeta"))) for i in instances or [])

    async def entry_nodes(self, owner: str, instance: str) -> list[OwnedNode]:
        """The nodes of one entry that this instance may change: its own, and those written before instance ids."""
        nodes = await self._get("/v1/catalog/nodes", {"node-meta": f"{OWNER_KEY}:{owner}"})
        return [node for node in _owned(nodes) if node.owner == owner and node.instance in (instance, "")]

    async def instance_nodes(self, instance: str) -> list[OwnedNode]:
        """Every node this instance wrote (what an orphan sweep may consider; never another's, never a legacy one)."""
        nodes = await self._get("/v1/catalog/nodes", {"node-meta": f"{INSTANCE_KEY}:{instance}"})
        return [node for node in _owned(nodes) if node.instance == instance]

    async def managed_records(self) -> list[NodeState]:
        """Every node Interlook wrote, with its services and checks, in one request (start-up, see records.Known).

        ``/v1/internal/ui/nodes`` is the one endpoint that answers nodes with
        their services and checks at once (the UI's node list); with node
        meta filtered on the agent, it is one bulk read instead of three
        reads per record.
        """
        nodes = await self._get("/v1/internal/ui/nodes", {"filter": f'Meta["{MANAGED_KEY}"] == "true"'},
                                timeout=BULK_TIMEOUT)
        out = []
        for item in nodes or []:
            state = node_state({"Node": item, "Services": {s.get("ID", ""): s for s in item.get("Services") or []}},
                               item.get("Checks") or [])
            if state is not None:
                out.append(state)
        return out

    # -- writes -------------------------------------------------------------
    async def write(self, record: Record, modify_index: int) -> None:
        """Register the record's node, service and check at once, over the node version we read."""
        await self.write_all([(record, modify_index)])

    async def write_all(self, writes: Iterable[tuple[Record, int]]) -> None:
        """Register several records in one transaction: all of them, or none if one node is not the version read.

        At most MAX_RECORDS_PER_TXN records (Consul's limit on operations).
        """
        await self._transaction([op for record, modify_index in writes for op in record.transaction(modify_index)])

    async def remove(self, node: OwnedNode) -> bool:
        """Deregister a node we own (with its service and check), unless it changed since listed.

        Returns False when it was already gone or changed hands: either way
        there is nothing of ours left to remove.
        """
        try:
            await self._transaction([{"Node": {"Verb": "delete-cas",
                                               "Node": {"Node": node.name, "ModifyIndex": node.modify_index}}}])
            return True
        except ConcurrentChange:
            current = await self._get(f"/v1/catalog/node/{_segment(node.name)}", allow_404=True)
            mark = mark_of((current or {}).get("Node", {}).get("Meta")) if current else None
            if mark is not None and (mark.instance, mark.entry) == (node.instance, node.owner):
                raise  # still ours but rewritten meanwhile: let the caller retry on fresh data
            return False

    async def _transaction(self, operations: list[dict[str, Any]]) -> None:
        status, body = await self._send("PUT", "/v1/txn", None, json.dumps(operations).encode())
        if status == 409:
            # Consul answers a refused transaction with 409 and the reason of each failed operation.
            _refused(body)
        _check(status, body)

    # -- plumbing -------------------------------------------------------------
    async def _send(self, method: str, path: str, params: Mapping[str, str] | None, data: bytes | None = None,
                    timeout: float | None = None) -> tuple[int, bytes]:
        if self._http is None:
            self._http = HttpClient(self._base, ssl=verify_setting(self.config.ca_file, False),
                                    timeout=REQUEST_TIMEOUT, headers=self._headers)
        target = f"{path}?{urlencode(params)}" if params else path
        try:
            answer = await self._http.request(method, target, data, timeout=timeout)
        except (TimeoutError, OSError) as exc:
            raise ConsulUnreachable(f"{type(exc).__name__}") from None
        return answer.status, answer.content

    async def _get(self, path: str, params: Mapping[str, str] | None = None, *, allow_404: bool = False,
                   timeout: float | None = None) -> Any:
        status, body = await self._send("GET", path, params, timeout=timeout)
        if status == 404 and allow_404:
            return None
        _check(status, body)
        return json.loads(body) if body else None


def _segment(name: str) -> str:
    """A DNS name as one path segment (they hold no '/', but never trust input)."""
    return quote(name, safe="")


def _check(status: int, body: bytes) -> None:
    """py-consul's rules for an error status, so that callers see the same errors."""
    if status < 400:
        return
    text = body.decode("utf-8", "replace")
    if status == 403:
        raise ACLPermissionDenied(text)
    raise ConsulException(f"{status} {text}")


def _refused(body: bytes) -> None:
    try:
        errors = [str(e.get("What", "")) for e in json.loads(body).get("Errors") or []]
    except (ValueError, AttributeError):
        errors = [body.decode("utf-8", "replace")]
    text = "; ".join(errors) or "transaction refused"
    if "permission denied" in text.lower():
        raise ACLPermissionDenied(text)
    if "index is stale" in text:
        raise ConcurrentChange(text)
    raise ConsulException(f"transaction refused: {text}")


def _owned(nodes: list[dict[str, Any]] | None) -> list[OwnedNode]:
    owned = []
    for n in nodes or []:
        mark = mark_of(n.get("Meta"))
        if mark is not None:
            owned.append(OwnedNode(str(n["Node"]), mark.entry, int(n.get("ModifyIndex", 0)), mark.instance))
    return owned

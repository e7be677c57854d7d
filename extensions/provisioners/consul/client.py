"""Blocking calls to one Consul agent, through py-consul.

Every method blocks: the provisioner runs them with ``asyncio.to_thread``.
py-consul's catalog wrappers cover the reads; the writes go through its HTTP
client directly because its ``catalog.register`` sends node meta as query
parameters (Consul ignores them there) and its ``txn.put`` sends no token.
"""

from __future__ import annotations

import json
from typing import Any

import consul
from consul.base import Response
from consul.callback import CB
from consul.exceptions import ACLPermissionDenied, ConsulException

from extensions.provisioners.consul.config import ConsulConfig
from extensions.provisioners.consul.records import (
    INSTANCE_KEY,
    OWNER_KEY,
    NameState,
    OwnedNode,
    Record,
    ServiceInstance,
    mark_of,
    node_state,
)

# Seconds before a silent agent counts as unreachable; short enough that an
# outage turns into an entry error well within the core's WIP timeout.
REQUEST_TIMEOUT = 10.0


class ConcurrentChange(ConsulException):
    """Someone changed the node between our read and our write: nothing was written."""


class ConsulCatalog:
    def __init__(self, config: ConsulConfig):
        self._client = consul.Consul(
            host=config.host, port=config.port, scheme=config.scheme,
            verify=config.ca_file or True, token=config.token or None,
            connections_timeout=REQUEST_TIMEOUT,
        )
        # py-consul lets CONSUL_HTTP_TOKEN in the environment override the
        # token it is given; the configured one must win (empty: anonymous).
        self._client.token = config.token or None

    # -- checks -------------------------------------------------------------
    def leader(self) -> str:
        return str(self._client.status.leader() or "")

    def can_read_catalog(self) -> bool:
        """True when the token sees the catalog: the `consul` service always has an instance.

        With ACLs on, a token that may not read is not refused, its answers
        are filtered; an empty answer is the only sign.
        """
        _, nodes = self._client.catalog.service("consul")
        return bool(nodes)

    # -- reads --------------------------------------------------------------
    def read_name(self, name: str) -> NameState:
        _, node = self._client.catalog.node(name)
        checks: list[dict[str, Any]] = []
        if node:
            _, checks = self._client.health.node(name)
        _, instances = self._client.catalog.service(name)
        return NameState(
            name=name,
            node=node_state(node, checks or []),
            instances=tuple(ServiceInstance(str(i.get("Node", "")), mark_of(i.get("NodeMeta")))
                            for i in instances or []),
        )

    def entry_nodes(self, owner: str, instance: str) -> list[OwnedNode]:
        """The nodes of one entry that this instance may change: its own, and those written before instance ids."""
        _, nodes = self._client.catalog.nodes(node_meta={OWNER_KEY: owner})
        return [node for node in _owned(nodes) if node.owner == owner and node.instance in (instance, "")]

    def instance_nodes(self, instance: str) -> list[OwnedNode]:
        """Every node this instance wrote (what an orphan sweep may consider; never another's, never a legacy one)."""
        _, nodes = self._client.catalog.nodes(node_meta={INSTANCE_KEY: instance})
        return [node for node in _owned(nodes) if node.instance == instance]

    # -- writes -------------------------------------------------------------
    def write(self, record: Record, modify_index: int) -> None:
        """Register the record's node, service and check at once, over the node version we read."""
        self._transaction(record.transaction(modify_index))

    def remove(self, node: OwnedNode) -> bool:
        """Deregister a node we own (with its service and check), unless it changed since listed.

        Returns False when it was already gone or changed hands: either way
        there is nothing of ours left to remove.
        """
        try:
            self._transaction([{"Node": {"Verb": "delete-cas",
                                         "Node": {"Node": node.name, "ModifyIndex": node.modify_index}}}])
            return True
        except ConcurrentChange:
            _, current = self._client.catalog.node(node.name)
            mark = mark_of((current or {}).get("Node", {}).get("Meta")) if current else None
            if mark is not None and (mark.instance, mark.entry) == (node.instance, node.owner):
                raise  # still ours but rewritten meanwhile: let the caller retry on fresh data
            return False

    def _transaction(self, operations: list[dict[str, Any]]) -> None:
        headers = self._client.prepare_headers()
        self._client.http.put(_transaction_result, "/v1/txn", data=json.dumps(operations), headers=headers)


def _owned(nodes: list[dict[str, Any]] | None) -> list[OwnedNode]:
    owned = []
    for n in nodes or []:
        mark = mark_of(n.get("Meta"))
        if mark is not None:
            owned.append(OwnedNode(str(n["Node"]), mark.entry, int(n.get("ModifyIndex", 0)), mark.instance))
    return owned


def _transaction_result(response: Response) -> None:
    # Consul answers a refused transaction with 409 and the reason of each
    # failed operation; py-consul's callbacks would turn that into a bare 409.
    if response.code != 409:
        CB.json()(response)
        return
    try:
        errors = [str(e.get("What", "")) for e in json.loads(response.body).get("Errors") or []]
    except (ValueError, AttributeError):
        errors = [response.body]
    text = "; ".join(errors) or "transaction refused"
    if "permission denied" in text.lower():
        raise ACLPermissionDenied(text)
    if "index is stale" in text:
        raise ConcurrentChange(text)
    raise ConsulException(f"transaction refused: {text}")

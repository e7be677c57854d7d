"""What the Consul tests share: building the provisioner and messages, reading Consul directly.

Reads and foreign records go through py-consul, not the provisioner's own
client, so that a test sees what any other Consul user would see and a bug
in our client cannot hide itself.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

import consul
import requests

from controller.extension import ExtensionContext
from controller.instance import Identity
from controller.messages import Action, Message, Service
from extensions.provisioners.consul import ConsulConfig, ConsulProvisioner

TEST_INSTANCE = "il-consul-test"


def provisioner(url: str, *, token: str = "", entries: Mapping[str, Service] | None = None,
                instance: str = TEST_INSTANCE, **settings: Any) -> ConsulProvisioner:
    config = ConsulConfig(url=url, token=token, **settings)
    live = entries if entries is not None else {}
    context = ExtensionContext("provisioner.consul", entries=lambda: live, identity=Identity(configured=instance))
    context.identity.resolve([])
    return ConsulProvisioner(config, context)


def service(entry: str, *hosts: str, ip: str = "10.20.0.5", tls: bool = False, port: int = 0) -> Service:
    return Service(name=entry, provider="provider.kubernetes", public_ip=ip, dns_names=hosts, tls=tls, port=port)


def message(action: Action, svc: Service) -> Message:
    return Message(action=action, service=svc, destination="provisioner.consul", extra={"generation": "1"})


def client(url: str, token: str = "") -> consul.Consul:
    """py-consul, the maintained Python client: an independent reader of what Interlook wrote."""
    parts = urlsplit(url)
    return consul.Consul(host=parts.hostname, port=parts.port, scheme=parts.scheme, token=token or None)


def catalog_node(url: str, name: str, token: str = "") -> dict[str, Any] | None:
    _, node = client(url, token).catalog.node(name)
    return dict(node) if node else None


def health_checks(url: str, name: str) -> list[dict[str, Any]]:
    _, checks = client(url).health.node(name)
    return list(checks)


def owned_nodes(url: str, owner: str) -> list[str]:
    _, nodes = client(url).catalog.nodes(node_meta={"interlook-owner": owner})
    return sorted(n["Node"] for n in nodes)


def register_foreign(url: str, node: str, address: str, service_name: str | None = None,
                     meta: Mapping[str, str] | None = None) -> None:
    """A record somebody else wrote (no Interlook mark unless ``meta`` says so).

    Plain HTTP: py-consul's ``catalog.register`` sends ``node_meta`` as a query
    filter, never as the node's Meta, and these records need their marks.
    """
    body: dict[str, Any] = {"Node": node, "Address": address, "NodeMeta": dict(meta or {"external-node": "true"})}
    if service_name:
        body["Service"] = {"ID": service_name, "Service": service_name, "Port": 8080}
    requests.put(f"{url}/v1/catalog/register", json=body, timeout=10).raise_for_status()


def deregister(url: str, node: str) -> None:
    assert client(url).catalog.deregister(node)


def remove_test_records(url: str, marker: str) -> None:
    """Deregister the Interlook records whose name carries ``marker``: a shared agent stays clean."""
    _, nodes = client(url).catalog.nodes(node_meta={"interlook-managed": "true"})
    for node in nodes:
        if marker in node["Node"]:
            deregister(url, node["Node"])

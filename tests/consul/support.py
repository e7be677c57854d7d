"""What the Consul tests share: building the provisioner and messages, reading Consul directly.

Reads go straight to Consul's HTTP API (not through the provisioner's client)
so that a test sees what any other Consul user would see.
"""

from __future__ import annotations

from typing import Any, Mapping

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


def catalog_node(url: str, name: str, token: str = "") -> dict[str, Any] | None:
    response = requests.get(f"{url}/v1/catalog/node/{name}", headers=_headers(token), timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def health_checks(url: str, name: str) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/v1/health/node/{name}", timeout=10)
    response.raise_for_status()
    return list(response.json())


def owned_nodes(url: str, owner: str) -> list[str]:
    response = requests.get(f"{url}/v1/catalog/nodes", params={"node-meta": f"interlook-owner:{owner}"}, timeout=10)
    response.raise_for_status()
    return sorted(n["Node"] for n in response.json())


def register_foreign(url: str, node: str, address: str, service_name: str | None = None,
                     meta: Mapping[str, str] | None = None) -> None:
    """A record somebody else wrote (no Interlook mark unless ``meta`` says so)."""
    body: dict[str, Any] = {"Node": node, "Address": address, "NodeMeta": dict(meta or {"external-node": "true"})}
    if service_name:
        body["Service"] = {"ID": service_name, "Service": service_name, "Port": 8080}
    requests.put(f"{url}/v1/catalog/register", json=body, timeout=10).raise_for_status()


def deregister(url: str, node: str) -> None:
    requests.put(f"{url}/v1/catalog/deregister", json={"Node": node}, timeout=10).raise_for_status()


def remove_test_records(url: str, marker: str) -> None:
    """Deregister the Interlook records whose name carries ``marker``: a shared agent stays clean."""
    response = requests.get(f"{url}/v1/catalog/nodes", params={"node-meta": "interlook-managed:true"}, timeout=10)
    response.raise_for_status()
    for node in response.json():
        if marker in node["Node"]:
            deregister(url, node["Node"])


def _headers(token: str) -> dict[str, str]:
    return {"X-Consul-Token": token} if token else {}

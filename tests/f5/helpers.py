"""Builders shared by the F5 tests: configs pointing at a simulator, services, messages."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from controller.extension import ExtensionContext, no_entries
from controller.instance import Identity
from controller.messages import Action, Message, Service, Target
from extensions.provisioners.f5ltm import F5Config
from tests.simulators.f5 import F5Simulator

HTTP_POLICY = "/Common/global-http"
SSL_POLICY = "/Common/global-ssl"
INSTANCE = "site-a"
SUFFIX = "(auto generated - do not edit)"


def context(instance: str = INSTANCE,
            entries: Callable[[], Mapping[str, Service]] = no_entries) -> ExtensionContext:
    return ExtensionContext("provisioner.f5ltm", entries=entries, identity=Identity(instance_id=instance))


def name_of(entry: str = "shop/web", instance: str = INSTANCE) -> str:
    """The BIG-IP name an instance gives an entry's objects (Kubernetes entries only)."""
    return f"interlook_{instance}_{entry.replace('/', '_')}"


def path_of(entry: str = "shop/web", instance: str = INSTANCE, partition: str = "Common") -> str:
    return f"/{partition}/{name_of(entry, instance)}"


def mark_of(entry: str = "shop/web", instance: str = INSTANCE) -> str:
    return f"interlook:{instance}:{entry} {SUFFIX}"


def make_config(simulator: F5Simulator, **overrides: Any) -> F5Config:
    base = F5Config(http_endpoint=simulator.url, username="admin", password="admin", ca_file=simulator.ca_file,
                    global_http_policy="global-http", global_ssl_policy="global-ssl")
    return dataclasses.replace(base, **overrides)


def service(name: str = "shop/web", *, targets: tuple[tuple[str, int, int], ...] = (("10.0.0.1", 30080, 1),),
            tls: bool = False, public_ip: str = "192.0.2.10", dns: tuple[str, ...] = ("web.example.com",),
            port: int = 0) -> Service:
    return Service(name=name, provider="provider.kubernetes",
                   targets=tuple(Target(h, p, w) for h, p, w in targets), tls=tls, public_ip=public_ip,
                   dns_names=dns, port=port)


def message(action: Action, svc: Service) -> Message:
    return Message(action=action, service=svc, sender="core", destination="provisioner.f5ltm",
                   extra={"generation": "1"})


def writes(simulator: F5Simulator) -> int:
    return simulator.stats.writes

"""What "converged" means after a fault, read from every place Interlook writes.

A namespace has converged when every live Service shows ``deployed`` with its
public IP, every deleted one is gone (its finalizer released), Consul and the
F5 simulator hold records for exactly the live ones, and the IPAllocations of
the namespace are exactly one per live Service, matching what the Service
shows.  Duplicates (one address given twice, or one Service holding two) are
counted apart: the tests require zero of them at every look, not only at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.harness import (
    ERROR_KEY,
    PUBLIC_IP_KEY,
    STATE_KEY,
    ConsulServer,
    F5Process,
    Kube,
    annotations_of,
)


@dataclass
class World:
    services: dict[str, dict[str, Any]] = field(default_factory=dict)       # name -> object
    consul: dict[str, list[str]] = field(default_factory=dict)              # owner name -> nodes
    f5: dict[str, list[str]] = field(default_factory=dict)                  # owner name -> objects
    allocations: dict[str, list[str]] = field(default_factory=dict)         # owner name -> IPs
    duplicates: list[str] = field(default_factory=list)


async def observe(kube: Kube, namespace: str, consul: ConsulServer | None, f5: F5Process | None,
                  instance: str | None = None) -> World:
    """What the namespace's Services and Interlook's records say (only ``instance``'s records, when given)."""
    world = World()
    for obj in await kube.services(namespace):
        world.services[obj["metadata"]["name"]] = obj
    prefix = f"{namespace}/"
    if consul is not None:
        owners = await asyncio.to_thread(consul.owned_nodes, instance)
        world.consul = {k[len(prefix):]: v for k, v in owners.items() if k.startswith(prefix)}
    if f5 is not None:
        owners = await asyncio.to_thread(f5.owned_objects, instance)
        world.f5 = {k[len(prefix):]: v for k, v in owners.items() if k.startswith(prefix)}
    every_ip: list[str] = []
    for item in await kube.ip_allocations():
        spec = item.get("spec") or {}
        if instance is not None and spec.get("instance") != instance:
            continue
        every_ip.append(str(spec.get("ip")))
        owner = str(spec.get("owner", ""))
        if owner.startswith(prefix):
            world.allocations.setdefault(owner[len(prefix):], []).append(str(spec.get("ip")))
    world.duplicates += [f"address {ip} allocated {n} times" for ip, n in Counter(every_ip).items() if n > 1]
    world.duplicates += [f"{owner} holds {len(ips)} addresses {ips}" for owner, ips in world.allocations.items()
                         if len(ips) > 1]
    shown: dict[str, list[str]] = {}
    for name, obj in sorted(world.services.items()):
        ip = annotations_of(obj).get(PUBLIC_IP_KEY)
        if ip:
            shown.setdefault(ip, []).append(name + (" (deleting)" if obj["metadata"].get("deletionTimestamp") else ""))
    world.duplicates += [f"public IP {ip} shown on {len(names)} Services: {', '.join(names)}"
                         for ip, names in shown.items() if len(names) > 1]
    return world


def problems(world: World, live: set[str], deleted: set[str], *, consul: bool = True, f5: bool = True) -> list[str]:
    out: list[str] = list(world.duplicates)
    for name in sorted(live):
        obj = world.services.get(name)
        if obj is None:
            out.append(f"{name}: live Service missing")
            continue
        notes = annotations_of(obj)
        if notes.get(STATE_KEY) != "deployed":
            out.append(f"{name}: state {notes.get(STATE_KEY)!r} error {notes.get(ERROR_KEY)!r}")
        elif not notes.get(PUBLIC_IP_KEY):
            out.append(f"{name}: deployed without a public IP")
        elif world.allocations.get(name) != [notes[PUBLIC_IP_KEY]]:
            out.append(f"{name}: shows {notes[PUBLIC_IP_KEY]} but holds {world.allocations.get(name)}")
        if consul and name not in world.consul:
            out.append(f"{name}: no Consul record")
        if f5 and name not in world.f5:
            out.append(f"{name}: nothing on the F5")
    for name in sorted(deleted):
        if name in world.services:
            finalizers = world.services[name]["metadata"].get("finalizers")
            out.append(f"{name}: deleted Service still there (finalizers {finalizers})")
    known = live
    for where, owners in (("Consul", world.consul if consul else {}), ("F5", world.f5 if f5 else {}),
                          ("IPAllocation", world.allocations)):
        for owner in sorted(set(owners) - known):
            out.append(f"orphan in {where} for {owner}: {owners[owner]}")
    return out


async def converge(kube: Kube, namespace: str, consul: ConsulServer | None, f5: F5Process | None,
                   live: set[str], deleted: set[str], timeout: float,
                   instance: str | None = None) -> tuple[float, World, list[str], int]:
    """Poll until converged or ``timeout``: (seconds taken, last world, last problems, most duplicates seen)."""
    started = time.monotonic()
    worst = 0
    while True:
        world = await observe(kube, namespace, consul, f5, instance)
        worst = max(worst, len(world.duplicates))
        found = problems(world, live, deleted, consul=consul is not None, f5=f5 is not None)
        elapsed = time.monotonic() - started
        if not found or elapsed > timeout:
            return elapsed, world, found, worst
        await asyncio.sleep(2)


def summary(found: list[str], limit: int = 25) -> str:
    more = f"\n... and {len(found) - limit} more" if len(found) > limit else ""
    return "\n".join(found[:limit]) + more

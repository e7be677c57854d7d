"""Configuration of the built-in IP pools.

Two shapes, never both at once: the Go program's keys (``network_cidr``,
``ip_start``, ``ip_end``) define one pool named ``default`` that admits every
Service, so its configs load unchanged; ``pools`` lists named pools, each
limited to namespaces (by name or by a selector on the Namespace's labels)
and to Services (by a selector on their labels), MetalLB-style.  Pools of one
Interlook never overlap: an address belongs to exactly one pool, which is how
an allocation found in the store is told to be ours or not.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Sequence

from controller.config import Section
from controller.messages import Service
from controller.selectors import LabelSelector

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LEGACY_POOL = "default"  # the name of the pool the legacy keys define
DEFAULT_MAX_PER_NAMESPACE = 256
# A pool's name goes into IPAllocation specs and errors: a DNS label, like a Kubernetes name.
_POOL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LEGACY_KEYS = ("network_cidr", "ip_start", "ip_end")


@dataclass(frozen=True)
class PoolConfig:
    """One pool: its range, who may take from it, and when it is tried."""

    name: str
    network: IPNetwork
    first: IPAddress      # first address that may be given
    last: IPAddress       # last address that may be given
    namespaces: tuple[str, ...] = ()              # empty: every namespace
    namespace_selector: LabelSelector = LabelSelector()
    service_selector: LabelSelector = LabelSelector()
    priority: int | None = None                   # lower first; None after every numbered pool

    @property
    def version(self) -> int:
        return self.first.version

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    @property
    def range(self) -> str:
        return f"{self.first}-{self.last}"

    def contains(self, address: str) -> bool:
        ip = _parse(address)
        return ip is not None and self.holds(ip)

    def holds(self, ip: IPAddress) -> bool:
        return ip.version == self.version and self.first <= ip <= self.last  # type: ignore[operator]

    def refusal(self, service: Service) -> str:
        """Why this pool does not admit ``service``; "" when it does.

        Only the pool's own rules and the asker's own namespace and labels
        are named: nothing about any other Service.
        """
        namespace = service.namespace
        if self.namespaces and namespace not in self.namespaces:
            where = f"namespace {namespace}" if namespace else "a service outside any namespace"
            return f"{where} is not one of its namespaces"
        if not self.namespace_selector.empty and not self.namespace_selector.matches(service.namespace_labels):
            return f"the namespace's labels do not match its namespaceSelector {self.namespace_selector}"
        if not self.service_selector.empty and not self.service_selector.matches(service.labels):
            return f"the Service's labels do not match its serviceSelector {self.service_selector}"
        return ""

    def admits(self, service: Service) -> bool:
        return not self.refusal(service)

    def overlaps(self, other: PoolConfig) -> bool:
        return self.version == other.version and self.first <= other.last and other.first <= self.last  # type: ignore[operator]


@dataclass(frozen=True)
class IPAllocConfig:
    pools: tuple[PoolConfig, ...]   # in the order they are tried (see ordered)
    db_file: str = ""
    # How often allocations of entries that no longer exist are freed; 0 turns it off.
    reconcile_interval: float = 60.0
    # Addresses one namespace may hold from this Interlook; 0 = no limit.
    max_addresses_per_namespace: int = DEFAULT_MAX_PER_NAMESPACE

    @classmethod
    def from_section(cls, section: Section) -> IPAllocConfig:
        db_file = section.str("db_file")
        reconcile = section.duration("reconcileInterval", 60.0)
        limit = _limit(section)
        if section.has("pools"):
            mixed = [key for key in _LEGACY_KEYS if section.has(key)]
            if mixed:
                section.error("pools", f"give either pools or the one-pool keys ({', '.join(mixed)}), not both")
            pools = _read_pools(section)
        else:
            pools = (_read_pool(section, LEGACY_POOL, name_required=False),)
        _check_overlaps(pools, section)
        return cls(pools=ordered(pools), db_file=db_file, reconcile_interval=reconcile,
                   max_addresses_per_namespace=limit)

    def describe(self) -> list[str]:
        """What check-config shows: each pool in the order it is tried, who it admits, and the limit."""
        lines = []
        for pool in self.pools:
            who = [f"namespaces {', '.join(pool.namespaces)}"] if pool.namespaces else []
            who += [f"namespaceSelector {pool.namespace_selector}"] if not pool.namespace_selector.empty else []
            who += [f"serviceSelector {pool.service_selector}"] if not pool.service_selector.empty else []
            priority = "" if pool.priority is None else f", priority {pool.priority}"
            lines.append(f"pool {pool.name}: {pool.range}{priority}; admits {' and '.join(who) or 'every Service'}")
        limit = self.max_addresses_per_namespace or "no limit"
        return lines + [f"addresses per namespace: {limit}"]

    def pool_named(self, name: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.name == name), None)

    def pool_of(self, address: str) -> PoolConfig | None:
        """The pool whose range holds ``address`` (pools never overlap)."""
        ip = _parse(address)  # once, not once a pool: sweeps ask this for every allocation
        return None if ip is None else next((p for p in self.pools if p.holds(ip)), None)

    def contains(self, address: str) -> bool:
        return self.pool_of(address) is not None


def ordered(pools: Sequence[PoolConfig]) -> tuple[PoolConfig, ...]:
    """MetalLB's order: lower priority value first, pools without one last; ties keep the config's order."""
    return tuple(sorted(pools, key=lambda p: (p.priority is None, p.priority or 0)))


def usable_range(network: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """First and last host address: no network or broadcast address (except /31, /32)."""
    if network.num_addresses <= 2:
        return network[0], network[-1]
    if network.version == 4:
        return network[1], network[-2]
    return network[1], network[-1]


def _parse(address: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


# -- reading ----------------------------------------------------------------------

_PLACEHOLDER = ipaddress.ip_network("192.0.2.0/30")


def _read_pools(section: Section) -> tuple[PoolConfig, ...]:
    reported = len(section.report.errors)
    items = section.items("pools")
    if not items and len(section.report.errors) == reported:  # an empty list: items() says nothing of it
        section.error("pools", "must be a non-empty list of pools (name, network_cidr, ...)")
    pools: list[PoolConfig] = []
    for sub in items:
        pool = _read_pool(sub, "", name_required=True)
        if any(p.name == pool.name for p in pools) and pool.name:
            sub.error("name", f"pool {pool.name} is defined twice")
        pools.append(pool)
        sub.finish()
    return tuple(pools)


def _read_pool(section: Section, name: str, *, name_required: bool) -> PoolConfig:
    """One pool from ``section``; problems reported at their key path, a placeholder range when unusable."""
    if name_required:
        name = section.str("name", required=True)
        if name and not _POOL_NAME.match(name):
            section.error("name", f"{name!r} is not a DNS label (lower-case letters, digits and '-', up to 63)")
    first, last, network = _read_range(section)
    return PoolConfig(
        name=name, network=network, first=first, last=last,
        namespaces=tuple(section.str_list("namespaces")) if name_required else (),
        namespace_selector=section.selector("namespaceSelector") if name_required else LabelSelector(),
        service_selector=section.selector("serviceSelector") if name_required else LabelSelector(),
        priority=_priority(section) if name_required else None,
    )


def _read_range(section: Section) -> tuple[IPAddress, IPAddress, IPNetwork]:
    network = section.cidr("network_cidr", required=True)
    start = section.ip("ip_start")
    end = section.ip("ip_end")
    if network is None:
        return _PLACEHOLDER[1], _PLACEHOLDER[2], _PLACEHOLDER
    usable_first, usable_last = usable_range(network)
    first: Any = start or usable_first
    last: Any = end or usable_last
    if start is not None and start not in network:
        section.error("ip_start", f"{start} is outside network_cidr {network}")
        first = usable_first
    if end is not None and end not in network:
        section.error("ip_end", f"{end} is outside network_cidr {network}")
        last = usable_last
    if first > last:
        section.error("ip_end", f"{end} comes before ip_start {start}")
        return usable_first, usable_last, network
    # The network and broadcast addresses are never given, even when
    # ip_start/ip_end name them.
    if max(first, usable_first) > min(last, usable_last):
        section.error("ip_start", f"{first}-{last} holds no address but the network or broadcast address")
        return usable_first, usable_last, network
    return max(first, usable_first), min(last, usable_last), network


def _priority(section: Section) -> int | None:
    present = section.has("priority")
    value = section.int("priority")
    return value if present else None


def _limit(section: Section) -> int:
    value = section.int("maxAddressesPerNamespace", DEFAULT_MAX_PER_NAMESPACE)
    if value < 0:
        section.error("maxAddressesPerNamespace", f"must be 0 (no limit) or a positive number, got {value}")
        return DEFAULT_MAX_PER_NAMESPACE
    return value


def _check_overlaps(pools: Sequence[PoolConfig], section: Section) -> None:
    """An address in two pools would have two sets of rules: refused, naming the pool it collides with."""
    for index, pool in enumerate(pools):
        for earlier in pools[:index]:
            if pool.network is not _PLACEHOLDER and earlier.network is not _PLACEHOLDER and pool.overlaps(earlier):
                section.report.error(section.key_path(f"pools[{index}].network_cidr"),
                                     f"its range {pool.range} overlaps pool {earlier.name}'s {earlier.range}")
                break

"""Configuration of the built-in IP pool."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from controller.config import Section

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class IPAllocConfig:
    network: IPNetwork
    first: IPAddress      # first address that may be given
    last: IPAddress       # last address that may be given
    db_file: str = ""
    # How often allocations of entries that no longer exist are freed; 0 turns it off.
    reconcile_interval: float = 60.0

    @classmethod
    def from_section(cls, section: Section) -> IPAllocConfig:
        network = section.cidr("network_cidr", required=True)
        start = section.ip("ip_start")
        end = section.ip("ip_end")
        db_file = section.str("db_file")
        reconcile = section.duration("reconcileInterval", 60.0)
        if network is None:
            placeholder = ipaddress.ip_network("192.0.2.0/30")
            return cls(placeholder, placeholder[1], placeholder[2], db_file, reconcile)
        usable_first, usable_last = usable_range(network)
        first: Any = start or usable_first
        last: Any = end or usable_last
        if start is not None and start not in network:
            section.error("ip_start", f"{start} is outside network_cidr {network}")
        if end is not None and end not in network:
            section.error("ip_end", f"{end} is outside network_cidr {network}")
        if start is not None and end is not None and start.version == end.version and start > end:  # type: ignore[operator]
            section.error("ip_end", f"{end} comes before ip_start {start}")
        # The network and broadcast addresses are never given, even when
        # ip_start/ip_end name them.
        if first.version == network.version and first < usable_first:
            first = usable_first
        if last.version == network.version and last > usable_last:
            last = usable_last
        return cls(network=network, first=first, last=last, db_file=db_file, reconcile_interval=reconcile)

    def contains(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return ip.version == self.first.version and self.first <= ip <= self.last  # type: ignore[operator]


def usable_range(network: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """First and last host address: no network or broadcast address (except /31, /32)."""
    if network.num_addresses <= 2:
        return network[0], network[-1]
    if network.version == 4:
        return network[1], network[-2]
    return network[1], network[-1]

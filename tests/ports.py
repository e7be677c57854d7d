"""Free ports for the components the tests start.

A port the kernel gives for ``bind(port 0)`` comes from its ephemeral range,
the same range it draws from for every outgoing connection: between the test
picking it and the component binding it, a client socket of anything on the
machine may take it (CI saw a Consul agent die on "address already in use").
Ports here come from below that range instead, picked at random so that
concurrent test processes rarely meet, and checked free before use.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FLOOR = 15000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _candidates() -> range:
    low, high = _ephemeral_range()
    if low - _FLOOR >= 2000:
        return range(_FLOOR, low)
    return range(max(high + 1, 1024), 65536)  # an unusual ephemeral range: use what lies above it


def _is_free(port: int, address: str, udp: bool) -> bool:
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    held: list[socket.socket] = []
    try:
        for kind in kinds:
            sock = socket.socket(socket.AF_INET, kind)
            held.append(sock)
            sock.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        for sock in held:
            sock.close()


def free_ports(count: int, address: str = "127.0.0.1", *, udp: bool = False) -> list[int]:
    """``count`` distinct ports free on ``address`` (for UDP too when ``udp``)."""
    candidates = _candidates()
    ports: list[int] = []
    for _ in range(10_000):
        if len(ports) == count:
            return ports
        port = random.choice(candidates)
        if port not in ports and _is_free(port, address, udp):
            ports.append(port)
    raise RuntimeError(f"found only {len(ports)} of {count} free ports on {address}")


def free_port(address: str = "127.0.0.1") -> int:
    return free_ports(1, address)[0]

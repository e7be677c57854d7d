"""Where allocations live: a file (Swarm-only / standalone), memory (tests) or the cluster.

A store answers three questions atomically: who holds which address
(``load``), "give this address to this owner unless someone else has it"
(``claim``) and "this owner gives it back" (``release``).  The cluster-backed
store (kube_store.py) lets the API server enforce uniqueness.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
from pathlib import Path
from typing import Callable, Protocol

from extensions.kit.files import write_atomic

ChangeFn = Callable[[dict[str, str]], tuple[str, bool]]


class AllocationStore(Protocol):
    async def load(self) -> dict[str, str]:
        """Every allocation: address -> owner (entry name)."""
        ...

    async def claim(self, ip: str, owner: str) -> str:
        """Give ``ip`` to ``owner`` if free; return who holds it afterwards."""
        ...

    async def release(self, ip: str, owner: str) -> None:
        """Free ``ip`` if ``owner`` holds it; anything else is left alone."""
        ...


class MemoryStore:
    def __init__(self) -> None:
        self.allocations: dict[str, str] = {}
        self.writes = 0

    async def load(self) -> dict[str, str]:
        return dict(self.allocations)

    async def claim(self, ip: str, owner: str) -> str:
        holder = self.allocations.setdefault(ip, owner)
        if holder == owner:
            self.writes += 1
        return holder

    async def release(self, ip: str, owner: str) -> None:
        if self.allocations.get(ip) == owner:
            del self.allocations[ip]
            self.writes += 1


class FileStore:
    """JSON records ``[{"ip": ..., "host": owner}]`` (the Go program's db_file shape).

    Every change is written atomically under an exclusive lock on a side
    file, so two processes sharing the file never hand out one address twice.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def _read(self) -> dict[str, str]:
        try:
            raw = json.loads(self.path.read_text() or "[]")
        except FileNotFoundError:
            return {}
        if isinstance(raw, dict):  # {"ip": "owner"} written by hand
            return {str(k): str(v) for k, v in raw.items()}
        return {str(r["ip"]): str(r.get("host", "")) for r in raw if isinstance(r, dict) and "ip" in r}

    def _write(self, allocations: dict[str, str]) -> None:
        records = [{"ip": ip, "host": owner} for ip, owner in sorted(allocations.items())]
        write_atomic(self.path, json.dumps(records, indent=1).encode())

    def _locked(self, change: ChangeFn) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                allocations = self._read()
                result, changed = change(allocations)
                if changed:
                    self._write(allocations)
                return result
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    async def load(self) -> dict[str, str]:
        return await asyncio.to_thread(self._read)

    async def claim(self, ip: str, owner: str) -> str:
        def change(allocations: dict[str, str]) -> tuple[str, bool]:
            holder = allocations.get(ip)
            if holder is not None:
                return holder, False
            allocations[ip] = owner
            return owner, True

        async with self._lock:
            return await asyncio.to_thread(self._locked, change)

    async def release(self, ip: str, owner: str) -> None:
        def change(allocations: dict[str, str]) -> tuple[str, bool]:
            if allocations.get(ip) != owner:
                return "", False
            del allocations[ip]
            return "", True

        async with self._lock:
            await asyncio.to_thread(self._locked, change)



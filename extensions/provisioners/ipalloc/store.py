"""Where allocations live: a file (Swarm-only / standalone), memory (tests) or the cluster.

A store answers four questions atomically: who holds which address
(``load``), "give this address to this holder unless someone else has it"
(``claim``), "this holder gives it back" (``release``) and "this record,
written before instance ids, is now this instance's" (``remark``).  A holder
is the pair of ownership marks (extensions/kit/ownership.py): the instance
that made the allocation and the entry it is for.  The cluster-backed store
(kube_store.py) lets the API server enforce uniqueness.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
from pathlib import Path
from typing import Callable, Protocol

from extensions.kit.files import write_atomic
from extensions.kit.ownership import Mark

Holder = Mark
ChangeFn = Callable[[dict[str, Holder]], tuple[Holder | None, bool]]


class AllocationStore(Protocol):
    async def load(self) -> dict[str, Holder]:
        """Every allocation the store holds: address -> holder (every pool, every instance)."""
        ...

    async def claim(self, ip: str, holder: Holder) -> Holder:
        """Give ``ip`` to ``holder`` if free; return who holds it afterwards."""
        ...

    async def release(self, ip: str, holder: Holder) -> None:
        """Free ``ip`` if ``holder`` holds it; anything else is left alone."""
        ...

    async def remark(self, ip: str, old: Holder, new: Holder) -> bool:
        """Re-mark ``ip`` from ``old`` to ``new`` if ``old`` still holds it; True when done."""
        ...


class MemoryStore:
    def __init__(self) -> None:
        self.allocations: dict[str, Holder] = {}
        self.writes = 0

    async def load(self) -> dict[str, Holder]:
        return dict(self.allocations)

    async def claim(self, ip: str, holder: Holder) -> Holder:
        found = self.allocations.setdefault(ip, holder)
        if found == holder:
            self.writes += 1
        return found

    async def release(self, ip: str, holder: Holder) -> None:
        if self.allocations.get(ip) == holder:
            del self.allocations[ip]
            self.writes += 1

    async def remark(self, ip: str, old: Holder, new: Holder) -> bool:
        if self.allocations.get(ip) != old:
            return False
        self.allocations[ip] = new
        self.writes += 1
        return True


class FileStore:
    """JSON records ``[{"ip": ..., "host": entry, "instance": id}]`` (the Go program's db_file shape, plus our mark).

    A record without ``instance`` was written by the Go program or by a
    version before instance ids: it is adopted only for its own entry.

    Every change is written atomically under an exclusive lock on a side
    file, so two processes sharing the file never hand out one address twice.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def _read(self) -> dict[str, Holder]:
        try:
            raw = json.loads(self.path.read_text() or "[]")
        except FileNotFoundError:
            return {}
        if isinstance(raw, dict):  # {"ip": "owner"} written by hand
            return {str(k): Holder("", str(v)) for k, v in raw.items()}
        return {str(r["ip"]): Holder(str(r.get("instance", "")), str(r.get("host", "")))
                for r in raw if isinstance(r, dict) and "ip" in r}

    def _write(self, allocations: dict[str, Holder]) -> None:
        records = [{"ip": ip, "host": h.entry, **({"instance": h.instance} if h.instance else {})}
                   for ip, h in sorted(allocations.items())]
        write_atomic(self.path, json.dumps(records, indent=1).encode())

    def _locked(self, change: ChangeFn) -> Holder | None:
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

    async def load(self) -> dict[str, Holder]:
        return await asyncio.to_thread(self._read)

    async def claim(self, ip: str, holder: Holder) -> Holder:
        def change(allocations: dict[str, Holder]) -> tuple[Holder | None, bool]:
            found = allocations.get(ip)
            if found is not None:
                return found, False
            allocations[ip] = holder
            return holder, True

        async with self._lock:
            result = await asyncio.to_thread(self._locked, change)
        assert result is not None
        return result

    async def release(self, ip: str, holder: Holder) -> None:
        def change(allocations: dict[str, Holder]) -> tuple[Holder | None, bool]:
            if allocations.get(ip) != holder:
                return None, False
            del allocations[ip]
            return None, True

        async with self._lock:
            await asyncio.to_thread(self._locked, change)

    async def remark(self, ip: str, old: Holder, new: Holder) -> bool:
        def change(allocations: dict[str, Holder]) -> tuple[Holder | None, bool]:
            if allocations.get(ip) != old:
                return None, False
            allocations[ip] = new
            return new, True

        async with self._lock:
            return await asyncio.to_thread(self._locked, change) is not None



"""Where allocations live: a file (Swarm-only / standalone), memory (tests) or the cluster.

A store answers four questions atomically: who holds which address
(``load``), "give this address to this holder unless someone else has it"
(``claim``), "this holder gives it back" (``release``) and "this record,
written before instance ids, is now this instance's" (``remark``).  A holder
is the pair of ownership marks (extensions/kit/ownership.py): the instance
that made the allocation and the entry it is for.  The cluster-backed store
(kube_store.py) lets the API server enforce uniqueness.

Each allocation also records the pool it was taken from, for the people
reading it (``kubectl get ipallocations``).  Which pool an address belongs
to is decided by the configured ranges (pools never overlap), never by that
record: it may name a pool that was renamed since, or a network CIDR (what
versions before named pools wrote).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from extensions.kit.files import write_atomic
from extensions.kit.ownership import Mark

Holder = Mark


class AllocationStore(Protocol):
    async def load(self) -> dict[str, Holder]:
        """Every allocation the store holds: address -> holder (every pool, every instance)."""
        ...

    async def claim(self, ip: str, holder: Holder, pool: str = "") -> Holder:
        """Give ``ip`` to ``holder`` if free, recording the ``pool`` it is from; return who holds it afterwards."""
        ...

    async def release(self, ip: str, holder: Holder) -> None:
        """Free ``ip`` if ``holder`` holds it; anything else is left alone."""
        ...

    async def remark(self, ip: str, old: Holder, new: Holder, pool: str = "") -> bool:
        """Re-mark ``ip`` from ``old`` to ``new`` (and its pool) if ``old`` still holds it; True when done."""
        ...


class MemoryStore:
    def __init__(self) -> None:
        self.allocations: dict[str, Holder] = {}
        self.pools: dict[str, str] = {}  # ip -> the pool recorded with it
        self.writes = 0

    async def load(self) -> dict[str, Holder]:
        return dict(self.allocations)

    async def claim(self, ip: str, holder: Holder, pool: str = "") -> Holder:
        found = self.allocations.setdefault(ip, holder)
        if found == holder:
            self.pools[ip] = pool
            self.writes += 1
        return found

    async def release(self, ip: str, holder: Holder) -> None:
        if self.allocations.get(ip) == holder:
            del self.allocations[ip]
            self.pools.pop(ip, None)
            self.writes += 1

    async def remark(self, ip: str, old: Holder, new: Holder, pool: str = "") -> bool:
        if self.allocations.get(ip) != old:
            return False
        self.allocations[ip] = new
        self.pools[ip] = pool or self.pools.get(ip, "")
        self.writes += 1
        return True


@dataclass(frozen=True)
class Record:
    """One allocation as the file keeps it."""

    holder: Holder
    pool: str = ""  # "" in files written before pools were recorded


Records = dict[str, Record]
ChangeFn = Callable[[Records], tuple[Holder | None, bool]]


class FileStore:
    """JSON records ``[{"ip", "host": entry, "instance": id, "pool": name}]``: the Go db_file shape, plus ours.

    A record without ``instance`` was written by the Go program or by a
    version before instance ids: it is adopted only for its own entry.  A
    record without ``pool`` (written before pools) is read as it is; the
    address alone says which configured pool it is in.

    Every change is written atomically under an exclusive lock on a side
    file, so two processes sharing the file never hand out one address twice.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def _read(self) -> Records:
        try:
            raw = json.loads(self.path.read_text() or "[]")
        except FileNotFoundError:
            return {}
        if isinstance(raw, dict):  # {"ip": "owner"} written by hand
            return {str(k): Record(Holder("", str(v))) for k, v in raw.items()}
        return {str(r["ip"]): Record(Holder(str(r.get("instance", "")), str(r.get("host", ""))), str(r.get("pool", "")))
                for r in raw if isinstance(r, dict) and "ip" in r}

    def _write(self, records: Records) -> None:
        rows = [{"ip": ip, "host": r.holder.entry, **({"instance": r.holder.instance} if r.holder.instance else {}),
                 **({"pool": r.pool} if r.pool else {})}
                for ip, r in sorted(records.items())]
        write_atomic(self.path, json.dumps(rows, indent=1).encode())

    def _locked(self, change: ChangeFn) -> Holder | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                records = self._read()
                result, changed = change(records)
                if changed:
                    self._write(records)
                return result
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    async def _change(self, change: ChangeFn) -> Holder | None:
        async with self._lock:
            return await asyncio.to_thread(self._locked, change)

    async def load(self) -> dict[str, Holder]:
        records = await asyncio.to_thread(self._read)
        return {ip: r.holder for ip, r in records.items()}

    async def claim(self, ip: str, holder: Holder, pool: str = "") -> Holder:
        def change(records: Records) -> tuple[Holder | None, bool]:
            found = records.get(ip)
            if found is not None:
                return found.holder, False
            records[ip] = Record(holder, pool)
            return holder, True

        result = await self._change(change)
        assert result is not None
        return result

    async def release(self, ip: str, holder: Holder) -> None:
        def change(records: Records) -> tuple[Holder | None, bool]:
            found = records.get(ip)
            if found is None or found.holder != holder:
                return None, False
            del records[ip]
            return None, True

        await self._change(change)

    async def remark(self, ip: str, old: Holder, new: Holder, pool: str = "") -> bool:
        def change(records: Records) -> tuple[Holder | None, bool]:
            found = records.get(ip)
            if found is None or found.holder != old:
                return None, False
            records[ip] = Record(new, pool or found.pool)
            return new, True

        return await self._change(change) is not None

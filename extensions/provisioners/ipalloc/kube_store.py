"""IP allocations kept in the cluster, as ``IPAllocation`` objects (crds/).

One cluster-scoped object per address, named after it.  Names are unique, so
"give this address to this owner unless someone has it" is a plain create:
the API server answers 409 Conflict to the second one, whatever replica sent
it, and an allocation made just before a crash is found again at start-up.
No volume, no lock, no leader needed for correctness.

Requests go through extensions/kube_api.py, on the operator's loop.
"""

from __future__ import annotations

import ipaddress

from extensions.kube_api import KubeApi, KubeApiError

GROUP = "interlook.io"
VERSION = "v1"
PLURAL = "ipallocations"
MANAGED_BY = "app.kubernetes.io/managed-by"
COLLECTION = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


def object_name(ip: str) -> str:
    """10.0.0.5 -> 10-0-0-5; IPv6 in its exploded form, so the name starts and ends with a digit."""
    address = ipaddress.ip_address(ip)
    text = address.exploded if address.version == 6 else str(address)
    return text.replace(".", "-").replace(":", "-")


class KubeStore:
    """The ``AllocationStore`` of provisioner.ipalloc, backed by the API server."""

    def __init__(self, api: KubeApi, pool: str = ""):
        self.api = api
        self.pool = pool

    # -- AllocationStore ---------------------------------------------------
    async def load(self) -> dict[str, str]:
        listing = await self.api.get(COLLECTION)
        out: dict[str, str] = {}
        for item in listing.get("items") or []:
            spec = item.get("spec") or {}
            if spec.get("ip") and spec.get("owner"):
                out[str(spec["ip"])] = str(spec["owner"])
        return out

    async def claim(self, ip: str, owner: str) -> str:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPAllocation",
            "metadata": {"name": object_name(ip), "labels": {MANAGED_BY: "interlook"}},
            "spec": {"ip": ip, "owner": owner, **({"pool": self.pool} if self.pool else {})},
        }
        for _ in range(5):
            try:
                await self.api.post(COLLECTION, body)
                return owner
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
            try:
                current = await self.api.get(f"{COLLECTION}/{object_name(ip)}")
            except KubeApiError as exc:
                if exc.status == 404:  # released in between: try again
                    continue
                raise
            return str((current.get("spec") or {}).get("owner", ""))
        raise RuntimeError(f"cannot settle who holds {ip}: it keeps appearing and disappearing")

    async def release(self, ip: str, owner: str) -> None:
        path = f"{COLLECTION}/{object_name(ip)}"
        try:
            current = await self.api.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return
            raise
        if (current.get("spec") or {}).get("owner") != owner:
            return  # someone else's now: never free an address we do not hold
        # The precondition makes the delete fail if the object was replaced
        # (released and claimed by another owner) since we read it.
        meta = current["metadata"]
        options = {"apiVersion": "v1", "kind": "DeleteOptions",
                   "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}}
        try:
            await self.api.delete(path, options)
        except KubeApiError as exc:
            if exc.status not in (404, 409):
                raise

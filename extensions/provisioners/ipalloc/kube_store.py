"""IP allocations kept in the cluster, as ``IPAllocation`` objects (crds/).

One cluster-scoped object per address, named after it.  Names are unique, so
"give this address to this owner unless someone has it" is a plain create:
the API server answers 409 Conflict to the second one, whatever replica sent
it, and an allocation made just before a crash is found again at start-up.
No volume, no lock, no leader needed for correctness.

Each object carries its holder's marks (extensions/kit/ownership.py):
``spec.owner`` (the entry), ``spec.instance`` and the label
``interlook.io/instance`` (the Interlook that made it), and ``spec.pool`` (the
name of the pool it was taken from, shown by ``kubectl get ipallocations``).
Objects written before instance ids have no instance: they are adopted only
for their own entry (``remark``).

Requests go through extensions/kube_api.py, on the operator's loop.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from extensions.kube_api import KubeApi, KubeApiError
from extensions.provisioners.ipalloc.store import Holder

GROUP = "interlook.io"
VERSION = "v1"
PLURAL = "ipallocations"
MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "interlook.io/instance"
COLLECTION = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


def object_name(ip: str) -> str:
    """10.0.0.5 -> 10-0-0-5; IPv6 in its exploded form, so the name starts and ends with a digit."""
    address = ipaddress.ip_address(ip)
    text = address.exploded if address.version == 6 else str(address)
    return text.replace(".", "-").replace(":", "-")


class KubeStore:
    """The ``AllocationStore`` of provisioner.ipalloc, backed by the API server."""

    def __init__(self, api: KubeApi):
        self.api = api

    # -- AllocationStore ---------------------------------------------------
    async def load(self) -> dict[str, Holder]:
        # Every pool's and every instance's: an address another instance
        # holds is not free for us either (one object per address).  Which
        # of them are ours to sweep the provisioner decides (instance mark
        # and its own pools' ranges).
        listing = await self.api.get(COLLECTION)
        out: dict[str, Holder] = {}
        for item in listing.get("items") or []:
            holder = holder_of(item)
            if holder is not None:
                out[str(item["spec"]["ip"])] = holder
        return out

    async def claim(self, ip: str, holder: Holder, pool: str = "") -> Holder:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPAllocation",
            "metadata": {"name": object_name(ip), "labels": {MANAGED_BY: "interlook", INSTANCE_LABEL: holder.instance}},
            "spec": {"ip": ip, "owner": holder.entry, "instance": holder.instance,
                     **({"pool": pool} if pool else {})},
        }
        for _ in range(5):
            try:
                await self.api.post(COLLECTION, body, decode=False)
                return holder
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
            current = await self._read(ip)
            if current is None:  # released in between: try again
                continue
            return holder_of(current) or Holder("", "")
        raise RuntimeError(f"cannot settle who holds {ip}: it keeps appearing and disappearing")

    async def release(self, ip: str, holder: Holder) -> None:
        current = await self._read(ip)
        if current is None or holder_of(current) != holder:
            return  # someone else's now: never free an address we do not hold
        # The precondition makes the delete fail if the object was replaced
        # (released and claimed by another holder) since we read it.
        meta = current["metadata"]
        options = {"apiVersion": "v1", "kind": "DeleteOptions",
                   "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}}
        try:
            await self.api.delete(self._path(ip), options)
        except KubeApiError as exc:
            if exc.status not in (404, 409):
                raise

    async def remark(self, ip: str, old: Holder, new: Holder, pool: str = "") -> bool:
        current = await self._read(ip)
        if current is None or holder_of(current) != old:
            return False
        # A merge patch carrying the resourceVersion we read: refused (409) if anyone changed it since.
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"],
                              "labels": {INSTANCE_LABEL: new.instance}},
                 "spec": {"owner": new.entry, "instance": new.instance, **({"pool": pool} if pool else {})}}
        try:
            await self.api.patch(self._path(ip), patch)
        except KubeApiError as exc:
            if exc.status in (404, 409, 422):  # gone, changed meanwhile, or refused by the CRD's rules
                return False
            raise
        return True

    # -- plumbing ------------------------------------------------------------
    def _path(self, ip: str) -> str:
        return f"{COLLECTION}/{object_name(ip)}"

    async def _read(self, ip: str) -> dict[str, Any] | None:
        try:
            return await self.api.get(self._path(ip))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise


def holder_of(item: Mapping[str, Any]) -> Holder | None:
    """The marks of an IPAllocation; None when it names no address or owner."""
    spec = item.get("spec") or {}
    if not spec.get("ip") or not spec.get("owner"):
        return None
    return Holder(str(spec.get("instance") or ""), str(spec["owner"]))

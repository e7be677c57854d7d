"""IP allocations kept in the cluster, as ``IPAllocation`` objects (crds/).

One cluster-scoped object per address, named after it.  Names are unique, so
"give this address to this owner unless someone has it" is a plain create:
the API server answers 409 Conflict to the second one, whatever replica sent
it, and an allocation made just before a crash is found again at start-up.
No volume, no lock, no leader needed for correctness.

The blocking Kubernetes client runs in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

GROUP = "interlook.io"
VERSION = "v1"
PLURAL = "ipallocations"
MANAGED_BY = "app.kubernetes.io/managed-by"


def object_name(ip: str) -> str:
    """10.0.0.5 -> 10-0-0-5; IPv6 in its exploded form, so the name starts and ends with a digit."""
    address = ipaddress.ip_address(ip)
    text = address.exploded if address.version == 6 else str(address)
    return text.replace(".", "-").replace(":", "-")


class KubeStore:
    """The ``AllocationStore`` of provisioner.ipalloc, backed by the API server."""

    def __init__(self, api_client: Any, pool: str = ""):
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.pool = pool

    # -- AllocationStore ---------------------------------------------------
    async def load(self) -> dict[str, str]:
        return await asyncio.to_thread(self._load)

    async def claim(self, ip: str, owner: str) -> str:
        return await asyncio.to_thread(self._claim, ip, owner)

    async def release(self, ip: str, owner: str) -> None:
        await asyncio.to_thread(self._release, ip, owner)

    # -- blocking halves ---------------------------------------------------
    def _load(self) -> dict[str, str]:
        listing: Any = self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        out: dict[str, str] = {}
        for item in listing.get("items") or []:
            spec = item.get("spec") or {}
            if spec.get("ip") and spec.get("owner"):
                out[str(spec["ip"])] = str(spec["owner"])
        return out

    def _claim(self, ip: str, owner: str) -> str:
        from kubernetes.client.exceptions import ApiException

        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPAllocation",
            "metadata": {"name": object_name(ip), "labels": {MANAGED_BY: "interlook"}},
            "spec": {"ip": ip, "owner": owner, **({"pool": self.pool} if self.pool else {})},
        }
        for _ in range(5):
            try:
                self.api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
                return owner
            except ApiException as exc:
                if exc.status != 409:
                    raise
            try:
                current: Any = self.api.get_cluster_custom_object(GROUP, VERSION, PLURAL, object_name(ip))
            except ApiException as exc:
                if exc.status == 404:  # released in between: try again
                    continue
                raise
            return str((current.get("spec") or {}).get("owner", ""))
        raise RuntimeError(f"cannot settle who holds {ip}: it keeps appearing and disappearing")

    def _release(self, ip: str, owner: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        name = object_name(ip)
        try:
            current: Any = self.api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if (current.get("spec") or {}).get("owner") != owner:
            return  # someone else's now: never free an address we do not hold
        # The precondition makes the delete fail if the object was replaced
        # (released and claimed by another owner) since we read it.
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(
            uid=current["metadata"]["uid"], resource_version=current["metadata"]["resourceVersion"]))
        try:
            self.api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name, body=options)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

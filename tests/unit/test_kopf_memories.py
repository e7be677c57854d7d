"""kopf's per-object memory after our patch (controller/main.py): one shared, read-only daemons' record."""

from __future__ import annotations

import pytest
from kopf._core.reactor.inventory import ResourceMemories

import controller.main  # noqa: F401  -- applies the patch


def _body(kind: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"}}


async def test_services_and_endpoint_slices_share_one_empty_daemons_record() -> None:
    memories = ResourceMemories()
    one = await memories.recall(_body("Service", "a"))
    two = await memories.recall(_body("EndpointSlice", "b"))
    assert one.daemons_memory is two.daemons_memory
    assert one.daemons_memory.live_fresh_body is None and not one.daemons_memory.running_daemons
    assert await memories.recall(_body("Service", "a")) is one  # still remembered per object
    assert one.error_throttler is not two.error_throttler  # the rest stays per object


async def test_kinds_with_daemons_keep_their_own_record() -> None:
    memories = ResourceMemories()
    peering = await memories.recall({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                     "metadata": {"name": "default", "uid": "uid-p"}})
    service = await memories.recall(_body("Service", "a"))
    assert peering.daemons_memory is not service.daemons_memory
    peering.daemons_memory.live_fresh_body = None  # writable: kopf runs its daemon with it


async def test_the_shared_record_refuses_writes() -> None:
    """A daemon or timer added to these kinds later must fail loudly, not share state between objects."""
    memories = ResourceMemories()
    shared = (await memories.recall(_body("Service", "a"))).daemons_memory
    with pytest.raises(AttributeError):
        shared.live_fresh_body = object()  # type: ignore[assignment]
    with pytest.raises((AttributeError, TypeError)):
        shared.running_daemons["x"] = object()  # type: ignore[index]
    with pytest.raises(AttributeError):
        shared.forever_stopped.add("x")  # type: ignore[attr-defined]

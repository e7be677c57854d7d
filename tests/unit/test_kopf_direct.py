"""Service and EndpointSlice events go straight to our handlers once kopf has indexed (controller/main.py).

For a kind whose only kopf handlers are ours (an unfiltered event handler,
and for EndpointSlices the slice index), an event after kopf's start-up
indexing updates the index and calls our handler as kopf would, without
kopf's per-event machinery.  Any other handler on the kind, and every event
before the indexes are complete, goes through kopf's own processor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from typing import Any, Callable

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs.references import Resource
from kopf._core.actions import lifecycles
from kopf._core.engines.indexing import OperatorIndexers
from kopf._core.intents import registries
from kopf._core.reactor import inventory, processing, running

import controller.main as main
from extensions.providers.kubernetes.contract import summarize_endpoint_slice

SERVICES = Resource(group="", version="v1", plural="services", kind="Service", namespaced=True)
SLICES = Resource(group="discovery.k8s.io", version="v1", plural="endpointslices", kind="EndpointSlice",
                  namespaced=True)
NODES = Resource(group="", version="v1", plural="nodes", kind="Node", namespaced=False)
NAMESPACES = Resource(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False)
OURS = kopf.get_default_registry()  # what controller/main.py registered
SLICE_INDEX = "endpoints_idx"
EVENT_TYPES = ["ADDED", "MODIFIED", "DELETED", None]  # None: kopf's listing


def service(name: str = "web") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "resourceVersion": "7"},
            "spec": {"type": "LoadBalancer"}}


def endpoint_slice(name: str = "web-abc", service_name: str | None = "web", nodes: tuple[str, ...] = ("n1",),
                   ) -> dict[str, Any]:
    labels = {"app": "web"} | ({main.SERVICE_NAME_LABEL: service_name} if service_name is not None else {})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "labels": labels},
            "endpoints": [{"addresses": [f"10.0.0.{i}"], "nodeName": node, "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "namespace": "ns", "name": f"pod-{i}"}}
                          for i, node in enumerate(nodes)]}


class Processor:
    """kopf's own processor, as far as the test can see it: records what it was given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, **kwargs: Any) -> str:
        self.events.append(kwargs["raw_event"])
        return "kopf"


class Calls:
    """What our handlers were called with, in place of the operator's lifecycle."""

    def __init__(self) -> None:
        self.services: list[tuple[str, str, str | None]] = []
        self.bodies: list[Any] = []
        self.endpoints: list[tuple[Any, dict[str, str]]] = []


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    seen = Calls()

    async def on_service(body: Any, namespace: str, name: str, type: str | None) -> None:
        seen.services.append((namespace, name, type))
        seen.bodies.append(body)

    async def on_endpoints(namespace: Any, labels: Any) -> None:
        seen.endpoints.append((namespace, dict(labels)))

    monkeypatch.setattr(main, "_on_service", on_service)
    monkeypatch.setattr(main, "_on_endpoints", on_endpoints)
    return seen


async def indexed() -> aiotoggles.ToggleSet:
    """kopf's readiness once every kind is listed and every object indexed: an all-set with its toggles on."""
    toggles = aiotoggles.ToggleSet(all)
    await toggles.make_toggle(True, name="services listed")
    return toggles


async def still_indexing() -> aiotoggles.ToggleSet:
    toggles = await indexed()
    await toggles.make_toggle(False, name="endpointslices not yet listed")
    return toggles


def slice_indexers(registry: registries.OperatorRegistry = OURS) -> OperatorIndexers:
    indexers = OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())  # noqa: SLF001
    return indexers


def slice_index(indexers: OperatorIndexers) -> dict[Any, list[Any]]:
    index = indexers.indices[SLICE_INDEX]
    return {key: list(index[key]) for key in index}


def our_handlers_only() -> registries.OperatorRegistry:
    """A registry with exactly the handlers controller/main.py registers for Services and EndpointSlices."""
    registry = registries.OperatorRegistry()
    kopf.on.event("", "v1", "services", id="service_event", registry=registry)(main.service_event)
    kopf.on.event("discovery.k8s.io", "v1", "endpointslices", id="endpoints_changed",
                  registry=registry)(main.endpoints_changed)
    kopf.index("discovery.k8s.io", "v1", "endpointslices", id=SLICE_INDEX, labels=main.SLICE_LABELS,
               registry=registry)(main.endpoints_idx)
    return registry


async def process(kopf_processor: Processor, raw_event: dict[str, Any], resource: Resource = SERVICES,
                  registry: registries.OperatorRegistry = OURS, **kwargs: Any) -> Any:
    kwargs.setdefault("operator_indexed", None)
    kwargs.setdefault("resource_indexed", None)
    kwargs.setdefault("memories", inventory.ResourceMemories())
    return await main.straight_to_our_handlers(kopf_processor)(raw_event=raw_event, resource=resource,
                                                               registry=registry, **kwargs)


# ---------------------------------------------------------------- Services


@pytest.mark.parametrize("type", EVENT_TYPES)
@pytest.mark.parametrize("readiness", ["no toggles (observation)", "all toggles on"])
async def test_a_service_event_goes_to_our_handler_without_kopf_once_indexed(calls: Calls, type: str | None,
                                                                            readiness: str) -> None:
    kopf_processor = Processor()
    operator_indexed = None if readiness.startswith("no") else await indexed()
    body = service()

    answer = await process(kopf_processor, {"type": type, "object": body}, operator_indexed=operator_indexed)

    assert answer is None
    assert calls.services == [("ns", "web", type)]
    assert calls.bodies == [body]
    assert kopf_processor.events == []


@pytest.mark.parametrize("type", EVENT_TYPES)
@pytest.mark.parametrize("resource", [SERVICES, SLICES])
@pytest.mark.parametrize("readiness", ["a kind not yet listed", "this object's worker still indexing"])
async def test_every_event_goes_through_kopf_before_indexing_is_complete(calls: Calls, type: str | None,
                                                                         resource: Resource, readiness: str) -> None:
    kopf_processor = Processor()
    if readiness == "a kind not yet listed":
        operator_indexed, resource_indexed = await still_indexing(), None
    else:  # kopf's worker carries its object's toggle for as long as it lives
        operator_indexed, resource_indexed = await indexed(), aiotoggles.Toggle(True, name="the object")
    body = service() if resource is SERVICES else endpoint_slice()
    event = {"type": type, "object": body}
    indexers = slice_indexers()

    answer = await process(kopf_processor, event, resource=resource, indexers=indexers,
                           operator_indexed=operator_indexed, resource_indexed=resource_indexed)

    assert answer == "kopf"
    assert kopf_processor.events == [event]
    assert calls.services == [] and calls.endpoints == []
    assert slice_index(indexers) == {}


async def test_the_same_processor_goes_direct_once_kopfs_readiness_turns_on(calls: Calls) -> None:
    kopf_processor = Processor()
    process_event = main.straight_to_our_handlers(kopf_processor)
    operator_indexed = aiotoggles.ToggleSet(all)
    listing = await operator_indexed.make_toggle(False, name="endpointslices")
    event = {"type": "MODIFIED", "object": service()}

    await process_event(raw_event=event, resource=SERVICES, registry=OURS, operator_indexed=operator_indexed,
                        resource_indexed=None, memories=None, indexers=None)
    await listing.turn_to(True)
    await process_event(raw_event=event, resource=SERVICES, registry=OURS, operator_indexed=operator_indexed,
                        resource_indexed=None, memories=None, indexers=None)

    assert kopf_processor.events == [event]
    assert calls.services == [("ns", "web", "MODIFIED")]


async def test_a_deleted_service_is_forgotten_by_kopfs_memories(calls: Calls) -> None:
    memories = inventory.ResourceMemories()
    remembered = await memories.recall(service(), noticed_by_listing=True)  # as kopf did at the listing
    other = await memories.recall(service("api"), noticed_by_listing=True)

    await process(Processor(), {"type": "DELETED", "object": service()}, memories=memories)

    assert await memories.recall(service()) is not remembered  # a fresh memory: the old one is gone
    assert await memories.recall(service("api")) is other


@pytest.mark.parametrize("type", ["ADDED", "MODIFIED", None])
async def test_a_service_that_is_not_deleted_stays_in_kopfs_memories(calls: Calls, type: str | None) -> None:
    memories = inventory.ResourceMemories()
    remembered = await memories.recall(service(), noticed_by_listing=True)

    await process(Processor(), {"type": type, "object": service()}, memories=memories)

    assert await memories.recall(service()) is remembered


async def test_an_error_in_our_service_handler_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    async def failing(body: Any, namespace: str, name: str, type: str | None) -> None:
        raise RuntimeError("the lifecycle broke")

    monkeypatch.setattr(main, "_on_service", failing)
    kopf_processor = Processor()

    with caplog.at_level(logging.ERROR, logger="interlook.kopf"):
        answer = await process(kopf_processor, {"type": "MODIFIED", "object": service()})

    assert answer is None
    assert kopf_processor.events == []  # not handled a second time by kopf
    [record] = [r for r in caplog.records if r.name == "interlook.kopf"]
    assert record.levelno == logging.ERROR
    assert "MODIFIED of ns/web" in record.getMessage()
    assert record.exc_info is not None and "the lifecycle broke" in str(record.exc_info[1])


async def test_an_error_in_our_endpoints_handler_is_logged_after_the_index_is_updated(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def failing(namespace: Any, labels: Any) -> None:
        raise RuntimeError("the lifecycle broke")

    monkeypatch.setattr(main, "_on_endpoints", failing)
    indexers = slice_indexers()
    body = endpoint_slice()

    with caplog.at_level(logging.ERROR, logger="interlook.kopf"):
        answer = await process(Processor(), {"type": None, "object": body}, resource=SLICES, indexers=indexers)

    assert answer is None
    assert "the listing of ns/web-abc" in caplog.text
    assert slice_index(indexers) == {("ns", "web"): [summarize_endpoint_slice(body)]}


# ---------------------------------------------------------------- EndpointSlices


@pytest.mark.parametrize("type", ["ADDED", None])
async def test_a_new_slice_is_indexed_under_its_service_and_our_handler_called(calls: Calls,
                                                                               type: str | None) -> None:
    kopf_processor = Processor()
    indexers = slice_indexers()
    body = endpoint_slice()
    labels = body["metadata"]["labels"]

    answer = await process(kopf_processor, {"type": type, "object": body}, resource=SLICES, indexers=indexers,
                           operator_indexed=await indexed())

    assert answer is None
    assert kopf_processor.events == []
    assert slice_index(indexers) == {("ns", "web"): [summarize_endpoint_slice(body)]}
    assert main.endpoint_slice_index(body, "ns", labels) == {("ns", "web"): summarize_endpoint_slice(body)}
    assert calls.endpoints == [("ns", labels)]


async def test_a_modified_slice_replaces_its_own_entry_and_keeps_its_siblings(calls: Calls) -> None:
    indexers = slice_indexers()
    first, sibling = endpoint_slice("web-abc", nodes=("n1",)), endpoint_slice("web-def", nodes=("n2",))
    moved = endpoint_slice("web-abc", nodes=("n3", "n4"))

    for event in ({"type": "ADDED", "object": first}, {"type": "ADDED", "object": sibling},
                  {"type": "MODIFIED", "object": moved}):
        await process(Processor(), event, resource=SLICES, indexers=indexers)

    [store] = slice_index(indexers).values()
    assert sorted(store, key=lambda view: view.slice_name) == [summarize_endpoint_slice(moved),
                                                               summarize_endpoint_slice(sibling)]
    assert summarize_endpoint_slice(first) not in store
    assert len(calls.endpoints) == 3


async def test_a_slice_moved_to_another_service_leaves_the_first(calls: Calls) -> None:
    indexers = slice_indexers()
    await process(Processor(), {"type": "ADDED", "object": endpoint_slice()}, resource=SLICES, indexers=indexers)
    moved = endpoint_slice(service_name="api")

    await process(Processor(), {"type": "MODIFIED", "object": moved}, resource=SLICES, indexers=indexers)

    assert slice_index(indexers) == {("ns", "api"): [summarize_endpoint_slice(moved)]}
    assert calls.endpoints[-1] == ("ns", moved["metadata"]["labels"])


@pytest.mark.parametrize("label", ["removed", "emptied"])
async def test_a_slice_without_its_service_label_leaves_the_index(calls: Calls, label: str) -> None:
    indexers = slice_indexers()
    await process(Processor(), {"type": "ADDED", "object": endpoint_slice()}, resource=SLICES, indexers=indexers)
    orphan = endpoint_slice(service_name=None if label == "removed" else "")

    answer = await process(Processor(), {"type": "MODIFIED", "object": orphan}, resource=SLICES, indexers=indexers)

    assert answer is None
    assert slice_index(indexers) == {}
    assert calls.endpoints[-1] == ("ns", orphan["metadata"]["labels"])


async def test_a_deleted_slice_leaves_the_index_and_kopfs_memories(calls: Calls) -> None:
    indexers = slice_indexers()
    memories = inventory.ResourceMemories()
    body, sibling = endpoint_slice("web-abc"), endpoint_slice("web-def", nodes=("n2",))
    for event in ({"type": "ADDED", "object": body}, {"type": "ADDED", "object": sibling}):
        await process(Processor(), event, resource=SLICES, indexers=indexers, memories=memories)
    remembered = await memories.recall(body, noticed_by_listing=True)

    answer = await process(Processor(), {"type": "DELETED", "object": body}, resource=SLICES, indexers=indexers,
                           memories=memories)

    assert answer is None
    assert slice_index(indexers) == {("ns", "web"): [summarize_endpoint_slice(sibling)]}
    assert await memories.recall(body) is not remembered
    assert calls.endpoints[-1] == ("ns", body["metadata"]["labels"])


async def test_kopfs_index_handler_and_the_direct_path_index_the_same_value(calls: Calls) -> None:
    body = endpoint_slice(nodes=("n1", "n2"))
    meta = body["metadata"]
    indexers = slice_indexers()

    await process(Processor(), {"type": "ADDED", "object": body}, resource=SLICES, indexers=indexers)
    by_kopf = await main.endpoints_idx(body=kopf.Body(body), namespace=meta["namespace"],
                                       labels=kopf.Body(body).metadata.labels)

    assert {key: [value] for key, value in by_kopf.items()} == slice_index(indexers)


def kopfs_own_processor() -> Callable[..., Any]:
    """The kopf processor our wrapper hands every other event to."""
    return inspect.getclosurevars(processing.process_resource_event).nonlocals["original"]  # type: ignore[no-any-return]


async def run_kopfs_own_processor(resource: Resource, raw_event: dict[str, Any], indexers: OperatorIndexers) -> None:
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = main.NoDiffBase()  # as startup() sets it
    await kopfs_own_processor()(
        lifecycle=lifecycles.all_at_once, indexers=indexers, registry=OURS, settings=settings,
        memories=inventory.ResourceMemories(), memobase=kopf.Memo(), resource=resource,
        raw_event=raw_event, event_queue=asyncio.Queue(), no_throttling=True)


@pytest.mark.parametrize("type", EVENT_TYPES)
async def test_kopfs_processor_and_the_direct_path_call_our_service_handler_alike(calls: Calls,
                                                                                  type: str | None) -> None:
    event = {"type": type, "object": service()}
    await run_kopfs_own_processor(SERVICES, event, slice_indexers())
    kopfs_calls, kopfs_bodies = calls.services, [dict(body) for body in calls.bodies]
    calls.services, calls.bodies = [], []

    await process(Processor(), event)

    assert kopfs_calls == [("ns", "web", type)]  # kopf did call our handler: the comparison means something
    assert calls.services == kopfs_calls
    assert calls.bodies == kopfs_bodies


@pytest.mark.parametrize("events", [
    [("ADDED", endpoint_slice())],
    [(None, endpoint_slice()), ("MODIFIED", endpoint_slice(nodes=("n2", "n3")))],
    [("ADDED", endpoint_slice()), ("MODIFIED", endpoint_slice(service_name="api"))],
    [("ADDED", endpoint_slice()), ("MODIFIED", endpoint_slice(service_name=None))],
    [("ADDED", endpoint_slice()), ("DELETED", endpoint_slice())],
])
async def test_kopfs_processor_and_the_direct_path_leave_the_same_index_and_calls(
        calls: Calls, events: list[tuple[str | None, dict[str, Any]]]) -> None:
    """kopf itself, not a copy of its rules, is the reference the direct path is held to."""
    by_kopf, direct = slice_indexers(), slice_indexers()
    for type, body in events:
        await run_kopfs_own_processor(SLICES, {"type": type, "object": body}, by_kopf)
    kopfs_calls, calls.endpoints = calls.endpoints, []

    for type, body in events:
        await process(Processor(), {"type": type, "object": body}, resource=SLICES, indexers=direct)

    assert slice_index(direct) == slice_index(by_kopf)
    assert calls.endpoints == kopfs_calls
    assert len(kopfs_calls) == len(events)  # kopf did call our handler: the comparison means something


# ---------------------------------------------------------------- kinds kopf keeps


async def test_a_registry_with_exactly_our_handlers_goes_direct(calls: Calls) -> None:
    """The base the next tests change one thing of: without the change, no event reaches kopf."""
    kopf_processor = Processor()
    registry = our_handlers_only()
    indexers = slice_indexers(registry)

    await process(kopf_processor, {"type": "ADDED", "object": service()}, registry=registry)
    await process(kopf_processor, {"type": "ADDED", "object": endpoint_slice()}, resource=SLICES,
                  registry=registry, indexers=indexers)

    assert kopf_processor.events == []
    assert calls.services == [("ns", "web", "ADDED")]
    assert list(slice_index(indexers)) == [("ns", "web")]


async def _other(**_: Any) -> None:
    return None


def _replace_ours(registry: registries.OperatorRegistry, kind: str, **changes: Any) -> None:
    """Our own handler with one more condition: kopf checks it on each event, the direct path cannot."""
    handlers = getattr(registry, kind)._handlers  # noqa: SLF001
    [index] = [i for i, h in enumerate(handlers) if h.fn in (main.service_event, main.endpoints_idx)]
    handlers[index] = dataclasses.replace(handlers[index], **changes)


CHANGES: dict[str, tuple[Resource, Callable[[registries.OperatorRegistry], Any]]] = {
    "another Service event handler": (SERVICES, lambda r: kopf.on.event(
        "", "v1", "services", id="other", registry=r)(_other)),
    "a label filter on our Service handler": (SERVICES, lambda r: _replace_ours(
        r, "_watching", labels={"team": "a"})),
    "a when filter on our Service handler": (SERVICES, lambda r: _replace_ours(
        r, "_watching", when=lambda **_: True)),
    "an index on Services": (SERVICES, lambda r: kopf.index(
        "", "v1", "services", id="services_idx", registry=r)(_other)),
    "a create handler on Services": (SERVICES, lambda r: kopf.on.create(
        "", "v1", "services", id="created", registry=r)(_other)),
    "a daemon on Services": (SERVICES, lambda r: kopf.daemon(
        "", "v1", "services", id="daemon", registry=r)(_other)),
    "another EndpointSlice event handler": (SLICES, lambda r: kopf.on.event(
        "discovery.k8s.io", "v1", "endpointslices", id="other", registry=r)(_other)),
    "another index on EndpointSlices": (SLICES, lambda r: kopf.index(
        "discovery.k8s.io", "v1", "endpointslices", id="other_idx", registry=r)(_other)),
    "our slice index without its label filter": (SLICES, lambda r: _replace_ours(r, "_indexing", labels=None)),
    "an update handler on EndpointSlices": (SLICES, lambda r: kopf.on.update(
        "discovery.k8s.io", "v1", "endpointslices", id="updated", registry=r)(_other)),
    "a timer on EndpointSlices": (SLICES, lambda r: kopf.timer(
        "discovery.k8s.io", "v1", "endpointslices", id="timer", registry=r)(_other)),
}


@pytest.mark.parametrize("type", EVENT_TYPES)
@pytest.mark.parametrize("change", CHANGES)
async def test_a_kind_with_any_other_kopf_handler_goes_through_kopf(calls: Calls, change: str,
                                                                   type: str | None) -> None:
    resource, add = CHANGES[change]
    registry = our_handlers_only()
    add(registry)
    indexers = slice_indexers(registry)
    kopf_processor = Processor()
    event = {"type": type, "object": service() if resource is SERVICES else endpoint_slice()}

    answer = await process(kopf_processor, event, resource=resource, registry=registry, indexers=indexers,
                           operator_indexed=await indexed())

    assert answer == "kopf"
    assert kopf_processor.events == [event]
    assert calls.services == [] and calls.endpoints == []
    assert slice_index(indexers) == {}


async def test_a_handler_added_after_the_first_event_sends_later_events_through_kopf(calls: Calls) -> None:
    registry = our_handlers_only()
    kopf_processor = Processor()
    process_event = main.straight_to_our_handlers(kopf_processor)
    event = {"type": "MODIFIED", "object": service()}
    await process_event(raw_event=event, resource=SERVICES, registry=registry, operator_indexed=None,
                        resource_indexed=None, memories=None, indexers=None)

    kopf.on.create("", "v1", "services", id="created", registry=registry)(_other)
    await process_event(raw_event=event, resource=SERVICES, registry=registry, operator_indexed=None,
                        resource_indexed=None, memories=None, indexers=None)

    assert kopf_processor.events == [event]


@pytest.mark.parametrize(("resource", "body"), [
    (NODES, {"kind": "Node", "metadata": {"name": "n1", "uid": "uid-n1"}}),
    (NAMESPACES, {"kind": "Namespace", "metadata": {"name": "ns", "uid": "uid-ns"}}),
    (Resource(group="", version="v1", plural="pods"), {"kind": "Pod", "metadata": {"name": "p", "uid": "uid-p"}}),
])
async def test_our_other_kinds_and_kinds_without_handlers_go_through_kopf(calls: Calls, resource: Resource,
                                                                         body: dict[str, Any]) -> None:
    kopf_processor = Processor()
    event = {"type": "MODIFIED", "object": body}

    answer = await process(kopf_processor, event, resource=resource, operator_indexed=await indexed())

    assert answer == "kopf"
    assert kopf_processor.events == [event]
    assert calls.services == [] and calls.endpoints == []


# ---------------------------------------------------------------- the kopf we ship with


def test_the_patch_is_applied_to_the_kopf_we_ship_with() -> None:
    """Installed only when kopf's processor has every parameter the wrapper reads."""
    assert getattr(processing.process_resource_event, "_interlook_patched", False)
    original = kopfs_own_processor()
    assert original.__module__ == processing.__name__ and original.__name__ == "process_resource_event"
    assert {"raw_event", "resource", "registry", "indexers", "memories", "operator_indexed",
            "resource_indexed"} <= inspect.signature(original).parameters.keys()


def test_kopf_looks_its_processor_up_on_the_module_where_the_patch_is() -> None:
    """Were kopf to import the function by name, the patch would be installed and never called."""
    assert "processing.process_resource_event" in inspect.getsource(running)

"""The echo of our own write of a Service skips kopf's per-event machinery (controller/main.py), and only that.

The write-back remembers, per Service uid, the resourceVersion its last
write made; the watch event showing exactly that version goes straight to
our handler.  Everything else goes through kopf as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
from kopf._cogs.structs.references import Resource
from kopf._core.intents import registries
from kopf._core.reactor import processing

import controller.main as main
from extensions.providers.kubernetes.contract import Scope
from extensions.providers.kubernetes.writeback import StatusWriter

SERVICES = Resource(group="", version="v1", plural="services")
OURS = kopf.get_default_registry()  # what controller/main.py registered
SLICES = Resource(group="discovery.k8s.io", version="v1", plural="endpointslices")


@dataclass
class Api:
    """Answers every PATCH with the next resourceVersion, as the API server does."""

    version: int = 10
    patched: list[str] = field(default_factory=list)

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        self.version += 1
        self.patched.append(path)
        return {"metadata": {"uid": "uid-web", "name": "web", "namespace": "ns", "resourceVersion": str(self.version)}}


def service(version: str, uid: str = "uid-web") -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"namespace": "ns", "name": "web", "uid": uid, "resourceVersion": version}}


def writer(api: Api) -> StatusWriter:
    return StatusWriter(api, Scope(), lambda namespace, name: service("10"))  # type: ignore[arg-type]


async def test_the_version_our_write_made_is_an_echo_once() -> None:
    api = Api()
    status = writer(api)
    await status.add_finalizer("ns", "web", "interlook.io/finalizer", service("10"))

    assert not status.is_echo(service("10"))           # what came before our write
    assert not status.is_echo(service("11", "uid-b"))  # another object
    assert status.is_echo(service("11"))
    assert not status.is_echo(service("11"))           # consumed: a second delivery goes through kopf


async def test_only_the_last_write_is_remembered_and_a_deletion_forgets_it() -> None:
    api = Api()
    status = writer(api)
    await status.add_finalizer("ns", "web", "interlook.io/finalizer", service("10"))
    await status.release_finalizer("ns", "web", "interlook.io/finalizer")
    assert not status.is_echo(service("11"))
    status.gone("uid-web")
    assert not status.is_echo(service("12"))


@dataclass
class Handlers:
    """A kopf registry part that has handlers for one plural."""

    plural: str

    def has_handlers(self, resource: Resource) -> bool:
        return resource.plural == self.plural


class Processor:
    """kopf's own processor, as far as the test can see it: records what it was given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, **kwargs: Any) -> str:
        self.events.append(kwargs["raw_event"])
        return "kopf"


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> tuple[StatusWriter, list[tuple[str, str, str | None]]]:
    status = writer(Api())
    handled: list[tuple[str, str, str | None]] = []

    async def on_service(body: Any, namespace: str, name: str, type: str | None) -> None:
        handled.append((namespace, name, type))

    monkeypatch.setattr(main, "_on_service", on_service)
    monkeypatch.setattr(main.OPERATOR, "lifecycle", type("Lifecycle", (), {"writer": status})())
    return status, handled


async def test_an_echo_goes_to_our_handler_without_kopf(wired) -> None:
    status, handled = wired
    await status.add_finalizer("ns", "web", "interlook.io/finalizer", service("10"))
    kopf = Processor()
    process = main.echoes_to_our_handler(kopf)

    answer = await process(raw_event={"type": "MODIFIED", "object": service("11")}, resource=SERVICES,
                           registry=OURS)

    assert answer is None
    assert handled == [("ns", "web", "MODIFIED")]
    assert kopf.events == []


@pytest.mark.parametrize("event", [
    {"type": "MODIFIED", "object": service("12")},   # a change after ours (someone else's)
    {"type": "ADDED", "object": service("11")},
    {"type": "DELETED", "object": service("11")},
    {"type": None, "object": service("11")},         # kopf's listing
])
async def test_every_other_event_goes_through_kopf(wired, event: dict[str, Any]) -> None:
    status, handled = wired
    await status.add_finalizer("ns", "web", "interlook.io/finalizer", service("10"))
    kopf = Processor()

    answer = await main.echoes_to_our_handler(kopf)(raw_event=event, resource=SERVICES,
                                                    registry=OURS)

    assert answer == "kopf"
    assert kopf.events == [event]
    assert handled == []


async def test_other_kinds_and_kinds_with_other_kopf_handlers_go_through_kopf(wired) -> None:
    status, handled = wired
    await status.add_finalizer("ns", "web", "interlook.io/finalizer", service("10"))
    with_index = registries.OperatorRegistry()
    with_index._watching = OURS._watching  # noqa: SLF001
    with_index._indexing = Handlers(plural="services")  # type: ignore[assignment]  # noqa: SLF001
    kopf = Processor()
    process = main.echoes_to_our_handler(kopf)
    echo = {"type": "MODIFIED", "object": service("11")}

    assert await process(raw_event=echo, resource=SLICES, registry=OURS) == "kopf"
    assert await process(raw_event=echo, resource=SERVICES, registry=with_index) == "kopf"
    assert handled == []
    assert status.is_echo(service("11"))  # neither consumed it


@pytest.mark.parametrize("change", ["second handler", "filtered"])
async def test_a_service_event_handler_other_than_ours_sends_echoes_through_kopf(wired, change: str) -> None:
    """Our handler is all the short path calls: another one (or a filter on ours) must see every event."""
    status, handled = wired
    await status.add_finalizer("ns", "web", "interlook.io/finalizer", service("10"))
    registry = registries.OperatorRegistry()
    ours = [h for h in OURS._watching.get_all_handlers() if h.id == "service_event"]  # noqa: SLF001
    assert len(ours) == 1
    if change == "second handler":
        registry._watching.append(ours[0])  # noqa: SLF001
        registry._watching.append(dataclasses.replace(ours[0], id="other", fn=lambda **_: None))  # noqa: SLF001
    else:
        registry._watching.append(dataclasses.replace(ours[0], labels={"team": "a"}))  # noqa: SLF001
    kopf_processor = Processor()

    answer = await main.echoes_to_our_handler(kopf_processor)(
        raw_event={"type": "MODIFIED", "object": service("11")}, resource=SERVICES, registry=registry)

    assert answer == "kopf"
    assert handled == []


def test_the_patch_is_applied_to_the_kopf_we_ship_with() -> None:
    assert getattr(processing.process_resource_event, "_interlook_patched", False)

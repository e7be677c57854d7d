"""The Service lifecycle's finalizer rules, without a cluster or kopf (recording writer)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from controller.messages import Action
from extensions.providers.kubernetes.contract import EndpointsView
from extensions.providers.kubernetes.lifecycle import ClusterIndexes, ServiceLifecycle, _older
from extensions.providers.kubernetes.provider import KubernetesProvider

ANN = {"interlook.io/hosts": "web.example.com", "interlook.io/port": "http"}


def body(version: str, finalizers: list[str] | None = None, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop", "uid": uid, "resourceVersion": version,
                         "annotations": ANN, "finalizers": finalizers or []},
            "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}}


class RecordingWriter:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers  # a resourceVersion to return, or an exception to raise
        self.calls = 0

    async def add_finalizer(self, namespace: str, name: str, finalizer: str, body: Any) -> str | None:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


def runtime(writer: RecordingWriter) -> ServiceLifecycle:
    return ServiceLifecycle(KubernetesProvider(), writer, ClusterIndexes(), lambda _: None,  # type: ignore[arg-type]
                            finalizer="interlook.io/finalizer")


def test_older_compares_resource_versions_of_the_same_object() -> None:
    assert _older({"uid": "u1", "resourceVersion": "9"}, ("u1", "10"))
    assert not _older({"uid": "u1", "resourceVersion": "11"}, ("u1", "10"))
    assert not _older({"uid": "u2", "resourceVersion": "9"}, ("u1", "10"))  # a new Service, same name
    assert not _older({"uid": "u1", "resourceVersion": "x"}, ("u1", "10"))


async def test_the_finalizer_is_written_once_and_stale_events_do_not_write_it_again() -> None:
    writer = RecordingWriter(["10", "12"])
    rt = runtime(writer)
    assert not rt.publishable("shop", "web", body("9"))
    assert await rt.admit("shop", "web", body("9"))
    assert writer.calls == 1
    assert rt.publishable("shop", "web", body("9"))  # endpoint events may publish it now
    assert await rt.admit("shop", "web", body("9"))  # queued before our PATCH: no second write
    assert await rt.admit("shop", "web", body("10", ["interlook.io/finalizer"]))
    assert writer.calls == 1
    # Someone removed it later: a newer event without it puts it back.
    assert await rt.admit("shop", "web", body("11"))
    assert writer.calls == 2


async def test_a_service_being_deleted_is_not_admitted() -> None:
    rt = runtime(RecordingWriter([None]))  # 422: no new finalizers on an object being deleted
    assert not await rt.admit("shop", "web", body("9"))
    assert not rt.publishable("shop", "web", body("9"))


async def test_an_unreachable_api_server_is_retried_in_the_background() -> None:
    rt = runtime(RecordingWriter([ConnectionError("refused")]))
    assert not await rt.admit("shop", "web", body("9"))
    retry = rt.tracked["shop/web"].admit_retry
    assert retry is not None  # not in kopf's worker: newer events of the object go on
    assert not await rt.admit("shop", "web", body("9"))  # the retry owns it meanwhile
    retry.cancel()
    await asyncio.sleep(0)


class AbandoningWriter(RecordingWriter):
    def __init__(self) -> None:
        super().__init__([])
        self.abandoned = False
        self.hidden: list[str] = []

    async def hide_address(self, namespace: str, name: str, body: Any) -> None:
        self.hidden.append(f"{namespace}/{name}")

    def abandon(self) -> None:
        self.abandoned = True


async def test_abandon_stops_every_task_and_forgets_every_service() -> None:
    writer = AbandoningWriter()
    rt = runtime(writer)
    sent: asyncio.Queue[Any] = asyncio.Queue()
    rt.provider.send_queue = sent  # as if the core had started it
    rt.start_deletion("shop", "web", body("9", ["interlook.io/finalizer"]))
    deletion = rt.tracked["shop/web"].deletion
    assert deletion is not None
    await asyncio.sleep(0)
    assert (await sent.get()).action.value == "delete"  # the undo was asked; now it waits for the core
    assert writer.hidden == ["shop/web"]  # its address was hidden before the undo could free it
    rt.abandon()  # pre-empted by a peer: nothing more may be written from here
    with contextlib.suppress(asyncio.CancelledError):
        await deletion
    assert deletion.cancelled() and rt.tracked == {} and writer.abandoned


class ShowingWriter(RecordingWriter):
    """Records what the status sink shows and posts."""

    def __init__(self) -> None:
        super().__init__([])
        self.shown: list[str | None] = []
        self.events: list[str] = []

    def show(self, name: str, presentation: Any) -> None:
        self.shown.append(None if presentation is None else dict(presentation.annotations)["interlook.io/state"])

    async def post_event(self, name: str, event: Any) -> None:
        self.events.append(event.reason)


def entry_at(state: str, *, ip: str = "192.0.2.10", wip: bool = True, error: str = "") -> Any:
    from controller.entries import Entry
    from controller.messages import Service

    return Entry(name="shop/web", service=Service(name="shop/web", public_ip=ip), state=state,
                 work_in_progress=wip, error=error)


def shown_deployed(ip: str = "192.0.2.10") -> dict[str, Any]:
    shown = body("9", ["interlook.io/finalizer"])
    shown["metadata"]["annotations"] = {**ANN, "interlook.io/state": "deployed", "interlook.io/public-ip": ip}
    return shown


async def test_after_a_restart_a_deployed_service_is_re_checked_without_a_write_or_an_event() -> None:
    writer = ShowingWriter()
    rt = runtime(writer)
    rt.indexes.remember_service("shop", "web", shown_deployed())

    for step in ("provisioner.ipalloc", "provisioner.consul", "provisioner.f5ltm"):
        rt.on_entry(entry_at(step))
    rt.on_entry(entry_at("deployed", wip=False))
    await asyncio.sleep(0)

    assert writer.shown == ["deployed"]  # equal to what it shows: the writer writes nothing
    assert writer.events == []


async def test_after_a_restart_a_new_result_is_still_shown_and_announced() -> None:
    writer = ShowingWriter()
    rt = runtime(writer)
    rt.indexes.remember_service("shop", "web", shown_deployed(ip="192.0.2.99"))

    rt.on_entry(entry_at("provisioner.consul"))
    rt.on_entry(entry_at("provisioner.consul", wip=False, error="Consul is away"))
    rt.on_entry(entry_at("provisioner.consul"))
    rt.on_entry(entry_at("deployed", wip=False))
    await asyncio.sleep(0)

    assert writer.shown == ["error", "deploying", "deployed"]
    assert writer.events == ["ProvisioningFailed", "Provisioned"]


def test_a_namespace_label_change_is_told_from_its_first_sight_and_its_deletion() -> None:
    indexes = ClusterIndexes(namespaces={"shop": [(("team", "shop"),)]})
    assert not indexes.remember_namespace("shop", (("team", "shop"),))  # the listing at start: no change
    assert not indexes.remember_namespace("shop", (("team", "shop"),))
    assert indexes.remember_namespace("shop", (("team", "web"),))
    assert not indexes.remember_namespace("shop", None)
    assert not indexes.remember_namespace("shop", ())  # seen again after its deletion: a new namespace


async def test_a_namespace_label_change_reads_its_published_services_again_with_the_new_labels() -> None:
    ready = [EndpointsView("s1", (("n1", "pod-1"),))]
    indexes = ClusterIndexes(namespaces={"shop": [(("team", "shop"),)]}, nodes={"n1": ["10.0.0.1"]},
                             endpoints={("shop", "web"): ready, ("other", "web"): ready})
    indexes.remember_service("shop", "web", body("9", ["interlook.io/finalizer"]))
    indexes.remember_service("other", "web", body("9", ["interlook.io/finalizer"]))
    provider = KubernetesProvider()
    provider.send_queue = asyncio.Queue()
    rt = ServiceLifecycle(provider, RecordingWriter([]), indexes, lambda _: None,  # type: ignore[arg-type]
                          finalizer="interlook.io/finalizer")
    await rt.namespace_changed("shop")
    sent = provider.send_queue.get_nowait()
    assert (sent.action, sent.service.name, sent.service.namespace_labels) == (
        Action.ADD, "shop/web", (("team", "shop"),))
    assert provider.send_queue.empty()

"""The life of a managed Service: our finalizer, its publication, its deletion, its results.

The kopf layer (controller/main.py) only translates kopf's calls into calls on
:class:`ServiceLifecycle`; every rule about a Service lives here, without
kopf, so it can be read and tested on its own:

* a managed Service carries our finalizer before any step runs for it; its
  deletion waits until the core walked the workflow back to ``undeployed``,
  then the finalizer is released;
* endpoint and node events publish a Service only once it carries our
  finalizer (its own event puts the finalizer first);
* a Service that stops asking to be published is undone, then our marks are
  cleaned off it;
* the core's status sink (:meth:`ServiceLifecycle.on_entry`) becomes
  annotations, LoadBalancer status and Events through writeback.py.

What is remembered of one Service between its events is one small
:class:`Tracked` object.  A standby replica (kopf peering) runs none of this:
:meth:`ServiceLifecycle.abandon` drops every task and every memory at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Collection, Mapping

from controller.messages import Service
from controller.selectors import Labels
from controller.status import DEPLOYED, UNDEPLOYED, EntryStatus
from extensions.providers.kubernetes.contract import (
    PUBLIC_IP,
    EndpointsView,
    Scope,
    carries_our_marks,
    is_managed,
    shows_deployed,
    split_entry_name,
)
from extensions.providers.kubernetes.provider import ClusterView, KubernetesProvider
from extensions.providers.kubernetes.writeback import (
    StatusWriter,
    brief_error,
    events_between,
    pending_presentation,
    present,
)

log = logging.getLogger("interlook.kubernetes")

# How often a deletion re-checks the core's entry (and asks again, if the entry went missing).
DELETE_WAIT = 20.0
# Backoff for a finalizer write the API server refused for a passing reason.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)

# kopf indexes, as plain mappings: key -> the values indexed under it.
Index = Mapping[Any, Collection[Any]]
EntryOf = Callable[[str], "EntryStatus | None"]


@dataclass
class ClusterIndexes:
    """Services, their endpoints, node addresses and namespace labels, held in memory (no API call).

    Endpoints, nodes and namespaces are kopf indexes: kopf fills them before
    any handler runs, so a Service is never published before its endpoints
    are known, nor judged by the name rules and pools before its namespace's
    labels are.
    Services are a plain map kept by the Service event handler (every event,
    active or not): a kopf index would cost one more handler call per event
    and several objects per Service, for what the handler holds anyway.
    """

    services: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)  # summarised bodies
    endpoints: Index | None = None   # (namespace, service) -> [EndpointsView]
    nodes: Index | None = None       # node name -> [InternalIP]
    namespaces: Index | None = None  # namespace -> [its labels, as a Message carries them]
    # The labels each namespace's last event showed, to tell a change of them from the listing at start.
    namespace_labels_seen: dict[str, Labels] = field(default_factory=dict)

    def service_body(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.services.get((namespace, name))

    def remember_service(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """The latest summary of a Service (contract.summarize_service); None: it left the API."""
        if body is None:
            self.services.pop((namespace, name), None)
        else:
            self.services[(namespace, name)] = body

    def view(self, namespace: str, name: str, body: Mapping[str, Any] | None = None) -> ClusterView | None:
        body = body if body is not None else self.service_body(namespace, name)
        if body is None:
            return None
        endpoints: tuple[EndpointsView, ...] = tuple(
            self.endpoints.get((namespace, name), [])) if self.endpoints is not None else ()
        node_ips: dict[str, str] = {}
        if self.nodes is not None:
            for node in {n for e in endpoints for n, _ in e.ready}:
                for ip in self.nodes.get(node, []):
                    node_ips[node] = ip
        return ClusterView(body=body, endpoints=endpoints, node_ips=node_ips,
                           namespace_labels=self.namespace_labels(namespace))

    def namespace_labels(self, namespace: str) -> Labels:
        found = self.namespaces.get(namespace, []) if self.namespaces is not None else []
        return next(iter(found), ())

    def services_on_node(self, node: str) -> set[tuple[str, str]]:
        """The Services with a ready endpoint on ``node`` (to follow a Node's address change)."""
        if self.endpoints is None:
            return set()
        return {key for key, views in self.endpoints.items() if any(n == node for v in views for n, _ in v.ready)}

    def all_services(self) -> list[tuple[str, str]]:
        return list(self.services.keys())

    def remember_namespace(self, namespace: str, labels: Labels | None) -> bool:
        """Note a Namespace event (None: deleted); True when its labels changed since its last event."""
        if labels is None:
            self.namespace_labels_seen.pop(namespace, None)
            return False
        before = self.namespace_labels_seen.get(namespace)
        self.namespace_labels_seen[namespace] = labels
        return before is not None and before != labels

    def services_in(self, namespace: str) -> list[tuple[str, str]]:
        """The Services of one namespace (to follow a change of its labels)."""
        return [key for key in self.services if key[0] == namespace]


@dataclass(slots=True)
class Tracked:
    """What we remember of one managed Service between its events."""

    # (uid, resourceVersion) of our finalizer write, until an event shows it.
    finalizer_written: tuple[str, str] | None = None
    admit_retry: asyncio.Task[None] | None = None   # a refused finalizer write, retried in the background
    deletion: asyncio.Task[None] | None = None      # undo every step, then release the finalizer
    pending: str = ""                               # why it is managed but not published
    last_seen: EntryStatus | None = None                  # the entry as the status sink last saw it
    undone: asyncio.Event | None = None             # set while the core holds it walked back to undeployed
    stripping: bool = False                         # no longer ours: clean our marks once undone
    # Shown deployed when this process first saw its entry (a restart): the workflow
    # re-checks it without showing intermediate states, and a result the Service
    # already shows is neither written nor announced again.
    resumed: bool = False

    @property
    def idle(self) -> bool:
        """Nothing worth remembering: the object can be dropped."""
        return (self.finalizer_written is None and self.admit_retry is None and self.deletion is None
                and not self.pending and self.last_seen is None and self.undone is None and not self.stripping
                and not self.resumed)


class ServiceLifecycle:
    """Everything the Service handlers share within one active run."""

    def __init__(self, provider: KubernetesProvider, writer: StatusWriter, indexes: ClusterIndexes,
                 entry_of: EntryOf, *, finalizer: str):
        self.provider = provider
        self.writer = writer
        self.indexes = indexes
        self.entry_of = entry_of
        self.finalizer = finalizer
        self.tracked: dict[str, Tracked] = {}

    @property
    def scope(self) -> Scope:
        return self.provider.scope

    def _track(self, key: str) -> Tracked:
        found = self.tracked.get(key)
        if found is None:
            found = self.tracked[sys.intern(key)] = Tracked()  # the name the core's entry holds too
        return found

    def _drop_if_idle(self, key: str) -> None:
        found = self.tracked.get(key)
        if found is not None and found.idle:
            del self.tracked[key]

    # -- publishing ---------------------------------------------------------------
    async def publish(self, namespace: str, name: str, body: Mapping[str, Any] | None = None) -> None:
        view = self.indexes.view(namespace, name, body)
        if view is None:
            return
        if (view.body.get("metadata") or {}).get("deletionTimestamp"):
            # On its way out: only its deletion task speaks for it now.  An
            # endpoint or node event must not publish it again.
            return
        key = f"{namespace}/{name}"
        tracked = self._track(key)
        tracked.stripping = False
        reading = await self.provider.observe(view)
        tracked.pending = reading.info
        if reading.info:
            entry = self.entry_of(key)
            if entry is None or entry.closed and entry.state == UNDEPLOYED:
                self.writer.show(key, pending_presentation(self.scope, reading.info))
        self._drop_if_idle(key)

    def publishable(self, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        """May an endpoint or node event publish this Service?  Only once it carries our finalizer.

        Before that, its own event (which puts the finalizer first) publishes
        it, with the endpoints known at that moment.
        """
        meta = body.get("metadata") or {}
        if not is_managed(body, self.scope) or meta.get("deletionTimestamp"):
            return False
        tracked = self.tracked.get(f"{namespace}/{name}")
        return (self.finalizer in (meta.get("finalizers") or [])
                or (tracked is not None and tracked.finalizer_written is not None))

    def in_scope(self, namespace: str) -> bool:
        """Outside our namespaces a Service may be another Interlook's: never touch it."""
        return not self.scope.namespaces or namespace in self.scope.namespaces

    async def service_changed(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A Service event (not a deletion from the API): route it by what the Service is now."""
        if not self.in_scope(namespace):
            return
        meta = body.get("metadata") or {}
        managed = is_managed(body, self.scope)
        if meta.get("deletionTimestamp"):
            if self.finalizer in (meta.get("finalizers") or []):
                self.start_deletion(namespace, name, body)
            elif managed:
                await self.forget_if_published(namespace, name)  # nothing of ours holds it: just undo
            return
        if managed:
            if await self.admit(namespace, name, body):
                await self.publish(namespace, name, self.indexes.service_body(namespace, name) or body)
            return
        await self.release_unmanaged(namespace, name, body)

    async def dependents_changed(self, services: Collection[tuple[str, str]]) -> None:
        """Endpoints or a node changed: re-read the Services that depend on them."""
        for namespace, name in services:
            body = self.indexes.service_body(namespace, name)
            if body is not None and self.publishable(namespace, name, body):
                await self.publish(namespace, name, body)

    async def namespace_changed(self, namespace: str) -> None:
        """Its labels changed: pools and name rules select on them, so its Services are read again.

        The core skips a Service that reads the same as before; one whose
        namespace labels differ is judged again (refused, or let through).
        """
        if self.in_scope(namespace):
            await self.dependents_changed(self.indexes.services_in(namespace))

    async def resume(self) -> None:
        """Just became active: feed every Service the indexes already hold (later events follow)."""
        for namespace, name in self.indexes.all_services():
            body = self.indexes.service_body(namespace, name)
            if body is not None:
                await self.service_changed(namespace, name, body)

    # -- the status sink ------------------------------------------------------------
    def on_entry(self, entry: EntryStatus) -> None:
        """The status sink: runs on the operator's loop for every changed entry."""
        key = entry.name
        tracked = self._track(key)
        before = tracked.last_seen
        tracked.last_seen = entry
        namespace, name = split_entry_name(key)
        body = self.indexes.service_body(namespace, name)
        if before is None and body is not None and shows_deployed(body, self.scope):
            tracked.resumed = True
        resumed = tracked.resumed
        if entry.closed or entry.error:
            tracked.resumed = False
        done = entry.state == UNDEPLOYED and entry.expected_state == UNDEPLOYED and not entry.work_in_progress
        if done:
            tracked.undone = tracked.undone or asyncio.Event()
            tracked.undone.set()
        elif tracked.undone is not None:
            tracked.undone.clear()
        deleting = body is None or bool((body.get("metadata") or {}).get("deletionTimestamp"))
        for event in events_between(before, entry):
            if resumed and event.reason == "Provisioned" and body is not None and shows_deployed(
                    body, self.scope, entry.service.public_ip):
                continue  # it said so before the restart, and still does
            asyncio.ensure_future(self.writer.post_event(key, event))
        if done and body is None and tracked.deletion is None:
            # Gone from the API and undone: nothing more will be shown for it.
            tracked.last_seen = tracked.undone = None
            self._drop_if_idle(key)
            self.writer.forget(key)
            return
        if done and tracked.stripping:
            tracked.stripping = False
            asyncio.ensure_future(self.writer.strip(namespace, name, self.finalizer))
            return
        # A Service on its way out gets no write per step (that is most of a
        # deletion's API cost); only a blocked deletion shows why it is blocked.
        if deleting and (body is None or not entry.error):
            return
        if resumed and not entry.closed and not entry.error:
            return  # being re-checked after a restart: it goes on showing `deployed` until the result
        self.writer.show(key, present(entry, self.scope, tracked.pending))

    def entry_is_undone(self, key: str) -> bool:
        # No entry is not "undone": after a restart, or right after a delete
        # was queued, the core has not walked the steps back yet.
        entry = self.entry_of(key)
        return entry is not None and (entry.state == UNDEPLOYED and entry.expected_state == UNDEPLOYED
                                      and not entry.work_in_progress)

    # -- the finalizer ------------------------------------------------------------------
    async def admit(self, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        """Our finalizer on the Service before any step runs for it; False while it is not there."""
        key = f"{namespace}/{name}"
        meta = body.get("metadata") or {}
        if self.finalizer in (meta.get("finalizers") or []):
            tracked = self.tracked.get(key)
            if tracked is not None and tracked.finalizer_written is not None:
                tracked.finalizer_written = None  # the Service shows it now: nothing older can come
                self._drop_if_idle(key)
            return True
        tracked = self._track(key)
        if tracked.finalizer_written is not None and _older(meta, tracked.finalizer_written):
            return True  # an event from before our PATCH: kopf hands them over in order
        if tracked.admit_retry is not None:
            return False
        try:
            return await self._put_finalizer(namespace, name, body)
        except Exception as exc:  # the API server is away: retry in the background, not in kopf's worker
            log.warning("cannot put the finalizer on %s (%s); retrying", key, brief_error(exc))
            tracked.admit_retry = asyncio.create_task(self._admit_later(namespace, name), name=f"admit-{key}")
            return False
        finally:
            self._drop_if_idle(key)

    async def _put_finalizer(self, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        """Write our finalizer and remember the write; False if the Service is gone or being deleted."""
        version = await self.writer.add_finalizer(namespace, name, self.finalizer, body)
        if version is None:
            return False  # its next event says which
        uid = str((body.get("metadata") or {}).get("uid") or "")
        self._track(f"{namespace}/{name}").finalizer_written = (uid, version)
        return True

    async def _admit_later(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        try:
            for attempt in itertools.count():
                await asyncio.sleep(_backoff(attempt))
                body = self.indexes.service_body(namespace, name)
                if body is None or not is_managed(body, self.scope) or body["metadata"].get("deletionTimestamp"):
                    return  # its next event (or its deletion) takes over
                try:
                    if not await self._put_finalizer(namespace, name, body):
                        return
                except Exception as exc:
                    log.warning("cannot put the finalizer on %s (%s); retrying", key, brief_error(exc))
                    continue
                await self.publish(namespace, name, body)
                return
        finally:
            tracked = self.tracked.get(key)
            if tracked is not None and tracked.admit_retry is asyncio.current_task():
                tracked.admit_retry = None
                self._drop_if_idle(key)

    # -- deletions ------------------------------------------------------------------------
    def start_deletion(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        key = f"{namespace}/{name}"
        tracked = self._track(key)
        if tracked.deletion is not None and not tracked.deletion.done():
            return
        tracked.deletion = asyncio.create_task(self._finalize(namespace, name, body), name=f"finalize-{key}")

    async def _finalize(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Undo every step, then release the finalizer: the Service's deletion waits for this."""
        key = f"{namespace}/{name}"
        tracked = self._track(key)
        try:
            tracked.pending = ""
            tracked.stripping = False
            done = tracked.undone = tracked.undone or asyncio.Event()
            # The address the Service shows goes first: the undo frees it, and
            # nothing may show it once another Service can be given it.
            await self._retrying("hide the address of", namespace, name, lambda: self.writer.hide_address(
                namespace, name, self.indexes.service_body(namespace, name) or body))
            await self._ask_undo(namespace, name, body)
            while not self.entry_is_undone(key):
                try:
                    await asyncio.wait_for(done.wait(), timeout=DELETE_WAIT)
                except TimeoutError:
                    entry = self.entry_of(key)
                    if entry is None:
                        await self._ask_undo(namespace, name, self.indexes.service_body(namespace, name) or body)
                    else:
                        log.info("deletion of %s waits for the workflow at %s%s", key, entry.state,
                                 f": {entry.error}" if entry.error else "")
            await self._release(namespace, name)
            tracked.undone = tracked.last_seen = tracked.finalizer_written = None
            self.writer.forget(key)
        finally:
            if tracked.deletion is asyncio.current_task():
                tracked.deletion = None
            if self.tracked.get(key) is tracked:
                self._drop_if_idle(key)

    async def _ask_undo(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        entry = self.entry_of(f"{namespace}/{name}")
        if entry is None:
            await self.provider.forget_service(self.service_for_deletion(namespace, name, body))
        elif entry.expected_state == DEPLOYED:
            await self.provider.forget(namespace, name)

    async def _release(self, namespace: str, name: str) -> None:
        await self._retrying("release the finalizer of", namespace, name,
                             lambda: self.writer.release_finalizer(namespace, name, self.finalizer))

    async def _retrying(self, what: str, namespace: str, name: str, write: Callable[[], Awaitable[None]]) -> None:
        """A write a deletion cannot go on without: retried with backoff until it is done."""
        for attempt in itertools.count():
            try:
                await write()
                return
            except Exception as exc:
                log.warning("cannot %s %s/%s (%s); retrying", what, namespace, name, brief_error(exc))
                await asyncio.sleep(_backoff(attempt))

    async def forget_if_published(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        tracked = self.tracked.get(key)
        if tracked is not None:
            tracked.pending = ""
            self._drop_if_idle(key)
        entry = self.entry_of(key)
        if entry is not None and entry.expected_state == DEPLOYED:
            await self.provider.forget(namespace, name)

    async def gone(self, namespace: str, name: str) -> None:
        """The Service left the API (our finalizer released, or never there)."""
        if not self.in_scope(namespace):
            return
        key = f"{namespace}/{name}"
        tracked = self.tracked.get(key)
        if tracked is not None:
            tracked.stripping = False
            tracked.finalizer_written = None
            if tracked.admit_retry is not None:
                tracked.admit_retry.cancel()
                tracked.admit_retry = None
            if tracked.deletion is not None:
                return  # the deletion finishes its own bookkeeping
        await self.forget_if_published(namespace, name)
        self.writer.forget(key)

    async def release_unmanaged(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A Service that stopped being ours (annotation removed, type changed): undo, then clean our marks."""
        if not carries_our_marks(body, self.scope, self.finalizer):
            return
        key = f"{namespace}/{name}"
        tracked = self._track(key)
        if tracked.stripping:
            return
        tracked.pending = ""
        tracked.finalizer_written = None
        tracked.stripping = True
        if self.entry_is_undone(key):
            tracked.stripping = False
            self._drop_if_idle(key)
            await self.writer.strip(namespace, name, self.finalizer)
            return
        await self.provider.forget(namespace, name, info="no longer asks to be published")

    def service_for_deletion(self, namespace: str, name: str, body: Mapping[str, Any]) -> Service:
        """What we know of a Service deleted while we were away, for the core to undo.

        After a restart the core has no entry for it; it walks every step back
        (steps are idempotent), starting from the address the annotations show.
        Never None: a Service we cannot read is still undone by name.
        """
        service = Service(name=f"{namespace}/{name}")
        view = self.indexes.view(namespace, name, body)
        if view is not None:
            read = self.provider.read(view).service
            if read is not None:
                service = read
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        return service.but(public_ip=annotations.get(self.scope.key(PUBLIC_IP), ""))

    # -- peering ------------------------------------------------------------------------------
    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for tracked in self.tracked.values() for t in (tracked.admit_retry, tracked.deletion)
                if t is not None]

    def abandon(self) -> None:
        """Stop acting at once (a peer took over, or shutdown): cancel every task, forget everything.

        The next active run starts again from the cluster: kopf lists every
        Service, and deletions still waiting on our finalizer resume then.
        """
        for task in self.tasks():
            task.cancel()
        self.tracked.clear()
        self.writer.abandon()


def _backoff(attempt: int) -> float:
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]


def _older(meta: Mapping[str, Any], written: tuple[str, str]) -> bool:
    """Is this view of the object from before our write?  (Same uid, smaller resourceVersion.)"""
    uid, version = written
    if str(meta.get("uid") or "") != uid:
        return False
    try:
        return int(meta.get("resourceVersion") or 0) < int(version)
    except ValueError:  # not etcd's integers: trust nothing
        return False

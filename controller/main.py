"""The kopf layer: the only module that knows kopf.

``kopf run --standalone -A controller/main.py`` (or ``make run``) loads this
file.  On start-up it builds the core from ``INTERLOOK_CONFIG`` and starts it;
then kopf watches Services, EndpointSlices and Nodes and this module turns
what it sees into calls on provider.kubernetes, and the core's status sink
into annotations, LoadBalancer status and Events on the Service.

Rules this layer keeps (docs/kubernetes.md):

* only managed Services are touched;
* every handler is a plain event handler: the desired state is the Service
  itself and the core keeps the progress, so kopf keeps no bookkeeping on the
  object (no diff-base or progress annotations, no write of its own).  A
  Service costs two PATCHes: the finalizer, then its result (intermediate
  states only when they last, see writeback.py);
* EndpointSlices, Nodes and Services are followed through kopf indexes, so no
  event costs a LIST and a refresh from the core is answered from memory;
* a managed Service carries our finalizer before any step runs for it; its
  deletion waits until the core walked the workflow back to ``undeployed``,
  then the finalizer is released.  After a restart kopf lists every Service
  again, which resumes both the published and the deleting ones.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import kopf

from controller.app import App, build_app, read_config, setup_logging
from controller.entries import DEPLOYED, UNDEPLOYED
from controller.messages import Service
from controller.status import EntryStatus
from extensions.kube_api import KubeApi
from extensions.providers.kubernetes.contract import (
    PUBLIC_IP,
    Scope,
    carries_our_marks,
    is_managed,
    node_internal_ip,
    split_entry_name,
    summarize_endpoint_slice,
)
from extensions.providers.kubernetes.provider import LOOKUP_SERVICE, ClusterView, KubernetesProvider
from extensions.providers.kubernetes.writeback import (
    StatusWriter,
    brief_error,
    events_between,
    pending_presentation,
    present,
)

log = logging.getLogger("interlook.kopf")

SERVICES = ("", "v1", "services")
ENDPOINT_SLICES = ("discovery.k8s.io", "v1", "endpointslices")
NODES = ("", "v1", "nodes")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# How often a deletion re-checks the core's entry (and asks again, if the entry went missing).
DELETE_WAIT = 20.0
# Backoff for a finalizer write the API server refused for a passing reason.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base for a layer without change handlers: nothing is kept, nothing is built.

    kopf builds the "essence" of every object on every event to detect
    changes for on.create/on.update; here the desired state is the object
    itself and the core keeps the progress, so that work is skipped.
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


@dataclass
class Runtime:
    """Everything the handlers share within one operator run."""

    app: App | None = None
    provider: KubernetesProvider | None = None
    writer: StatusWriter | None = None
    scope: Scope = field(default_factory=Scope)
    finalizer: str = "interlook.io/finalizer"
    indices: dict[str, Any] = field(default_factory=dict)
    last_seen: dict[str, EntryStatus] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)      # entry -> why it is not published
    undeployed: dict[str, asyncio.Event] = field(default_factory=dict)
    stripping: set[str] = field(default_factory=set)           # entries no longer ours, to clean
    # entry -> (uid, resourceVersion) of our finalizer write, until an event shows it
    finalized: dict[str, tuple[str, str]] = field(default_factory=dict)
    admitting: dict[str, asyncio.Task[None]] = field(default_factory=dict)   # finalizer writes being retried
    finalizing: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # deletions in progress

    # -- views from the indexes -------------------------------------------------
    def service_body(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        index = self.indices.get("services_idx")
        if index is None:
            return None
        for body in index.get((namespace, name), []):
            return body  # type: ignore[no-any-return]
        return None

    def view(self, namespace: str, name: str, body: Mapping[str, Any] | None = None) -> ClusterView | None:
        body = body if body is not None else self.service_body(namespace, name)
        if body is None:
            return None
        slices = self.indices.get("endpoints_idx")
        nodes = self.indices.get("nodes_idx")
        endpoints = tuple(slices.get((namespace, name), [])) if slices is not None else ()
        node_ips: dict[str, str] = {}
        if nodes is not None:
            wanted = {n for e in endpoints for n, _ in e.ready}
            for node in wanted:
                for ip in nodes.get(node, []):
                    node_ips[node] = ip
        return ClusterView(body=body, endpoints=endpoints, node_ips=node_ips)

    # -- provider side ------------------------------------------------------------
    async def publish(self, namespace: str, name: str, body: Mapping[str, Any] | None = None) -> None:
        view = self.view(namespace, name, body)
        if view is None or self.provider is None:
            return
        if (view.body.get("metadata") or {}).get("deletionTimestamp"):
            # On its way out: only its deletion task speaks for it now.  An
            # endpoint or node event must not publish it again.
            return
        key = f"{namespace}/{name}"
        self.stripping.discard(key)
        reading = await self.provider.observe(view)
        if reading.info:
            self.pending[key] = reading.info
            entry = self.app.core.entry(key) if self.app else None
            if entry is None or entry.closed and entry.state == UNDEPLOYED:
                if self.writer is not None:
                    self.writer.show(key, pending_presentation(self.scope, reading.info))
        else:
            self.pending.pop(key, None)

    # -- core side ------------------------------------------------------------------
    def on_entry(self, entry: EntryStatus) -> None:
        """The status sink: runs on the operator's loop for every changed entry."""
        before = self.last_seen.get(entry.name)
        self.last_seen[entry.name] = entry
        done = entry.state == UNDEPLOYED and entry.expected_state == UNDEPLOYED and not entry.work_in_progress
        if done:
            self.undeployed.setdefault(entry.name, asyncio.Event()).set()
        elif entry.name in self.undeployed:
            self.undeployed[entry.name].clear()
        writer = self.writer
        if writer is None:
            return
        namespace, name = split_entry_name(entry.name)
        body = self.service_body(namespace, name)
        deleting = body is None or bool((body.get("metadata") or {}).get("deletionTimestamp"))
        for event in events_between(before, entry):
            asyncio.ensure_future(writer.post_event(entry.name, event))
        if done and body is None and entry.name not in self.finalizing:
            # Gone from the API and undone: nothing more will be shown for it.
            self.last_seen.pop(entry.name, None)
            self.undeployed.pop(entry.name, None)
            writer.forget(entry.name)
            return
        if done and entry.name in self.stripping:
            self.stripping.discard(entry.name)
            asyncio.ensure_future(writer.strip(namespace, name, self.finalizer))
            return
        # A Service on its way out gets no write per step (that is most of a
        # deletion's API cost); only a blocked deletion shows why it is blocked.
        if deleting and (body is None or not entry.error):
            return
        writer.show(entry.name, present(entry, self.scope, self.pending.get(entry.name, "")))

    def entry_is_undone(self, key: str) -> bool:
        # No entry is not "undone": after a restart, or right after a delete
        # was queued, the core has not walked the steps back yet.
        entry = self.app.core.entry(key) if self.app else None
        return entry is not None and (entry.state == UNDEPLOYED and entry.expected_state == UNDEPLOYED
                                      and not entry.work_in_progress)

    # -- the finalizer and deletions -------------------------------------------------
    async def admit(self, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        """Our finalizer on the Service before any step runs for it; False while it is not there."""
        key = f"{namespace}/{name}"
        meta = body.get("metadata") or {}
        if self.finalizer in (meta.get("finalizers") or []):
            return True
        written = self.finalized.get(key)
        if written is not None and _older(meta, written):
            return True  # an event from before our PATCH: kopf hands them over in order
        if key in self.admitting or self.writer is None:
            return False
        try:
            return await self._put_finalizer(namespace, name, body)
        except Exception as exc:  # the API server is away: retry in the background, not in kopf's worker
            log.warning("cannot put the finalizer on %s (%s); retrying", key, brief_error(exc))
            self.admitting[key] = asyncio.create_task(self._admit_later(namespace, name), name=f"admit-{key}")
            return False

    async def _put_finalizer(self, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        """Write our finalizer and remember the write; False if the Service is gone or being deleted."""
        assert self.writer is not None
        version = await self.writer.add_finalizer(namespace, name, self.finalizer, body)
        if version is None:
            return False  # its next event says which
        self.finalized[f"{namespace}/{name}"] = (str((body.get("metadata") or {}).get("uid") or ""), version)
        return True

    def publishable(self, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        """May an endpoint or node event publish this Service?  Only once it carries our finalizer.

        Before that, its own event (which puts the finalizer first) publishes
        it, with the endpoints known at that moment.
        """
        meta = body.get("metadata") or {}
        if not is_managed(body, self.scope) or meta.get("deletionTimestamp"):
            return False
        return self.finalizer in (meta.get("finalizers") or []) or f"{namespace}/{name}" in self.finalized

    async def _admit_later(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        try:
            for attempt in itertools.count():
                await asyncio.sleep(_backoff(attempt))
                body = self.service_body(namespace, name)
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
            self.admitting.pop(key, None)

    def start_deletion(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        key = f"{namespace}/{name}"
        running = self.finalizing.get(key)
        if running is not None and not running.done():
            return
        self.finalizing[key] = asyncio.create_task(self._finalize(namespace, name, body), name=f"finalize-{key}")

    async def _finalize(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Undo every step, then release the finalizer: the Service's deletion waits for this."""
        key = f"{namespace}/{name}"
        try:
            self.pending.pop(key, None)
            self.stripping.discard(key)
            done = self.undeployed.setdefault(key, asyncio.Event())
            await self._ask_undo(namespace, name, body)
            while not self.entry_is_undone(key):
                try:
                    await asyncio.wait_for(done.wait(), timeout=DELETE_WAIT)
                except TimeoutError:
                    entry = self.app.core.entry(key) if self.app else None
                    if entry is None:
                        await self._ask_undo(namespace, name, self.service_body(namespace, name) or body)
                    else:
                        log.info("deletion of %s waits for the workflow at %s%s", key, entry.state,
                                 f": {entry.error}" if entry.error else "")
            await self._release(namespace, name)
            self.undeployed.pop(key, None)
            self.last_seen.pop(key, None)
            self.finalized.pop(key, None)
            if self.writer is not None:
                self.writer.forget(key)
        finally:
            if self.finalizing.get(key) is asyncio.current_task():
                del self.finalizing[key]

    async def _ask_undo(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        assert self.provider is not None and self.app is not None
        entry = self.app.core.entry(f"{namespace}/{name}")
        if entry is None:
            await self.provider.forget_service(self.service_for_deletion(namespace, name, body))
        elif entry.expected_state == DEPLOYED:
            await self.provider.forget(namespace, name)

    async def _release(self, namespace: str, name: str) -> None:
        assert self.writer is not None
        for attempt in itertools.count():
            try:
                await self.writer.release_finalizer(namespace, name, self.finalizer)
                return
            except Exception as exc:
                log.warning("cannot release the finalizer of %s/%s (%s); retrying", namespace, name,
                            brief_error(exc))
                await asyncio.sleep(_backoff(attempt))

    async def forget_if_published(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self.pending.pop(key, None)
        entry = self.app.core.entry(key) if self.app else None
        if entry is not None and entry.expected_state == DEPLOYED and self.provider is not None:
            await self.provider.forget(namespace, name)

    async def gone(self, namespace: str, name: str) -> None:
        """The Service left the API (our finalizer released, or never there)."""
        key = f"{namespace}/{name}"
        self.stripping.discard(key)
        self.finalized.pop(key, None)
        retry = self.admitting.pop(key, None)
        if retry is not None:
            retry.cancel()
        if key in self.finalizing:
            return  # the deletion finishes its own bookkeeping
        await self.forget_if_published(namespace, name)
        if self.writer is not None:
            self.writer.forget(key)

    async def release_unmanaged(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A Service that stopped being ours (annotation removed, type changed): undo, then clean our marks."""
        if not carries_our_marks(body, self.scope, self.finalizer):
            return
        key = f"{namespace}/{name}"
        if key in self.stripping:
            return
        self.pending.pop(key, None)
        self.finalized.pop(key, None)
        self.stripping.add(key)
        if self.entry_is_undone(key):
            self.stripping.discard(key)
            if self.writer is not None:
                await self.writer.strip(namespace, name, self.finalizer)
            return
        assert self.provider is not None
        await self.provider.forget(namespace, name, info="no longer asks to be published")

    def service_for_deletion(self, namespace: str, name: str, body: Mapping[str, Any]) -> Service:
        """What we know of a Service deleted while we were away, for the core to undo.

        After a restart the core has no entry for it; it walks every step back
        (steps are idempotent), starting from the address the annotations show.
        Never None: a Service we cannot read is still undone by name.
        """
        service = Service(name=f"{namespace}/{name}")
        view = self.view(namespace, name, body)
        if view is not None and self.provider is not None:
            read = self.provider.read(view).service
            if read is not None:
                service = read
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        return replace(service, public_ip=annotations.get(self.scope.key(PUBLIC_IP), ""))

    def lookup(self, namespace: str, name: str) -> ClusterView | None:
        return self.view(namespace, name)


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


RUNTIME = Runtime()


def _api_client() -> Any:
    """The official client's settings (in-cluster, else KUBECONFIG), for our own requests to use."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return config.new_client_from_config()


# ---------------------------------------------------------------- operator life


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    config = read_config()
    setup_logging(config.core.log_level, config.core.log_file)
    provider_config = config.extensions.get("provider.kubernetes")
    if provider_config is not None:
        RUNTIME.scope = provider_config.scope
    prefix = RUNTIME.scope.prefix
    RUNTIME.finalizer = f"{prefix}/finalizer"
    # Only our explicit Events; kopf's handler logs would be one API write each.
    settings.posting.loggers = False
    # No change handlers, so nothing to diff: skip building a diff-base per event.
    settings.persistence.diffbase_storage = NoDiffBase()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # "Handler 'service_event' succeeded." for every event is noise at INFO.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Two replicas with --peering: the highest priority runs, the other waits.
    # Equal priorities would pause both, so each process draws its own.
    if not settings.peering.priority:
        settings.peering.priority = random.randint(1, 2**31 - 1)
    settings.watching.server_timeout = 300

    RUNTIME.indices = {k: v for k, v in kwargs.items() if k.endswith("_idx")}
    kube = KubeApi.from_api_client(_api_client())
    services: dict[str, Any] = {LOOKUP_SERVICE: RUNTIME.lookup}
    ipalloc = config.extensions.get("provisioner.ipalloc")
    if ipalloc is not None:
        from extensions.provisioners.ipalloc.kube_store import KubeStore
        from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE
        services[STORE_SERVICE] = KubeStore(kube, pool=str(ipalloc.network))
    app = build_app(config, services=services)
    provider = app.extensions.get("provider.kubernetes")
    if not isinstance(provider, KubernetesProvider):
        raise kopf.PermanentError("the workflow has no provider.kubernetes step: nothing for kopf to do")
    RUNTIME.app, RUNTIME.provider = app, provider
    RUNTIME.writer = StatusWriter(kube, RUNTIME.scope, RUNTIME.service_body)
    app.core.add_status_sink(RUNTIME.on_entry)
    await app.start(serve_api=config.core.listen_port != 0)
    log.info("interlook started: workflow %s, annotation prefix %s", ",".join(config.core.workflow_steps), prefix)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in (*RUNTIME.admitting.values(), *RUNTIME.finalizing.values()):
        task.cancel()  # a restart picks them up again: kopf lists every Service at start
    if RUNTIME.writer is not None:
        await RUNTIME.writer.idle()
    if RUNTIME.app is not None:
        await RUNTIME.app.stop()
    if RUNTIME.writer is not None:
        await RUNTIME.writer.close()  # the connections the IP store shares too


@kopf.on.probe(id="core")
async def probe_core(**_: Any) -> dict[str, Any]:
    app = RUNTIME.app
    if app is None or not app.core.started:
        raise RuntimeError("core not started")
    return {name: s["status"] for name, s in app.core.extension_status().items()}


# ---------------------------------------------------------------- indexes


# Index handlers are coroutines: kopf runs plain functions in a thread pool,
# which costs a thread hop per event for what is a dictionary lookup.
@kopf.index(*SERVICES)
async def services_idx(body: Any, namespace: Any, name: str, **_: Any) -> Any:
    # A plain copy: kopf bodies are live views of the latest event.
    return {(namespace, name): {
        "metadata": {k: body.metadata.get(k) for k in ("name", "namespace", "uid", "labels", "annotations",
                                                       "finalizers", "deletionTimestamp")},
        "spec": {"type": body.spec.get("type"), "ports": list(body.spec.get("ports") or [])},
        "status": dict(body.get("status") or {}),
    }}


@kopf.index(*ENDPOINT_SLICES)
async def endpoints_idx(body: Any, namespace: Any, labels: Mapping[str, str], **_: Any) -> Any:
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        return None
    return {(namespace, service): summarize_endpoint_slice(body)}


@kopf.index(*NODES)
async def nodes_idx(body: Any, name: str, **_: Any) -> Any:
    ip = node_internal_ip(body)
    return {name: ip} if ip else None


# ---------------------------------------------------------------- Services


@kopf.on.event(*SERVICES)
async def service_event(body: Any, namespace: Any, name: str, type: str | None, **_: Any) -> None:
    """Every change of every Service (and each one once at start-up): route it by what it is now."""
    scope = RUNTIME.scope
    if scope.namespaces and namespace not in scope.namespaces:
        return  # maybe another Interlook's: never touch what is outside our scope
    if RUNTIME.provider is None:
        return
    if type == "DELETED":
        await RUNTIME.gone(namespace, name)
        return
    meta = body.get("metadata") or {}
    managed = is_managed(body, scope)
    if meta.get("deletionTimestamp"):
        if RUNTIME.finalizer in (meta.get("finalizers") or []):
            RUNTIME.start_deletion(namespace, name, body)
        elif managed:
            await RUNTIME.forget_if_published(namespace, name)  # nothing of ours holds it: just undo
        return
    if managed:
        if await RUNTIME.admit(namespace, name, body):
            await RUNTIME.publish(namespace, name, RUNTIME.service_body(namespace, name) or body)
        return
    await RUNTIME.release_unmanaged(namespace, name, body)


# ---------------------------------------------------------------- endpoints and nodes


@kopf.on.event(*ENDPOINT_SLICES)
async def endpoints_changed(namespace: Any, labels: Mapping[str, str], **_: Any) -> None:
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        return
    body = RUNTIME.service_body(namespace, service)
    if body is not None and RUNTIME.publishable(namespace, service, body):
        await RUNTIME.publish(namespace, service, body)


@kopf.on.event(*NODES)
async def node_changed(name: str, type: str, **_: Any) -> None:
    # A node's address changed or it left: re-read the Services with endpoints on it.
    slices = RUNTIME.indices.get("endpoints_idx")
    if slices is None:
        return
    affected = {key for key, views in slices.items() if any(n == name for v in views for n, _ in v.ready)}
    for namespace, service in affected:
        body = RUNTIME.service_body(namespace, service)
        if body is not None and RUNTIME.publishable(namespace, service, body):
            await RUNTIME.publish(namespace, service, body)

"""The kopf layer: the only module that knows kopf.

``kopf run --standalone -A controller/main.py`` (or ``make run``) loads this
file.  On start-up it builds the core from ``INTERLOOK_CONFIG`` and starts it;
then kopf watches Services, EndpointSlices and Nodes and this module turns
what it sees into calls on provider.kubernetes, and the core's status sink
into annotations, LoadBalancer status and Events on the Service.

Rules this layer keeps (docs/kubernetes.md):

* only managed Services are touched: every Service handler is filtered, and
  kopf's own bookkeeping (finalizer, diff-base, progress) lives under our
  annotation prefix and only ever on managed Services;
* EndpointSlices, Nodes and Services are followed through kopf indexes, so no
  event costs a LIST and a refresh from the core is answered from memory;
* a managed Service carries a finalizer; its deletion waits until the core
  walked the workflow back to ``undeployed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import kopf

from controller.app import App, build_app, read_config, setup_logging
from controller.entries import DEPLOYED, UNDEPLOYED, Entry
from controller.messages import Service
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
    events_between,
    pending_presentation,
    present,
)

log = logging.getLogger("interlook.kopf")

SERVICES = ("", "v1", "services")
ENDPOINT_SLICES = ("discovery.k8s.io", "v1", "endpointslices")
NODES = ("", "v1", "nodes")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# How long one run of the delete handler waits before kopf retries it.
DELETE_WAIT = 20.0


class ManagedOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled-configuration, kept only on managed Services.

    kopf stores a diff-base on every object of a watched kind, handled or
    not; an unmanaged Service must stay untouched, so storing is skipped for
    it.  Our output annotations are left out of the essence, so writing a
    result never looks like a change of the Service to kopf; our *input*
    annotations stay in (kopf would drop every key of a prefix it manages).
    """

    def __init__(self, runtime: Runtime):
        super().__init__(prefix=runtime.scope.prefix, key="last-handled-configuration", v1=False)
        self.runtime = runtime

    def _detect_marked_prefixes(self, annotations: Mapping[str, str]) -> set[str]:  # type: ignore[override]
        return {p for p in super()._detect_marked_prefixes(annotations) if p != self.prefix}

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        ignored = set(self.runtime.output_keys) | {f"{self.prefix}/kopf-managed"}
        for key in list(annotations):
            if key in ignored:
                del annotations[key]
        self.remove_empty_stanzas(essence)
        return essence

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        if is_managed(body, self.runtime.scope):
            super().store(body=body, patch=patch, essence=essence)

    def fetch(self, *, body: Any) -> Any:
        if not is_managed(body, self.runtime.scope):
            return None
        return super().fetch(body=body)


class InputKeepingProgress(kopf.AnnotationsProgressStorage):
    """kopf's handler progress under our prefix, without hiding our *input* annotations.

    kopf drops every annotation of its prefix from the essence it compares;
    ``interlook.io/hosts`` & co. must stay in, or editing them is no change.
    """

    def __init__(self, runtime: Runtime):
        super().__init__(prefix=runtime.scope.prefix, v1=False)
        self.runtime = runtime

    def clear(self, *, essence: Any) -> Any:
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        inputs = {k: v for k, v in annotations.items() if k in self.runtime.input_keys}
        essence = super().clear(essence=essence)
        if inputs:
            essence.setdefault("metadata", {}).setdefault("annotations", {}).update(inputs)
        return essence


@dataclass
class Runtime:
    """Everything the handlers share within one operator run."""

    app: App | None = None
    provider: KubernetesProvider | None = None
    writer: StatusWriter | None = None
    scope: Scope = field(default_factory=Scope)
    finalizer: str = "interlook.io/finalizer"
    indices: dict[str, Any] = field(default_factory=dict)
    last_seen: dict[str, Entry] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)      # entry -> why it is not published
    undeployed: dict[str, asyncio.Event] = field(default_factory=dict)
    stripping: set[str] = field(default_factory=set)           # entries no longer ours, to clean

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(self.scope.key(k) for k in ("hosts", "port", "tls", "ip"))

    @property
    def output_keys(self) -> tuple[str, ...]:
        from extensions.providers.kubernetes.contract import OUTPUT_KEYS
        return tuple(self.scope.key(k) for k in OUTPUT_KEYS)

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
            # On its way out: only the delete handler speaks for it now.  An
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
    def on_entry(self, entry: Entry) -> None:
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
        if done and entry.name in self.stripping:
            self.stripping.discard(entry.name)
            asyncio.ensure_future(asyncio.to_thread(writer.strip, namespace, name, self.finalizer))
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


RUNTIME = Runtime()


def _managed(body: Any, **_: Any) -> bool:
    return is_managed(body, RUNTIME.scope)


def _api_client() -> Any:
    """The blocking client for write-back and the allocation store: in-cluster, else KUBECONFIG."""
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
    settings.persistence.finalizer = RUNTIME.finalizer
    settings.persistence.progress_storage = InputKeepingProgress(RUNTIME)
    settings.persistence.diffbase_storage = ManagedOnlyDiffBase(RUNTIME)
    # Only our explicit Events; kopf's handler logs would be one API write each.
    settings.posting.loggers = False
    # Two replicas with --peering: the highest priority runs, the other waits.
    # Equal priorities would pause both, so each process draws its own.
    if not settings.peering.priority:
        settings.peering.priority = random.randint(1, 2**31 - 1)
    settings.watching.server_timeout = 300

    RUNTIME.indices = {k: v for k, v in kwargs.items() if k.endswith("_idx")}
    api_client = _api_client()
    services: dict[str, Any] = {LOOKUP_SERVICE: RUNTIME.lookup}
    ipalloc = config.extensions.get("provisioner.ipalloc")
    if ipalloc is not None:
        from extensions.provisioners.ipalloc.kube_store import KubeStore
        from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE
        services[STORE_SERVICE] = KubeStore(api_client, pool=str(ipalloc.network))
    app = build_app(config, services=services)
    provider = app.extensions.get("provider.kubernetes")
    if not isinstance(provider, KubernetesProvider):
        raise kopf.PermanentError("the workflow has no provider.kubernetes step: nothing for kopf to do")
    RUNTIME.app, RUNTIME.provider = app, provider
    RUNTIME.writer = StatusWriter(api_client, RUNTIME.scope, RUNTIME.service_body)
    app.core.add_status_sink(RUNTIME.on_entry)
    await app.start(serve_api=config.core.listen_port != 0)
    log.info("interlook started: workflow %s, annotation prefix %s", ",".join(config.core.workflow_steps), prefix)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if RUNTIME.writer is not None:
        await RUNTIME.writer.idle()
    if RUNTIME.app is not None:
        await RUNTIME.app.stop()


@kopf.on.probe(id="core")
def probe_core(**_: Any) -> dict[str, Any]:
    app = RUNTIME.app
    if app is None or not app.core.started:
        raise RuntimeError("core not started")
    return {name: s["status"] for name, s in app.core.extension_status().items()}


# ---------------------------------------------------------------- indexes


@kopf.index(*SERVICES)
def services_idx(body: Any, namespace: Any, name: str, **_: Any) -> Any:
    # A plain copy: kopf bodies are live views of the latest event.
    return {(namespace, name): {
        "metadata": {k: body.metadata.get(k) for k in ("name", "namespace", "uid", "labels", "annotations",
                                                       "finalizers", "deletionTimestamp")},
        "spec": {"type": body.spec.get("type"), "ports": list(body.spec.get("ports") or [])},
        "status": dict(body.get("status") or {}),
    }}


@kopf.index(*ENDPOINT_SLICES)
def endpoints_idx(body: Any, namespace: Any, labels: Mapping[str, str], **_: Any) -> Any:
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        return None
    return {(namespace, service): summarize_endpoint_slice(body)}


@kopf.index(*NODES)
def nodes_idx(body: Any, name: str, **_: Any) -> Any:
    ip = node_internal_ip(body)
    return {name: ip} if ip else None


# ---------------------------------------------------------------- Services


@kopf.on.resume(*SERVICES, when=_managed)
@kopf.on.create(*SERVICES, when=_managed)
@kopf.on.update(*SERVICES, when=_managed)
async def service_changed(body: Any, namespace: Any, name: str, **_: Any) -> None:
    await RUNTIME.publish(namespace, name, RUNTIME.service_body(namespace, name) or body)


@kopf.on.delete(*SERVICES, when=_managed)
async def service_deleted(body: Any, namespace: Any, name: str, **_: Any) -> None:
    key = f"{namespace}/{name}"
    provider, app = RUNTIME.provider, RUNTIME.app
    if provider is None or app is None:
        raise kopf.TemporaryError("the core is not running yet", delay=2)
    RUNTIME.pending.pop(key, None)
    entry = app.core.entry(key)
    if entry is None:
        await provider.forget_service(RUNTIME.service_for_deletion(namespace, name, body))
    elif entry.expected_state == DEPLOYED:
        await provider.forget(namespace, name)
    done = RUNTIME.undeployed.setdefault(key, asyncio.Event())
    if RUNTIME.entry_is_undone(key):
        return
    try:
        await asyncio.wait_for(done.wait(), timeout=DELETE_WAIT)
    except TimeoutError:
        pass
    if not RUNTIME.entry_is_undone(key):
        entry = app.core.entry(key)
        where = f"at {entry.state}" + (f": {entry.error}" if entry and entry.error else "") if entry else ""
        raise kopf.TemporaryError(f"waiting for the workflow to undo {key} {where}", delay=2)
    RUNTIME.undeployed.pop(key, None)
    RUNTIME.last_seen.pop(key, None)
    if RUNTIME.writer is not None:
        RUNTIME.writer.forget(key)


@kopf.on.event(*SERVICES)
async def service_event(body: Any, namespace: Any, name: str, type: str, **_: Any) -> None:
    """Services that stopped being ours (annotation removed, type changed): undo, then clean our marks."""
    if type == "DELETED" or is_managed(body, RUNTIME.scope):
        return
    if RUNTIME.scope.namespaces and namespace not in RUNTIME.scope.namespaces:
        return  # maybe another Interlook's: never touch what is outside our scope
    if not carries_our_marks(body, RUNTIME.scope, RUNTIME.finalizer):
        return
    key = f"{namespace}/{name}"
    if RUNTIME.provider is None or key in RUNTIME.stripping:
        return
    RUNTIME.pending.pop(key, None)
    RUNTIME.stripping.add(key)
    if RUNTIME.entry_is_undone(key):
        RUNTIME.stripping.discard(key)
        if RUNTIME.writer is not None:
            await asyncio.to_thread(RUNTIME.writer.strip, namespace, name, RUNTIME.finalizer)
        return
    await RUNTIME.provider.forget(namespace, name, info="no longer asks to be published")


# ---------------------------------------------------------------- endpoints and nodes


@kopf.on.event(*ENDPOINT_SLICES)
async def endpoints_changed(namespace: Any, labels: Mapping[str, str], **_: Any) -> None:
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        return
    body = RUNTIME.service_body(namespace, service)
    if body is not None and is_managed(body, RUNTIME.scope) and not body["metadata"].get("deletionTimestamp"):
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
        if body is not None and is_managed(body, RUNTIME.scope) and not body["metadata"].get("deletionTimestamp"):
            await RUNTIME.publish(namespace, service, body)

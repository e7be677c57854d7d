"""The kopf layer: the only module that knows kopf.

``kopf run --standalone -A controller/main.py`` (or ``make run``) loads this
file.  On start-up it builds the core from ``INTERLOOK_CONFIG``; then kopf
watches Services, EndpointSlices, Nodes and Namespaces, and each handler
below is one call on the Kubernetes provider's lifecycle
(extensions/providers/kubernetes/lifecycle.py), where every rule about a
Service lives.  This module only translates:

* kopf settings: plain event handlers, no diff-base, no handler logs as
  Events, a random peering priority;
* kopf indexes (EndpointSlices, Nodes, Namespaces) and a map of Service summaries held
  in memory, so no event costs a LIST and a refresh from the core is
  answered from memory;
* kopf peering: with ``--peering`` only the active replica acts.  A standby
  answers the HTTP API and nothing else; it becomes active when kopf resumes
  it (a daemon on the peering object runs exactly while kopf lets this
  process work) and stops acting the instant kopf pauses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import random
from typing import Any, Awaitable, Callable, Mapping

import kopf

from controller.app import App, build_app, read_config, setup_logging
from controller.extension import ExtensionStartError
from controller.selectors import labels_of
from controller.status import EntryStatus
from extensions.kube_api import Credentials, KubeApi, KubeApiError
from extensions.providers.kubernetes.contract import (
    Scope,
    node_internal_ip,
    summarize_endpoint_slice,
    summarize_service,
)
from extensions.providers.kubernetes.lifecycle import ClusterIndexes, ServiceLifecycle
from extensions.providers.kubernetes.provider import KubernetesProvider
from extensions.providers.kubernetes.writeback import StatusWriter

log = logging.getLogger("interlook.kopf")

SERVICES = ("", "v1", "services")
ENDPOINT_SLICES = ("discovery.k8s.io", "v1", "endpointslices")
NODES = ("", "v1", "nodes")
NAMESPACES = ("", "v1", "namespaces")
PEERINGS = ("kopf.dev", "v1", "clusterkopfpeerings")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
KUBE_SYSTEM = "/api/v1/namespaces/kube-system"
EXIT_START = 1


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


@dataclasses.dataclass
class Operator:
    """What the handlers share within one operator run."""

    app: App | None = None
    lifecycle: ServiceLifecycle | None = None
    indexes: ClusterIndexes = dataclasses.field(default_factory=ClusterIndexes)
    peering: str = ""       # the peering object whose daemon says "active"; "" when always active
    # A Service body -> what is kept of it (contract.summarize_service, bound to the scope at start-up).
    summarize: Callable[[Any], dict[str, Any]] = dict
    active: bool = False    # handlers act only while this is set
    wanted: bool = False    # what kopf's peering last asked for
    switching: asyncio.Lock | None = None
    kube: KubeApi | None = None   # our own requests (write-back, IP store), with kopf's credentials

    async def activate(self) -> None:
        assert self.app is not None and self.lifecycle is not None and self.switching is not None
        self.wanted = True
        async with self.switching:
            if self.active or not self.wanted:
                return
            try:
                await self.app.activate()
            except ExtensionStartError as exc:
                _exit_on_start_failure(exc)
            if not self.wanted:  # paused while the extensions were starting
                await self.app.deactivate()
                return
            self.active = True
            log.info("active: instance %s runs the workflow", self.app.identity.instance_id)
            await self.lifecycle.resume()

    async def deactivate(self, reason: str) -> None:
        """Stop acting now: handlers see it at once, tasks are cancelled at once, the core stops next."""
        assert self.app is not None and self.lifecycle is not None and self.switching is not None
        self.wanted = False
        was_active, self.active = self.active, False
        self.lifecycle.abandon()
        async with self.switching:
            if self.active or self.wanted:
                return  # resumed again while we waited: the newer activation holds
            self.lifecycle.abandon()  # anything an activation in progress started meanwhile
            await self.app.deactivate()
        if was_active:
            log.info("standby (%s): no step, sweep or write until active again", reason)


OPERATOR = Operator()


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _login(settings: kopf.OperatorSettings, logger: Any) -> tuple[kopf.ConnectionInfo, Credentials]:
    """Who we are to the API server, for kopf and for our own requests alike.

    In a Pod its service account, else the kubeconfig (KUBECONFIG), read by
    kopf's own readers, so the deployed process does not need the official
    client (about 20 MB of memory: kopf imports it whenever it is installed).
    A kubeconfig whose user runs an ``exec`` plugin or an ``auth-provider``
    needs that client (``pip install kubernetes``): then its loader gets the
    token.
    """
    token = os.path.join(SERVICE_ACCOUNT, "token")
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if host and os.path.exists(token):
        # Like the official client's in-cluster config: the Service's address, not a DNS name.
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        with open(token, encoding="utf-8") as f:
            ca = os.path.join(SERVICE_ACCOUNT, "ca.crt")
            info = kopf.ConnectionInfo(server=server, ca_path=ca if os.path.exists(ca) else None,
                                       token=f.read().strip() or None, trust_env=settings.networking.trust_env)
        return info, _credentials(info, token_path=token)  # rotated by the kubelet: read again every minute
    paths = _kubeconfig_paths()
    found: kopf.ConnectionInfo | None
    if _kubeconfig_user(paths).keys() & {"exec", "auth-provider"}:
        found = kopf.login_via_client(settings=settings, logger=logger)
        if found is None:
            raise kopf.LoginError("the kubeconfig's user needs an exec plugin or an auth-provider: "
                                  "install the official client (pip install kubernetes) for them")
    else:
        found = kopf.login_with_kubeconfig(settings=settings, logger=logger)
        if found is None:
            raise kopf.LoginError("no service account and no kubeconfig (KUBECONFIG, ~/.kube/config)")
        found = _relative_to(found, os.path.dirname(paths[0]))
    return found, _credentials(found)


def _kubeconfig_paths() -> list[str]:
    kubeconfig = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [os.path.expanduser(p.strip()) for p in kubeconfig.split(os.pathsep) if p.strip()]


def _kubeconfig_user(paths: list[str]) -> dict[str, Any]:
    """The current context's user entry, as kubectl merges KUBECONFIG (the first value wins)."""
    import yaml

    current: str | None = None
    contexts: dict[str, Any] = {}
    users: dict[str, Any] = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        current = current or config.get("current-context")
        for item in config.get("contexts") or []:
            contexts.setdefault(item.get("name"), item.get("context") or {})
        for item in config.get("users") or []:
            users.setdefault(item.get("name"), item.get("user") or {})
    user = users.get(str((contexts.get(str(current)) or {}).get("user")))
    return user if isinstance(user, dict) else {}


def _relative_to(info: kopf.ConnectionInfo, directory: str) -> kopf.ConnectionInfo:
    """Relative file names in a kubeconfig are relative to the file (kubectl's rule), not to our directory."""
    files = ("ca_path", "certificate_path", "private_key_path")
    changes: dict[str, Any] = {name: os.path.join(directory, value) for name in files
                               if isinstance(value := getattr(info, name), str) and value and not os.path.isabs(value)}
    return dataclasses.replace(info, **changes) if changes else info


def _credentials(info: kopf.ConnectionInfo, token_path: str | None = None) -> Credentials:
    def text(value: Any) -> str | None:
        return os.fsdecode(value) if isinstance(value, (str, bytes, os.PathLike)) and value else None

    return Credentials(
        server=info.server, ca_path=text(info.ca_path), ca_data=text(info.ca_data), insecure=bool(info.insecure),
        certificate_path=text(info.certificate_path), certificate_data=text(info.certificate_data),
        private_key_path=text(info.private_key_path), private_key_data=text(info.private_key_data),
        scheme=info.scheme, token=info.token, username=info.username, password=info.password,
        proxy=info.proxy_url, token_path=token_path)


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials and ours are the same; a new login (an expired token) reaches our requests too."""
    info, credentials = await asyncio.to_thread(_login, settings, logger)  # an exec plugin may take a while
    if OPERATOR.kube is not None:
        OPERATOR.kube.use(credentials)
    return info


def _exit_on_start_failure(exc: ExtensionStartError) -> None:
    """A configured extension refused to start: exit non-zero with the reason (kopf would retry forever).

    The Pod's CrashLoopBackOff and ``kubectl logs`` then say why.
    """
    log.critical("start-up failed: %s", exc)
    logging.shutdown()
    os._exit(EXIT_START)


async def _always_active(settings: kopf.OperatorSettings, kube: KubeApi) -> bool:
    """Does kopf run this process without peering?  Then it is active from the start.

    ``--standalone``: yes.  ``--peering=NAME``: no, kopf pauses it until it is
    the highest priority.  Neither: kopf peers only if the ``default`` peering
    object exists.
    """
    if settings.peering.standalone:
        return True
    if settings.peering.mandatory:
        return False
    try:
        await kube.get(f"/apis/kopf.dev/v1/clusterkopfpeerings/{settings.peering.name}")
    except KubeApiError as exc:
        if exc.status in (403, 404):
            return True
        raise
    return False


# ---------------------------------------------------------------- operator life


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    config = read_config()
    setup_logging(config.core.log_level, config.core.log_file)
    provider_config = config.extensions.get("provider.kubernetes")
    scope: Scope = provider_config.scope if provider_config is not None else Scope()
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
    if provider_config is not None and provider_config.peering_lifetime:
        settings.peering.lifetime = max(1, round(provider_config.peering_lifetime))
    settings.watching.server_timeout = 300

    OPERATOR.indexes = ClusterIndexes(endpoints=kwargs.get("endpoints_idx"), nodes=kwargs.get("nodes_idx"),
                                      namespaces=kwargs.get("namespaces_idx"))
    OPERATOR.summarize = functools.partial(summarize_service, scope=scope, finalizer=f"{scope.prefix}/finalizer")
    OPERATOR.switching = asyncio.Lock()
    # kopf logs in after the start-up handlers: ours read the same credentials now.
    _, credentials = await asyncio.to_thread(_login, settings, log)
    kube = OPERATOR.kube = KubeApi(credentials)
    services: dict[str, Any] = {}
    ipalloc = config.extensions.get("provisioner.ipalloc")
    if ipalloc is not None:
        from extensions.provisioners.ipalloc.kube_store import KubeStore
        from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE
        services[STORE_SERVICE] = KubeStore(kube)
    app = build_app(config, services=services)
    provider = app.extensions.get("provider.kubernetes")
    if not isinstance(provider, KubernetesProvider):
        raise kopf.PermanentError("the workflow has no provider.kubernetes step: nothing for kopf to do")

    async def read_cluster_id() -> str:
        return str(((await kube.get(KUBE_SYSTEM)).get("metadata") or {}).get("uid") or "")

    provider.attach(lookup=OPERATOR.indexes.view, read_cluster_id=read_cluster_id)
    writer = StatusWriter(kube, scope, OPERATOR.indexes.service_body)
    def entry_of(key: str) -> EntryStatus | None:
        entry = app.core.entry(key)
        return entry.status() if entry is not None else None

    lifecycle = ServiceLifecycle(provider, writer, OPERATOR.indexes, entry_of, finalizer=f"{scope.prefix}/finalizer")
    app.core.add_status_sink(lifecycle.on_entry)
    OPERATOR.app, OPERATOR.lifecycle = app, lifecycle
    active = await _always_active(settings, kube)
    OPERATOR.peering = "" if active else settings.peering.name
    try:
        await app.start(serve_api=config.core.listen_port != 0, active=False)
    except ExtensionStartError as exc:
        _exit_on_start_failure(exc)
    except RuntimeError as exc:  # the API port is taken
        _exit_on_start_failure(ExtensionStartError("api", str(exc)))
    log.info("interlook started: instance %s, workflow %s, annotation prefix %s%s", app.identity.instance_id,
             ",".join(config.core.workflow_steps), scope.prefix,
             "" if active else f"; standby until peering {settings.peering.name!r} makes it active")
    if active:
        await OPERATOR.activate()


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    lifecycle, app = OPERATOR.lifecycle, OPERATOR.app
    if lifecycle is not None:
        for task in lifecycle.tasks():
            task.cancel()  # a restart picks them up again: kopf lists every Service at start
        await lifecycle.writer.idle()
    if app is not None:
        OPERATOR.wanted = OPERATOR.active = False
        if OPERATOR.switching is not None:
            async with OPERATOR.switching:  # after a deactivation the peering daemon may be running
                await app.stop()
        else:
            await app.stop()
    if lifecycle is not None:
        await lifecycle.writer.close()  # the connections the IP store shares too


@kopf.on.probe(id="core")
async def probe_core(**_: Any) -> dict[str, Any]:
    app = OPERATOR.app
    if app is None:
        raise RuntimeError("not started")
    if not OPERATOR.active:
        return {"role": "standby"}
    # What /health reports: an extension or a core task that is not doing its job, and why.
    return {"role": "active", "problems": app.core.health_problems()}


# ---------------------------------------------------------------- peering


def _is_our_peering(name: str, **_: Any) -> bool:
    return bool(OPERATOR.peering) and name == OPERATOR.peering


@kopf.daemon(*PEERINGS, id="active", when=_is_our_peering, cancellation_backoff=10, cancellation_timeout=30)
async def active_while_resumed(stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Runs exactly while kopf lets this process work: kopf stops daemons the moment peering pauses it.

    kopf may also cancel the daemon (operator exit, or a stop it escalates):
    the deactivation runs to its end whatever happens to this task, so a
    paused process never keeps a core running.
    """
    try:
        await OPERATOR.activate()
        await stopped.wait()
    finally:
        await asyncio.shield(OPERATOR.deactivate(f"peering paused or stopped this process ({stopped.reason})"))


def _without_finalizer(handler_id: str) -> None:
    """kopf puts a finalizer on an object with a daemon; the peering object must stay kopf's alone."""
    registry = kopf.get_default_registry()
    spawning = registry._spawning  # noqa: SLF001 -- no public way to declare an optional finalizer
    for index, handler in enumerate(spawning._handlers):  # noqa: SLF001
        if handler.id == handler_id:
            spawning._handlers[index] = dataclasses.replace(handler, requires_finalizer=False)  # noqa: SLF001


_without_finalizer("active")


def _notify_toggle_waiters_only_on_flips() -> None:
    """kopf's index pre-population, made linear: wake the waiting workers only when the readiness flips.

    At start-up every Service's worker waits until the EndpointSlice and
    Node indexes are filled, and kopf adds then drops one toggle per indexed
    object, each time waking every waiting worker to re-check: 10,000
    Services and 10,000 EndpointSlices made 10^8 wake-ups, over a minute of
    CPU for a restart at 3,000.  A waiter only ever waits for the set's
    overall state (``ToggleSet.wait_for``; single toggles notify on their
    own when turned), so adding or dropping a toggle that leaves that state
    unchanged wakes no one.  Only applied when kopf's ToggleSet has the
    shape this relies on.
    """
    from kopf._cogs.aiokits import aiotoggles

    toggle_set = aiotoggles.ToggleSet
    if getattr(toggle_set, "_interlook_patched", False):
        return
    if not all(callable(getattr(toggle_set, name, None)) for name in ("make_toggle", "drop_toggle", "drop_toggles",
                                                                        "is_on")):
        return

    async def make_toggle(self: Any, __val: bool = False, *, name: str | None = None) -> Any:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggles(self: Any, toggles: Any) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != before:
                self._condition.notify_all()

    async def drop_toggle(self: Any, toggle: Any) -> None:
        await drop_toggles(self, (toggle,))

    toggle_set.make_toggle = make_toggle  # type: ignore[method-assign]
    toggle_set.drop_toggle = drop_toggle  # type: ignore[method-assign]
    toggle_set.drop_toggles = drop_toggles  # type: ignore[method-assign]
    toggle_set._interlook_patched = True  # type: ignore[attr-defined]  # noqa: SLF001


_notify_toggle_waiters_only_on_flips()


# Kinds this layer watches without daemons or timers (the peering object has one: not here).
KINDS_WITHOUT_DAEMONS = frozenset({"Service", "EndpointSlice", "Node", "Namespace"})


def _share_one_empty_daemons_memory() -> None:
    """kopf's per-object memory without a daemons' record for objects that never have daemons.

    kopf remembers every object it watches (10,000 Services and as many
    EndpointSlices at the bench's size), each with a record of its daemons
    and timers (about 420 bytes: a set, a dict, the last body) that only an
    object with daemons or timers ever writes.  Ours have none: they all
    share one empty record, made read-only so that a daemon or timer added
    to these kinds later fails loudly instead of sharing state.  Only
    applied when kopf's memories have the shape this relies on.
    """
    from types import MappingProxyType

    from kopf._core.engines import daemons
    from kopf._core.reactor import inventory

    memories = inventory.ResourceMemories
    if getattr(memories, "_interlook_patched", False):
        return
    fields = {f.name for f in dataclasses.fields(daemons.DaemonsMemory)} if dataclasses.is_dataclass(
        daemons.DaemonsMemory) else set()
    if not (fields == {"live_fresh_body", "idle_reset_time", "forever_stopped", "running_daemons"}
            and "daemons_memory" in {f.name for f in dataclasses.fields(inventory.ResourceMemory)}
            and asyncio.iscoroutinefunction(getattr(memories, "recall", None))):
        return

    class NoDaemons(daemons.DaemonsMemory):
        def __setattr__(self, name: str, value: Any) -> None:
            if getattr(self, "_frozen", False):
                raise AttributeError(f"kopf daemons or timers on {sorted(KINDS_WITHOUT_DAEMONS)}: "
                                     "see _share_one_empty_daemons_memory in controller/main.py")
            super().__setattr__(name, value)

    shared = NoDaemons(live_fresh_body=None, idle_reset_time=0.0, forever_stopped=frozenset(),  # type: ignore[arg-type]
                       running_daemons=MappingProxyType({}))  # type: ignore[arg-type]
    shared._frozen = True  # type: ignore[attr-defined]
    recall = memories.recall

    async def recall_sharing(self: Any, raw_body: Any, *args: Any, **kwargs: Any) -> Any:
        memory = await recall(self, raw_body, *args, **kwargs)
        own = memory.daemons_memory
        if own is not shared and raw_body.get("kind") in KINDS_WITHOUT_DAEMONS \
                and own.live_fresh_body is None and not own.running_daemons and not own.forever_stopped:
            memory.daemons_memory = shared
        return memory

    memories.recall = recall_sharing  # type: ignore[method-assign]
    memories._interlook_patched = True  # type: ignore[attr-defined]  # noqa: SLF001


_share_one_empty_daemons_memory()


def _our_kinds_skip_kopfs_machinery() -> None:
    """Watch events of Services and EndpointSlices go to our handlers directly, once kopf has indexed.

    Each published Service costs the controller about four watch events:
    its creation, its EndpointSlice, and the echoes of our own writes (the
    finalizer, the result).  kopf's per-event work for them (memories, three
    loggers, diff-base essences, causes, handler state, an empty patch) was
    about half of what an event costs, and does nothing for a kind whose
    only kopf handlers are ours: an unfiltered event handler, and for
    EndpointSlices the index the Services' targets are read from.  For
    those kinds, once kopf's start-up indexing is over, an event updates the
    index as kopf would and calls our handler as kopf would.  A kind with
    any other handler (another event handler, a filter, a change handler,
    a daemon, a timer), and every event before the indexes are complete,
    goes the normal way.  Only applied when kopf's processor has the shape
    this relies on (tests/unit/test_kopf_direct.py).
    """
    import inspect

    from kopf._core.reactor import processing

    original = processing.process_resource_event
    if getattr(original, "_interlook_patched", False):
        return
    wanted = {"raw_event", "resource", "registry", "indexers", "memories", "operator_indexed", "resource_indexed"}
    if not wanted <= inspect.signature(original).parameters.keys():
        return
    processing.process_resource_event = straight_to_our_handlers(original)  # type: ignore[assignment]


Direct = Callable[[Mapping[str, Any], Any, Any], Awaitable[None]]


def straight_to_our_handlers(original: Callable[..., Any]) -> Callable[..., Any]:
    """kopf's event processor, but the events of our kinds go straight to our handlers once indexed."""
    # Decided once per registry (as it stands: any handler added later, a new decision) and resource.
    directs: dict[tuple[Any, ...], Direct | None] = {}

    def handlers(registry: Any, kind: str, resource: Any) -> list[tuple[Any, ...]]:
        return [(h.fn, h.labels, h.annotations, h.when, h.field) for h in getattr(registry, kind).get_all_handlers()
                if h.selector is None or h.selector.check(resource)]

    def direct_for(registry: Any, resource: Any) -> Direct | None:
        try:
            key = (resource, id(registry), *(len(getattr(registry, kind)._handlers)  # noqa: SLF001
                                             for kind in ("_watching", "_indexing", "_changing", "_spawning")))
        except AttributeError:  # another kopf: no shortcut
            return None
        if key not in directs:
            directs[key] = decide(registry, resource)
        return directs[key]

    def decide(registry: Any, resource: Any) -> Direct | None:
        try:
            if any(getattr(registry, kind).has_handlers(resource=resource) for kind in ("_changing", "_spawning")):
                return None
            watching, indexing = handlers(registry, "_watching", resource), handlers(registry, "_indexing", resource)
            if watching == [(service_event, None, None, None, None)] and not indexing:
                return _service_direct
            if watching == [(endpoints_changed, None, None, None, None)] \
                    and indexing == [(endpoints_idx, SLICE_LABELS, None, None, None)]:
                index_id = next(h.id for h in registry._indexing.get_all_handlers()  # noqa: SLF001
                                if h.fn is endpoints_idx)
                return functools.partial(_slice_direct, index_id)
        except AttributeError:  # another kopf: no shortcut
            pass
        return None

    async def process_resource_event(*args: Any, raw_event: Any, resource: Any, registry: Any,
                                     **kwargs: Any) -> Any:
        operator_indexed = kwargs.get("operator_indexed")
        if kwargs.get("resource_indexed") is None and (operator_indexed is None or operator_indexed.is_on()):
            direct = direct_for(registry, resource)
            if direct is not None:
                try:
                    await direct(raw_event, kwargs.get("indexers"), kwargs.get("memories"))
                except Exception:  # as kopf treats an event handler's error: logged, not retried
                    meta = raw_event["object"].get("metadata") or {}
                    log.exception("handling %s of %s/%s failed", raw_event.get("type") or "the listing",
                                  meta.get("namespace"), meta.get("name"))
                return None
        return await original(*args, raw_event=raw_event, resource=resource, registry=registry, **kwargs)

    process_resource_event._interlook_patched = True  # type: ignore[attr-defined]  # noqa: SLF001
    return process_resource_event


async def _service_direct(raw_event: Mapping[str, Any], indexers: Any, memories: Any) -> None:
    body, type = raw_event["object"], raw_event.get("type")
    meta = body.get("metadata") or {}
    if type == "DELETED" and memories is not None:
        await memories.forget(body)  # what kopf remembered of it from the listing
    await _on_service(body, str(meta.get("namespace")), str(meta.get("name")), type)


async def _slice_direct(index_id: Any, raw_event: Mapping[str, Any], indexers: Any, memories: Any) -> None:
    """What kopf does for an EndpointSlice event: the index first, then the event handler."""
    body = raw_event["object"]
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    if raw_event.get("type") == "DELETED":
        indexers.discard(body=body)
        if memories is not None:
            await memories.forget(body)
    else:
        value = endpoint_slice_index(body, meta.get("namespace"), labels)
        if value is None:  # no longer ours to index: as kopf does when the filter stops matching
            indexers[index_id].discard(indexers.make_key(body))
        else:
            indexers[index_id].replace(indexers.make_key(body), value)
    await _on_endpoints(meta.get("namespace"), labels)


_our_kinds_skip_kopfs_machinery()


# ---------------------------------------------------------------- indexes

# Only the slices that belong to a Service are indexed (a slice that loses the label leaves the index).
SLICE_LABELS = {SERVICE_NAME_LABEL: kopf.PRESENT}


def endpoint_slice_index(body: Mapping[str, Any], namespace: Any, labels: Mapping[str, str]) -> Any:
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        return None
    return {(namespace, service): summarize_endpoint_slice(body)}


# Index handlers are coroutines: kopf runs plain functions in a thread pool,
# which costs a thread hop per event for what is a dictionary lookup.
@kopf.index(*ENDPOINT_SLICES, labels=SLICE_LABELS)
async def endpoints_idx(body: Any, namespace: Any, labels: Mapping[str, str], **_: Any) -> Any:
    return endpoint_slice_index(body, namespace, labels)


@kopf.index(*NODES)
async def nodes_idx(body: Any, name: str, **_: Any) -> Any:
    ip = node_internal_ip(body)
    return {name: ip} if ip else None


@kopf.index(*NAMESPACES)
async def namespaces_idx(name: str, labels: Mapping[str, str], **_: Any) -> Any:
    # Pools and name rules select on a Service's namespace labels: known before any Service is read.
    return {name: labels_of(labels)}


# ---------------------------------------------------------------- handlers


@kopf.on.event(*SERVICES)
async def service_event(body: Any, namespace: Any, name: str, type: str | None, **_: Any) -> None:
    """Every change of every Service (and each one once at start-up)."""
    await _on_service(body, namespace, name, type)


async def _on_service(body: Mapping[str, Any], namespace: str, name: str, type: str | None) -> None:
    # Kept active or not: a standby that becomes active resumes from this map.
    OPERATOR.indexes.remember_service(namespace, name, None if type == "DELETED" else OPERATOR.summarize(body))
    lifecycle = OPERATOR.lifecycle
    if lifecycle is None or not OPERATOR.active:
        return
    if type == "DELETED":
        await lifecycle.gone(namespace, name)
    else:
        await lifecycle.service_changed(namespace, name, body)


@kopf.on.event(*ENDPOINT_SLICES)
async def endpoints_changed(namespace: Any, labels: Mapping[str, str], **_: Any) -> None:
    await _on_endpoints(namespace, labels)


async def _on_endpoints(namespace: Any, labels: Mapping[str, str]) -> None:
    service = labels.get(SERVICE_NAME_LABEL)
    lifecycle = OPERATOR.lifecycle
    if service and lifecycle is not None and OPERATOR.active:
        await lifecycle.dependents_changed([(namespace, service)])


@kopf.on.event(*NAMESPACES)
async def namespace_changed(name: str, labels: Mapping[str, str], type: str | None, **_: Any) -> None:
    # Kept active or not, like the Services: a standby that becomes active compares with what it saw.
    changed = OPERATOR.indexes.remember_namespace(name, None if type == "DELETED" else labels_of(labels))
    lifecycle = OPERATOR.lifecycle
    if changed and lifecycle is not None and OPERATOR.active:
        await lifecycle.namespace_changed(name)


@kopf.on.event(*NODES)
async def node_changed(name: str, **_: Any) -> None:
    # A node's address changed or it left: re-read the Services with endpoints on it.
    lifecycle = OPERATOR.lifecycle
    if lifecycle is not None and OPERATOR.active:
        await lifecycle.dependents_changed(OPERATOR.indexes.services_on_node(name))

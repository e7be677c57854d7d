"""provider.kubernetes: turns Service events into workflow Messages.

The kopf layer (controller/main.py) owns the watches and the indexes; it calls
:meth:`KubernetesProvider.observe` for every change of a managed Service (or of
its EndpointSlices and Nodes) and :meth:`KubernetesProvider.forget` when one
goes away.  This class only decides what the workflow should be told, so it
can be tested without a cluster and never imports kopf.

A ``refresh`` from the core is answered from the same indexes, through the
lookup the kopf layer attaches (:meth:`KubernetesProvider.attach`), which also
says how to read the cluster's id (for the instance id, controller/instance.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from controller.extension import PROVIDER, BaseExtension, ExtensionContext
from controller.instance import ClusterIdentity
from controller.messages import Action, Message, Service
from controller.selectors import Labels
from extensions.providers.kubernetes.config import KubernetesConfig
from extensions.providers.kubernetes.contract import (
    EndpointsView,
    Reading,
    Scope,
    is_managed,
    read_service,
    split_entry_name,
)


@dataclass(frozen=True)
class ClusterView:
    """One Service as the indexes see it: its body, its endpoints, node addresses, its namespace's labels."""

    body: Mapping[str, Any]
    endpoints: tuple[EndpointsView, ...] = ()
    node_ips: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Labels = ()


Lookup = Callable[[str, str], "ClusterView | None"]
ClusterIdReader = Callable[[], Awaitable[str]]


class KubernetesProvider(BaseExtension):
    name = "provider.kubernetes"
    kind = PROVIDER

    def __init__(self, config: KubernetesConfig | None = None, context: ExtensionContext | None = None):
        super().__init__(context)
        self.config = config or KubernetesConfig()
        self.lookup: Lookup | None = None
        self.read_cluster_id: ClusterIdReader | None = None

    def attach(self, *, lookup: Lookup, read_cluster_id: ClusterIdReader) -> None:
        """What the kopf layer lends: the indexes (for refreshes) and the cluster's id."""
        self.lookup, self.read_cluster_id = lookup, read_cluster_id

    async def cluster_identity(self) -> ClusterIdentity | None:
        if self.read_cluster_id is None:
            return None
        scope = self.scope
        text = f"namespaces={','.join(sorted(scope.namespaces))};selector={scope.selector};prefix={scope.prefix}"
        return ClusterIdentity("kubernetes", await self.read_cluster_id(), text)

    @property
    def scope(self) -> Scope:
        return self.config.scope

    # -- called by the kopf layer -------------------------------------------
    def read(self, view: ClusterView) -> Reading:
        return read_service(view.body, self.scope, view.endpoints, view.node_ips, provider=self.name,
                            namespace_labels=view.namespace_labels)

    async def observe(self, view: ClusterView) -> Reading:
        """Tell the workflow what a managed Service wants now; return what was read."""
        reading = self.read(view)
        await self._push(_message_for(reading))
        return reading

    async def forget(self, namespace: str, name: str, info: str = "") -> None:
        """The Service is gone (or no longer ours): undo everything."""
        await self._push(Message(Action.DELETE, Service(name=f"{namespace}/{name}", provider=self.name), info=info))

    async def forget_service(self, service: Service, info: str = "") -> None:
        """Like forget, with what is known of the service (its address) for the steps to undo."""
        await self._push(Message(Action.DELETE, service.but(provider=self.name), info=info))

    async def _push(self, message: Message) -> None:
        queue = getattr(self, "send_queue", None)
        if queue is None:
            raise RuntimeError(f"{self.name} is not started")
        await queue.put(message)

    # -- called by the core ---------------------------------------------------
    async def handle(self, message: Message) -> Message:
        if message.action != Action.REFRESH:
            return message
        lookup = self.lookup
        if lookup is None:
            # Without indexes nothing can be confirmed; saying `delete` would
            # tear down a live service, so say nothing new.
            return message.failed(f"{self.name}: no cluster lookup available to answer a refresh")
        namespace, name = split_entry_name(message.service.name)
        view = lookup(namespace, name)
        if view is None or not is_managed(view.body, self.scope):
            return Message(Action.DELETE, message.service)
        if (view.body.get("metadata") or {}).get("deletionTimestamp"):
            return Message(Action.DELETE, message.service)  # being deleted: surely going
        return _message_for(self.read(view))


def _message_for(reading: Reading) -> Message:
    if reading.error:
        return Message(Action.ADD, reading.service, error=reading.error)
    if reading.info:
        return Message(Action.DELETE, reading.service, info=reading.info)
    return Message(Action.ADD, reading.service)


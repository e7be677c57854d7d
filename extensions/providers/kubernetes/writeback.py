"""Results written back on the Service: annotations, LoadBalancer status, Events.

The core notifies a status sink with a snapshot of every changed entry; this
module turns a snapshot into what the Service should show (:func:`present`,
pure) and writes it with few API calls (:class:`StatusWriter`): one
merge-patch per visible change, bursts coalesced, never a write when the
Service already shows it.  No kopf here: the kopf layer wires it up.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from controller.entries import DEPLOYED, UNDEPLOYED, Entry
from extensions.providers.kubernetes.contract import (
    ERROR,
    INFO,
    OUTPUT_KEYS,
    PUBLIC_IP,
    STATE,
    STEP,
    Scope,
    split_entry_name,
)

log = logging.getLogger("interlook.kubernetes.writeback")

# Published states (annotation `<prefix>/state`).
DEPLOYING = "deploying"
DEPLOYED_STATE = "deployed"
UNDEPLOYING = "undeploying"
ERROR_STATE = "error"
PENDING = "pending"  # managed, but not published for a normal reason (see `<prefix>/info`)


@dataclass(frozen=True)
class Presentation:
    """What one Service should show; None values remove the annotation."""

    annotations: tuple[tuple[str, str | None], ...] = ()
    ingress_ip: str | None = None  # for type LoadBalancer; "" clears, None leaves alone

    @classmethod
    def cleared(cls, scope: Scope) -> Presentation:
        return cls(tuple((scope.key(k), None) for k in OUTPUT_KEYS), ingress_ip="")


def present(entry: Entry, scope: Scope, pending_reason: str = "") -> Presentation | None:
    """The annotations for an entry; None when there is nothing to show (undeployed, not pending)."""
    values: dict[str, str | None] = dict.fromkeys(OUTPUT_KEYS)
    ingress: str | None = ""
    if entry.error:
        values[STATE] = ERROR_STATE
        values[ERROR] = entry.error
        values[STEP] = entry.error_step or entry.state
        values[INFO] = entry.info or None
        ingress = None  # keep whatever was published
        if entry.service.public_ip:
            values[PUBLIC_IP] = entry.service.public_ip
    elif entry.state == DEPLOYED and not entry.work_in_progress:
        values[STATE] = DEPLOYED_STATE
        values[PUBLIC_IP] = entry.service.public_ip or None
        ingress = entry.service.public_ip
    elif entry.state == UNDEPLOYED and not entry.work_in_progress:
        if not pending_reason:
            return None
        values[STATE] = PENDING
        values[INFO] = pending_reason
    else:
        values[STATE] = UNDEPLOYING if entry.reverse else DEPLOYING
        values[STEP] = entry.state
        values[PUBLIC_IP] = entry.service.public_ip or None
        ingress = None
    return Presentation(tuple((scope.key(k), v) for k, v in values.items()), ingress_ip=ingress)


def pending_presentation(scope: Scope, reason: str) -> Presentation:
    values: dict[str, str | None] = dict.fromkeys(OUTPUT_KEYS)
    values[STATE] = PENDING
    values[INFO] = reason
    return Presentation(tuple((scope.key(k), v) for k, v in values.items()), ingress_ip="")


@dataclass(frozen=True)
class Event:
    type: str     # Normal or Warning
    reason: str
    message: str


def events_between(before: Entry | None, after: Entry) -> list[Event]:
    """The Events a change of an entry deserves (edge-triggered)."""
    out: list[Event] = []
    if after.error and (before is None or before.error != after.error):
        out.append(Event("Warning", "ProvisioningFailed", f"{after.error_step or after.state}: {after.error}"))
    deployed = after.state == DEPLOYED and not after.work_in_progress and not after.error
    was_deployed = before is not None and before.state == DEPLOYED and not before.work_in_progress \
        and not before.error and before.service.public_ip == after.service.public_ip \
        and before.service.same_definition(after.service)
    if deployed and not was_deployed:
        where = after.service.public_ip or "(no public IP step)"
        hosts = ",".join(after.service.dns_names)
        out.append(Event("Normal", "Provisioned", f"published {hosts} at {where}"))
    undeployed = after.state == UNDEPLOYED and after.expected_state == UNDEPLOYED and not after.work_in_progress
    if undeployed and before is not None and before.state != UNDEPLOYED:
        out.append(Event("Normal", "Deprovisioned", "every workflow step has been undone"))
    return out


@dataclass
class _Target:
    desired: Presentation | None = None
    written: Presentation | None = None
    load_balancer: bool = False
    task: asyncio.Task[Any] | None = None
    gone: bool = False


UidOf = Callable[[str, str], "Mapping[str, Any] | None"]


@dataclass
class StatusWriter:
    """Coalesces presentations per Service and writes them with the blocking client in a thread."""

    api_client: Any
    scope: Scope
    # (namespace, name) -> the Service body as the index knows it (for uid, type, current annotations).
    body_of: UidOf
    component: str = "interlook"
    _targets: dict[str, _Target] = field(default_factory=dict)
    writes: int = 0

    def __post_init__(self) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(self.api_client)

    def show(self, name: str, presentation: Presentation | None) -> None:
        """Make Service ``name`` (namespace/name) show this; None leaves it as it is."""
        target = self._targets.setdefault(name, _Target())
        target.desired = presentation
        target.gone = False
        if presentation is not None and (target.task is None or target.task.done()):
            target.task = asyncio.create_task(self._flush(name, target), name=f"writeback-{name}")

    def forget(self, name: str) -> None:
        target = self._targets.pop(name, None)
        if target is not None and target.task is not None:
            target.task.cancel()

    async def idle(self) -> None:
        """Wait until every pending write is done (tests, shutdown)."""
        tasks = [t.task for t in self._targets.values() if t.task is not None and not t.task.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _flush(self, name: str, target: _Target) -> None:
        namespace, short = split_entry_name(name)
        while target.desired is not None and target.desired != target.written:
            desired = target.desired
            body = self.body_of(namespace, short)
            if body is None:
                return  # the Service is gone: nothing to write on
            try:
                await asyncio.to_thread(self._write, namespace, short, body, desired, target.written)
            except Exception as exc:  # keep the last wish; the next change or resync tries again
                log.warning("cannot write the status of %s: %s", name, _brief(exc))
                await asyncio.sleep(1)
                continue
            target.written = desired

    def _write(self, namespace: str, name: str, body: Mapping[str, Any], desired: Presentation,
               written: Presentation | None) -> None:
        from kubernetes.client.exceptions import ApiException

        current = ((body.get("metadata") or {}).get("annotations") or {})
        # The index may lag behind our own last write: compare with both.
        stale = any(current.get(k) != v for k, v in desired.annotations)
        try:
            if stale or (written is not None and written != desired):
                changes = dict(desired.annotations)
                self.core.patch_namespaced_service(name, namespace, {"metadata": {"annotations": changes}},
                                                   _content_type="application/merge-patch+json")
                self.writes += 1
            is_lb = (body.get("spec") or {}).get("type") == "LoadBalancer"
            if is_lb and desired.ingress_ip is not None:
                ingress = ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                want = [{"ip": desired.ingress_ip}] if desired.ingress_ip else []
                have = [{"ip": i.get("ip")} for i in ingress if i.get("ip")]
                if have != want:
                    self.core.patch_namespaced_service_status(
                        name, namespace, {"status": {"loadBalancer": {"ingress": want}}},
                        _content_type="application/merge-patch+json")
                    self.writes += 1
        except ApiException as exc:
            if exc.status == 404:
                return
            raise

    async def post_event(self, name: str, event: Event) -> None:
        namespace, short = split_entry_name(name)
        body = self.body_of(namespace, short) or {}
        try:
            await asyncio.to_thread(self._post_event, namespace, short, body, event)
        except Exception as exc:
            log.warning("cannot post event %s on %s: %s", event.reason, name, _brief(exc))

    def _post_event(self, namespace: str, name: str, body: Mapping[str, Any], event: Event) -> None:
        now = datetime.datetime.now(datetime.UTC)
        uid = (body.get("metadata") or {}).get("uid")
        event_body: Any = {
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": namespace, "name": name,
                               **({"uid": uid} if uid else {})},
            "reason": event.reason,
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        self.core.create_namespaced_event(namespace, event_body)
        self.writes += 1

    def strip(self, namespace: str, name: str, finalizer: str) -> None:
        """Remove every mark we left on a Service that is no longer ours (blocking; run in a thread)."""
        from kubernetes.client.exceptions import ApiException

        try:
            body = self.core.read_namespaced_service(name, namespace).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        meta = body.get("metadata") or {}
        inputs = {self.scope.key(k) for k in ("hosts", "port", "tls", "ip")}
        ours = {k: None for k in (meta.get("annotations") or {})
                if k.startswith(f"{self.scope.prefix}/") and k not in inputs}
        patch: dict[str, Any] = {"metadata": {}}
        if ours:
            patch["metadata"]["annotations"] = ours
        finalizers = meta.get("finalizers") or []
        if finalizer in finalizers:
            # A merge-patch replaces the list: guard it with the version read.
            patch["metadata"]["finalizers"] = [f for f in finalizers if f != finalizer]
            patch["metadata"]["resourceVersion"] = meta.get("resource_version")
        if patch["metadata"]:
            self.core.patch_namespaced_service(name, namespace, patch, _content_type="application/merge-patch+json")
            self.writes += 1
        status_ingress = ((body.get("status") or {}).get("load_balancer") or {}).get("ingress")
        if status_ingress:
            self.core.patch_namespaced_service_status(name, namespace, {"status": {"loadBalancer": {"ingress": []}}},
                                                      _content_type="application/merge-patch+json")


def _brief(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"

"""Results written back on the Service: annotations, LoadBalancer status, Events.

The core notifies a status sink with the status of every changed entry; this
module turns a snapshot into what the Service should show (:func:`present`,
pure) and writes it with few API calls (:class:`StatusWriter`): one
merge-patch per visible change, bursts coalesced, never a write when the
Service already shows it.  Intermediate states (``deploying``/``undeploying``
at a step) are only written once they have lasted ``settle`` seconds: a
Service deployed in 200 ms costs one write for its result, while a step
that hangs still shows where it hangs.  The finalizer is added and released
here too, with strategic-merge patches that touch nothing but our entry of
the list.  No kopf here: the kopf layer wires it up.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from controller.status import DEPLOYED, UNDEPLOYED, EntryStatus
from extensions.kube_api import STRATEGIC_MERGE_PATCH, KubeApi, KubeApiError
from extensions.providers.kubernetes.contract import (
    ERROR,
    INFO,
    OUTPUT_KEYS,
    PUBLIC_IP,
    STATE,
    STEP,
    Scope,
    marked_keys,
    split_entry_name,
)

log = logging.getLogger("interlook.kubernetes.writeback")

# Published states (annotation `<prefix>/state`).
DEPLOYING = "deploying"
DEPLOYED_STATE = "deployed"
UNDEPLOYING = "undeploying"
ERROR_STATE = "error"
PENDING = "pending"  # managed, but not published for a normal reason (see `<prefix>/info`)
INTERMEDIATE = (DEPLOYING, UNDEPLOYING)



@dataclass(frozen=True, slots=True)
class Presentation:
    """What one Service should show; None values remove the annotation."""

    annotations: tuple[tuple[str, str | None], ...] = ()
    ingress_ip: str | None = None  # for type LoadBalancer; "" clears, None leaves alone

    @classmethod
    def cleared(cls, scope: Scope) -> Presentation:
        return cls(tuple((scope.key(k), None) for k in OUTPUT_KEYS), ingress_ip="")

    def state(self, scope: Scope) -> str | None:
        return dict(self.annotations).get(scope.key(STATE))


def present(entry: EntryStatus, scope: Scope, pending_reason: str = "") -> Presentation | None:
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
    return Presentation(_pairs(scope, values), ingress_ip=ingress)


# (key, value) pairs are the same for most Services (`state: deployed`, `error: None`...): one shared
# tuple each, so that what 10,000 Services show costs a few tuples, not 50,000.
_PAIRS: dict[tuple[str, str | None], tuple[str, str | None]] = {}


def _pairs(scope: Scope, values: dict[str, str | None]) -> tuple[tuple[str, str | None], ...]:
    out = []
    for key, value in values.items():
        pair = (scope.key(key), value)
        if key == STATE or value is None:
            pair = _PAIRS.setdefault(pair, pair)
        out.append(pair)
    return tuple(out)


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


def events_between(before: EntryStatus | None, after: EntryStatus) -> list[Event]:
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
    if after.undone and before is not None and before.state != UNDEPLOYED:
        out.append(Event("Normal", "Deprovisioned", "every workflow step has been undone"))
    return out


@dataclass(slots=True)
class _Target:
    """One Service's presentation: kept for its life (what was written), so it is small once settled."""

    desired: Presentation | None = None
    written: Presentation | None = None
    not_before: float = 0.0                  # loop time before which `desired` is not written
    wake: asyncio.Event | None = None        # only while a write waits for an intermediate state to settle
    task: asyncio.Task[Any] | None = None    # only while writing


UidOf = Callable[[str, str], "Mapping[str, Any] | None"]


@dataclass
class StatusWriter:
    """Coalesces presentations per Service and writes them on the operator's loop."""

    api: KubeApi
    scope: Scope
    # (namespace, name) -> the Service body as the index knows it (for uid, type, current annotations).
    body_of: UidOf
    component: str = "interlook"
    # How long an intermediate state must last before it is written.
    settle: float = 2.0
    _targets: dict[str, _Target] = field(default_factory=dict)
    writes: int = 0

    def show(self, name: str, presentation: Presentation | None) -> None:
        """Make Service ``name`` (namespace/name) show this; None leaves it as it is."""
        target = self._targets.get(name)
        if target is None:
            target = self._targets[name] = _Target()
        intermediate = presentation is not None and presentation.state(self.scope) in INTERMEDIATE
        if not intermediate:
            target.not_before = 0.0
        elif target.desired is None or target.desired.state(self.scope) not in INTERMEDIATE:
            # The clock starts when the Service enters an intermediate state, not at each step.
            target.not_before = asyncio.get_running_loop().time() + self.settle
        target.desired = presentation
        if target.wake is not None:
            target.wake.set()
        if presentation is not None and (target.task is None or target.task.done()):
            target.task = asyncio.create_task(self._flush(name, target), name=f"writeback-{name}")

    def forget(self, name: str) -> None:
        target = self._targets.pop(name, None)
        if target is not None and target.task is not None:
            target.task.cancel()

    def abandon(self) -> None:
        """Drop every pending write at once (a peer took over): nothing more is written."""
        for target in self._targets.values():
            if target.task is not None:
                target.task.cancel()
        self._targets.clear()

    async def idle(self) -> None:
        """Wait until every pending write is done (tests, shutdown)."""
        tasks = [t.task for t in self._targets.values() if t.task is not None and not t.task.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.idle()
        await self.api.close()

    async def _flush(self, name: str, target: _Target) -> None:
        try:
            await self._flush_until_written(name, target)
        finally:
            if target.task is asyncio.current_task():
                target.task = target.wake = None  # nothing pending: keep only what was written

    async def _flush_until_written(self, name: str, target: _Target) -> None:
        namespace, short = split_entry_name(name)
        loop = asyncio.get_running_loop()
        while target.desired is not None and target.desired != target.written:
            wait = target.not_before - loop.time()
            if wait > 0:
                wake = target.wake = target.wake or asyncio.Event()
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            desired = target.desired
            body = self.body_of(namespace, short)
            if body is None:
                return  # the Service is gone: nothing to write on
            try:
                await self._write(namespace, short, body, desired, target.written)
            except Exception as exc:  # keep the last wish; the next change or resync tries again
                log.warning("cannot write the status of %s: %s", name, brief_error(exc))
                await asyncio.sleep(1)
                continue
            target.written = desired

    async def _write(self, namespace: str, name: str, body: Mapping[str, Any], desired: Presentation,
                     written: Presentation | None) -> None:
        current = ((body.get("metadata") or {}).get("annotations") or {})
        # The index may lag behind our own last write: compare with both.
        stale = any(current.get(k) != v for k, v in desired.annotations)
        path = service_path(namespace, name)
        try:
            if stale or (written is not None and written != desired):
                changes: dict[str, str | None] = dict.fromkeys(leftover_keys(body, self.scope))
                changes.update(desired.annotations)
                await self.api.patch(path, {"metadata": {"annotations": changes}}, decode=False)
                self.writes += 1
            is_lb = (body.get("spec") or {}).get("type") == "LoadBalancer"
            if is_lb and desired.ingress_ip is not None:
                ingress = ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                want = [{"ip": desired.ingress_ip}] if desired.ingress_ip else []
                have = [{"ip": i.get("ip")} for i in ingress if i.get("ip")]
                if have != want:
                    await self.api.patch(f"{path}/status", {"status": {"loadBalancer": {"ingress": want}}},
                                         decode=False)
                    self.writes += 1
        except KubeApiError as exc:
            if exc.status != 404:
                raise

    async def hide_address(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A Service being deleted stops showing its public IP, before the IP step may free it.

        Otherwise, for the time between the address being freed and the
        finalizer being released, the address freed could be given to a new
        Service and shown on two Services at once.
        """
        path = service_path(namespace, name)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        key = self.scope.key(PUBLIC_IP)
        try:
            if annotations.get(key):
                await self.api.patch(path, {"metadata": {"annotations": {
                    key: None, self.scope.key(STATE): UNDEPLOYING}}}, decode=False)
                self.writes += 1
            if ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
                await self.api.patch(f"{path}/status", {"status": {"loadBalancer": {"ingress": []}}}, decode=False)
                self.writes += 1
        except KubeApiError as exc:
            if exc.status != 404:
                raise

    async def post_event(self, name: str, event: Event) -> None:
        namespace, short = split_entry_name(name)
        body = self.body_of(namespace, short) or {}
        now = datetime.datetime.now(datetime.UTC).isoformat()
        uid = (body.get("metadata") or {}).get("uid")
        event_body: Any = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{short}.", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": namespace, "name": short,
                               **({"uid": uid} if uid else {})},
            "reason": event.reason,
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.api.post(f"/api/v1/namespaces/{namespace}/events", event_body, decode=False)
        except Exception as exc:
            log.warning("cannot post event %s on %s: %s", event.reason, name, brief_error(exc))
            return
        self.writes += 1

    async def add_finalizer(self, namespace: str, name: str, finalizer: str, body: Mapping[str, Any]) -> str | None:
        """Put our finalizer on a Service; the resourceVersion written, None if it is gone or going.

        A strategic-merge patch adds our name to the list without replacing
        the others' and needs no resourceVersion; the same write removes what
        an older Interlook (kopf's bookkeeping) left under our prefix.
        """
        meta: dict[str, Any] = {"finalizers": [finalizer]}
        leftovers = leftover_keys(body, self.scope)
        if leftovers:
            meta["annotations"] = dict.fromkeys(leftovers)
        try:
            answer = await self.api.patch(service_path(namespace, name), {"metadata": meta},
                                          content_type=STRATEGIC_MERGE_PATCH)
        except KubeApiError as exc:
            # 404: gone.  422: being deleted ("no new finalizers can be added").
            if exc.status in (404, 409, 422):
                return None
            raise
        self.writes += 1
        return str((answer.get("metadata") or {}).get("resourceVersion") or "")

    async def release_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        """Take our finalizer off a Service; a gone Service is fine."""
        patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [finalizer]}}
        try:
            await self.api.patch(service_path(namespace, name), patch, content_type=STRATEGIC_MERGE_PATCH,
                                 decode=False)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            return
        self.writes += 1

    async def strip(self, namespace: str, name: str, finalizer: str) -> None:
        """Remove every mark we left on a Service that is no longer ours.

        Best effort: what stays (API server away) is found again by the
        Service's next event, which still shows our marks.
        """
        try:
            await self._strip(namespace, name, finalizer)
        except Exception as exc:
            log.warning("cannot clean our marks off %s/%s: %s", namespace, name, brief_error(exc))

    async def _strip(self, namespace: str, name: str, finalizer: str) -> None:
        path = service_path(namespace, name)
        try:
            body = await self.api.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return
            raise
        meta = body.get("metadata") or {}
        ours = dict.fromkeys(marked_keys(meta.get("annotations") or {}, self.scope))
        patch: dict[str, Any] = {"metadata": {}}
        if ours:
            patch["metadata"]["annotations"] = ours
        if finalizer in (meta.get("finalizers") or []):
            patch["metadata"]["$deleteFromPrimitiveList/finalizers"] = [finalizer]
        if patch["metadata"]:
            await self.api.patch(path, patch, content_type=STRATEGIC_MERGE_PATCH)
            self.writes += 1
        if ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            await self.api.patch(f"{path}/status", {"status": {"loadBalancer": {"ingress": []}}})


def service_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}"


def leftover_keys(body: Mapping[str, Any], scope: Scope) -> list[str]:
    """Our marks that are not output: an older version's bookkeeping (kopf's diff-base, progress)."""
    outputs = {scope.key(k) for k in OUTPUT_KEYS}
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return [k for k in marked_keys(annotations, scope) if k not in outputs]


def brief_error(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"

"""provider.swarm: tells the core which Swarm services ask to be published, and when that changes.

Detection comes from the daemon's events stream (a change is seen within a
second) with a full poll every ``pollInterval`` as the safety net, as the Go
program polled.  Each pass reads the whole labelled state at once and sends
only what changed since the last message sent for a service: an ``add`` when
its definition changed, an ``add`` with ``error`` for bad labels, a ``delete``
when it disappeared.  A daemon that cannot be read makes a pass do nothing:
only a service the daemon says is gone is ever deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from controller.extension import PROVIDER, BaseExtension, ExtensionContext
from controller.instance import ClusterIdentity
from controller.messages import Action, Message, Service
from extensions.providers.swarm.client import (
    DOCKER_ERRORS,
    DockerSwarmClient,
    EventWatcher,
    Snapshot,
    describe_error,
)
from extensions.providers.swarm.config import SwarmConfig
from extensions.providers.swarm.labels import Observed, observe_all, parse_label_selector

# A burst of events (a scale-up is a service update plus one start per task)
# becomes one pass.
DEBOUNCE = 0.2
# While tasks are on their way (created, restarting) look again this often:
# task changes on other nodes produce no event on the manager we follow.
CONVERGE_INTERVAL = 1.0
CONVERGE_FOR = 60.0
# Retry of a failed pass (daemon down or restarting), doubling up to the cap.
RETRY_MIN, RETRY_MAX = 0.5, 10.0

NO_TASK_INFO = "no running task"


@dataclass(frozen=True)
class _Sent:
    """What we last told the core about one service."""

    service: Service
    error: str = ""


class SwarmProvider(BaseExtension):
    name = "provider.swarm"
    kind = PROVIDER

    def __init__(self, config: SwarmConfig, context: ExtensionContext | None = None, *,
                 client: DockerSwarmClient | None = None):
        super().__init__(context)
        self.config = config
        self.selector = parse_label_selector(config.label_selector)
        self.client = client or DockerSwarmClient(config)
        self._sent: dict[str, _Sent] = {}
        self._deleted: set[str] = set()
        self._converging_since: dict[str, float] = {}
        self._watcher: EventWatcher | None = None
        self._reachable = True
        self.passes = 0  # completed passes, for tests and /extensions

    # -- life ------------------------------------------------------------
    async def setup(self) -> None:
        # SwarmUnavailable carries the whole reason: the core shows it as the start-up failure.
        await asyncio.to_thread(self.client.connect)
        # A (re)start tells the core everything again: the core treats an
        # unchanged add as a confirmation, and we may have missed changes.
        self._sent.clear()
        self._deleted.clear()
        self._converging_since.clear()
        self._reachable = True

    async def teardown(self) -> None:
        await asyncio.to_thread(self.client.close)

    async def cluster_identity(self) -> ClusterIdentity | None:
        """The Swarm cluster ID (asked once, before start-up) and our label selector."""
        if not self.client.cluster_id:
            await asyncio.to_thread(self.client.connect)
        return ClusterIdentity("swarm", self.client.cluster_id, ",".join(sorted(self.config.label_selector)))

    async def run_background(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify(_kind: str) -> None:  # called from the events thread
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(wake.set)

        watcher = self._watcher = EventWatcher(self.client.open_events, notify)
        watcher.start()
        retry = RETRY_MIN
        converging_since: float | None = None
        try:
            while True:
                wake.clear()
                ok, converging = await self.sync()
                now = loop.time()
                timeout = self.config.poll_interval
                if not ok:
                    timeout, retry = min(timeout, retry), min(retry * 2, RETRY_MAX)
                else:
                    retry = RETRY_MIN
                    converging_since = (converging_since or now) if converging else None
                    if converging_since is not None and now - converging_since < CONVERGE_FOR:
                        timeout = min(timeout, CONVERGE_INTERVAL)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                if wake.is_set():
                    await asyncio.sleep(DEBOUNCE)
        finally:
            self._watcher = None
            await asyncio.to_thread(watcher.stop)

    # -- one pass --------------------------------------------------------
    async def sync(self) -> tuple[bool, bool]:
        """Read the swarm and send what changed; returns (read ok, tasks still converging)."""
        try:
            snapshot = await asyncio.to_thread(self.client.snapshot, self.selector)
        except DOCKER_ERRORS as exc:
            if self._reachable:
                self.log.warning("cannot read the swarm at %s (will retry; nothing is deleted meanwhile): %s",
                                 self.config.endpoint, describe_error(exc))
            self._reachable = False
            return False, False
        if not self._reachable:
            self.log.info("the swarm at %s answers again", self.config.endpoint)
            self._reachable = True
            if self._watcher is not None:
                self._watcher.reconnect()  # its connection may have died with the daemon
        observed = self._observe(snapshot)
        for name in sorted(observed):
            message = self._change_for(observed[name])
            if message is not None:
                await self.send_queue.put(message)
        for name in sorted(self._gone(observed)):
            await self.send_queue.put(self._delete_message(name))
        self.passes += 1
        converging = any(o.desired_tasks > _running(o) for o in observed.values())
        return True, converging

    def _observe(self, snapshot: Snapshot) -> dict[str, Observed]:
        return observe_all(snapshot.services, snapshot.tasks, snapshot.nodes, self.selector, provider=self.name)

    def _change_for(self, observed: Observed) -> Message | None:
        """The message that brings the core up to date with ``observed``, or None if it is."""
        name = observed.name
        self._deleted.discard(name)
        previous = self._sent.get(name)
        settling = self._settling(observed)
        info = ""
        if observed.error:
            sent = _Sent(Service(name=name, provider=self.name), observed.error)
        elif observed.service is not None and observed.service.targets:
            sent = _Sent(observed.service)
            if settling and previous is not None and _only_loses_targets(previous, observed.service):
                # A rolling update or a restart takes tasks down one by one:
                # wait for the swarm to settle instead of re-provisioning at each step.
                return None
        elif observed.service is not None and observed.desired_tasks == 0 and previous is not None:
            # Scaled to zero after being published: say so honestly.
            sent, info = _Sent(observed.service), NO_TASK_INFO
        else:
            # Tasks on their way (new service, rolling update, daemon restart):
            # keep what was published rather than flap through "no target".
            return None
        if sent == previous:
            return None
        self._sent[name] = sent
        return Message(action=Action.ADD, service=sent.service, sender=self.name, error=sent.error, info=info)

    def _settling(self, observed: Observed) -> bool:
        """True while the swarm is still starting tasks of this service (for at most CONVERGE_FOR)."""
        if observed.desired_tasks <= _running(observed):
            self._converging_since.pop(observed.name, None)
            return False
        now = time.monotonic()
        since = self._converging_since.setdefault(observed.name, now)
        return now - since < CONVERGE_FOR

    def _gone(self, observed: dict[str, Observed]) -> set[str]:
        """Services we published (or the core still holds for us) that no longer exist."""
        gone = {n for n in self._sent if n not in observed}
        try:
            live = self.context.entries()
        except Exception:  # the core's view is a bonus; our own record is enough
            live = {}
        for name, service in live.items():
            if service.provider == self.name and name not in observed and name not in self._deleted:
                gone.add(name)  # e.g. removed while we were not running
        self._deleted &= set(live) | gone
        return gone

    def _delete_message(self, name: str) -> Message:
        self._sent.pop(name, None)
        self._converging_since.pop(name, None)
        self._deleted.add(name)
        self.log.info("service %s is gone", name)
        return Message(action=Action.DELETE, service=Service(name=name, provider=self.name), sender=self.name)

    # -- refresh ---------------------------------------------------------
    async def handle(self, message: Message) -> Message:
        name = message.service.name
        if message.action != Action.REFRESH:
            # Providers are only asked to refresh; answer in a way the core ignores.
            return _answer(self.name, message, Action.REFRESH, message.service,
                           error=f"{self.name} does not handle {message.action}")
        try:
            snapshot = await asyncio.to_thread(self.client.service_snapshot, name)
        except DOCKER_ERRORS as exc:
            # Not sure it is gone: no answer the core acts on; it asks again later.
            return _answer(self.name, message, Action.REFRESH, message.service,
                           error=f"cannot read the swarm: {describe_error(exc)}")
        observed = self._observe(snapshot).get(name) if snapshot is not None else None
        if observed is None:  # gone, or no longer labelled / selected
            self._sent.pop(name, None)
            self._deleted.add(name)
            return _answer(self.name, message, Action.DELETE, Service(name=name, provider=self.name))
        self._deleted.discard(name)
        if observed.error:
            self._sent[name] = _Sent(Service(name=name, provider=self.name), observed.error)
            return _answer(self.name, message, Action.ADD, Service(name=name, provider=self.name), error=observed.error)
        if observed.service is not None and observed.service.targets:
            self._sent[name] = _Sent(observed.service)
            return _answer(self.name, message, Action.ADD, observed.service)
        # It exists with no running task right now: confirm what is published.
        previous = self._sent.get(name)
        service = previous.service if previous is not None and not previous.error else message.service
        return _answer(self.name, message, Action.ADD, service, info=NO_TASK_INFO)


def _only_loses_targets(previous: _Sent, current: Service) -> bool:
    """True when ``current`` differs from what was sent only by fewer or lighter targets."""
    before = previous.service
    if previous.error or before.tls != current.tls or before.dns_names != current.dns_names:
        return False
    return {(t.host, t.port) for t in current.targets} <= {(t.host, t.port) for t in before.targets}


def _running(observed: Observed) -> int:
    return sum(t.weight for t in observed.service.targets) if observed.service is not None else 0


def _answer(sender: str, message: Message, action: Action, service: Service, *, error: str = "",
            info: str = "") -> Message:
    """A provider's answer to the core; the core must see it as coming from the provider."""
    return Message(action=action, service=service, sender=sender, destination="core",
                   error=error, info=info, extra=dict(message.extra))


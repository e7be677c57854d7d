"""The Docker Engine API as provider.swarm uses it: a few blocking reads and an events stream.

Everything here blocks (the ``docker`` SDK is synchronous): the provider calls
it through ``asyncio.to_thread`` and runs the events stream in a thread of its
own, so the event loop never waits on the daemon.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import docker
import requests
from docker.errors import DockerException, NotFound

from extensions.providers.swarm.config import SwarmConfig
from extensions.providers.swarm.labels import JSON, LabelRequirement, label_filters

log = logging.getLogger("interlook.provider.swarm")

# What can go wrong talking to a daemon that is down, restarting or not a manager.
DOCKER_ERRORS: tuple[type[BaseException], ...] = (DockerException, requests.exceptions.RequestException, OSError)

# Events that may change what we publish.  Task containers carry the swarm
# labels; other containers are none of our business.
_CONTAINER_ACTIONS = {"start", "die", "stop", "kill", "destroy", "health_status"}


class SwarmUnavailable(RuntimeError):
    """The daemon cannot be reached or cannot answer Swarm questions."""


@dataclass(frozen=True)
class Snapshot:
    services: Sequence[JSON]
    tasks: Sequence[JSON]
    nodes: Sequence[JSON]


def describe_error(exc: BaseException) -> str:
    """A short reason, without the SDK's multi-line wrapping."""
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc).strip()
    root = _os_error_in(exc)
    if root is not None and root.strerror:
        return root.strerror.lower()
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _os_error_in(exc: BaseException) -> OSError | None:
    """The socket-level error buried in requests/urllib3 wrappers, if any."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


class DockerSwarmClient:
    """One low-level client for reads; each events stream gets a client of its own."""

    def __init__(self, config: SwarmConfig, *, timeout: float = 15.0):
        self.config = config
        self.timeout = timeout
        self._api: docker.APIClient | None = None
        self._version: str = "auto"
        self.cluster_id = ""  # the Swarm cluster ID, known once connected

    # -- connection ------------------------------------------------------
    def _tls(self) -> docker.tls.TLSConfig | bool:
        if not self.config.uses_tls:
            return False
        cert = (self.config.tls_cert, self.config.tls_key) if self.config.tls_cert else None
        # Verification stays on: the CA given, else the system's.
        return docker.tls.TLSConfig(client_cert=cert, ca_cert=self.config.tls_ca or None,
                                    verify=self.config.tls_ca or True)

    def _new_api(self, version: str, timeout: float | None) -> docker.APIClient:
        return docker.APIClient(base_url=self.config.endpoint, version=version, timeout=timeout,
                                tls=self._tls(), user_agent="interlook")

    def connect(self) -> None:
        """Reach the daemon and check it manages a swarm; SwarmUnavailable says why not."""
        where = self.config.endpoint
        self.close()  # a restart of the extension connects again
        try:
            api = self._new_api("auto", self.timeout)
        except DOCKER_ERRORS as exc:
            raise SwarmUnavailable(f"cannot reach the Docker daemon at {where}: {describe_error(exc)}") from None
        try:
            info = api.info()
        except DOCKER_ERRORS as exc:
            api.close()
            raise SwarmUnavailable(f"the Docker daemon at {where} does not answer: {describe_error(exc)}") from None
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            api.close()
            raise SwarmUnavailable(f"the Docker daemon at {where} is not a Swarm manager "
                                   f"(swarm state {swarm.get('LocalNodeState') or 'unknown'}); "
                                   "point endpoint at a manager node")
        self._api = api
        self._version = str(api.api_version)
        self.cluster_id = str((swarm.get("Cluster") or {}).get("ID") or "")
        log.info("connected to Docker %s (API %s) at %s, swarm node %s", info.get("ServerVersion", "?"),
                 self._version, where, swarm.get("NodeID", "?"))

    @property
    def api(self) -> docker.APIClient:
        if self._api is None:
            raise SwarmUnavailable("not connected")
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    # -- reads -----------------------------------------------------------
    def snapshot(self, selector: Sequence[LabelRequirement]) -> Snapshot:
        """Every labelled service, the tasks the swarm wants running for them, and the nodes."""
        services = self.api.services(filters={"label": label_filters(selector)})
        tasks: list[JSON] = []
        if services:
            ids = [s["ID"] for s in services]
            tasks = self.api.tasks(filters={"service": ids, "desired-state": "running"})
        nodes = self.api.nodes() if tasks else []
        return Snapshot(services=services, tasks=tasks, nodes=nodes)

    def service_snapshot(self, name: str) -> Snapshot | None:
        """The one service called ``name`` (exactly), or None when it does not exist."""
        try:
            service = self.api.inspect_service(name)
        except NotFound:
            return None
        if (service.get("Spec") or {}).get("Name") != name:
            return None  # the API also accepts ID prefixes; we want the name
        tasks = self.api.tasks(filters={"service": [service["ID"]], "desired-state": "running"})
        nodes = self.api.nodes() if tasks else []
        return Snapshot(services=[service], tasks=tasks, nodes=nodes)

    # -- events ----------------------------------------------------------
    def open_events(self) -> Any:
        """A new events stream (a CancellableStream of dicts) on a connection of its own."""
        api = self._new_api(self._version, None)
        try:
            return api.events(decode=True, filters={"type": ["service", "node", "container"]})
        except BaseException:
            api.close()
            raise


def is_relevant(event: JSON) -> bool:
    kind = event.get("Type")
    if kind in ("service", "node"):
        return True
    if kind == "container":
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        action = str(event.get("Action") or "").split(":", 1)[0]
        return "com.docker.swarm.service.id" in attributes and action in _CONTAINER_ACTIONS
    return False


class EventWatcher:
    """Follows the daemon's events in a thread; calls ``notify`` when something may have changed.

    A stream that ends (daemon restart, network cut) is reopened with a
    capped backoff; ``notify`` is also called after each (re)connection,
    because whatever happened while we were away produced no event for us.
    """

    def __init__(self, open_stream: Callable[[], Any], notify: Callable[[str], None], *,
                 backoff_max: float = 5.0):
        self._open_stream = open_stream
        self._notify = notify
        self._backoff_max = backoff_max
        self._stop = threading.Event()
        # Cuts a backoff wait short: the provider saw the daemon answer again.
        self._kick = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="swarm-events", daemon=True)
        self.connections = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        self._close_stream()
        self._thread.join(timeout)

    def reconnect(self) -> None:
        """Drop the current stream (it may hang on a dead connection); the thread opens a new one now."""
        self._kick.set()
        self._close_stream()

    def _close_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # already closed, or the socket is gone: either way it is over
                pass

    def _events(self, stream: Any) -> Iterator[JSON]:
        yield from stream

    def _pause(self, seconds: float) -> None:
        self._kick.wait(seconds)
        self._kick.clear()

    def _run(self) -> None:
        backoff = 0.2
        lost_logged = False
        while not self._stop.is_set():
            try:
                stream = self._open_stream()
            except DOCKER_ERRORS as exc:
                if not lost_logged:
                    log.warning("cannot open the Docker events stream (retrying): %s", describe_error(exc))
                    lost_logged = True
                self._pause(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            with self._lock:
                self._stream = stream
            if self._stop.is_set():
                self._close_stream()
                break
            self.connections += 1
            if lost_logged or self.connections > 1:
                log.info("Docker events stream reconnected")
            lost_logged = False
            backoff = 0.2
            self._notify("connected")
            try:
                for event in self._events(stream):
                    if is_relevant(event):
                        self._notify(str(event.get("Type")))
            except DOCKER_ERRORS as exc:
                log.debug("events stream error: %s", describe_error(exc))
            except Exception:  # a bug in our handling must not end detection for good
                log.exception("events stream handling failed")
            self._close_stream()
            if not self._stop.is_set():
                log.warning("Docker events stream lost; reconnecting")
                lost_logged = True
                self._pause(backoff)

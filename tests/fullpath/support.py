"""What the full-path tests share: waiting on the Service, and catching the instant it disappears."""

from __future__ import annotations

import threading
from typing import Any, Callable

import httpx
import pytest

from tests.kubernetes.conftest import Cluster, Controller, wait_for

HOSTS = "interlook.io/hosts"
PORT = "interlook.io/port"
STATE = "interlook.io/state"
ERROR = "interlook.io/error"
PUBLIC_IP = "interlook.io/public-ip"
FINALIZER = "interlook.io/finalizer"


def published(hosts: str) -> dict[str, str]:
    return {HOSTS: hosts, PORT: "http"}


def instance_of(controller: Controller) -> str:
    """The instance id the running controller marks its records with (its ``/version``)."""
    return str(httpx.get(f"http://127.0.0.1:{controller.port}/version", timeout=5).json()["instance"])


def waiting(check: Callable[[], Any], what: str, controller: Controller, timeout: float = 90.0) -> Any:
    """wait_for, with the controller's log tail in the failure."""
    try:
        return wait_for(check, what, timeout=timeout)
    except pytest.fail.Exception as failure:
        pytest.fail(f"{failure}\n--- controller log tail ({controller.log_path}) ---\n{controller.log()[-6000:]}",
                    pytrace=False)


def deployed(cluster: Cluster, namespace: str, name: str, controller: Controller) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        ann = cluster.annotations(namespace, name)
        return ann if ann.get(STATE) == "deployed" else None
    return dict(waiting(check, f"{namespace}/{name} deployed", controller))


class DeletionWatch:
    """Watch one Service and run ``look`` the moment the API server reports it DELETED.

    The watch starts at the Service's current resourceVersion, so it cannot miss
    the event whenever it connects; ``look``'s answer is what the world was like
    as soon as the Service was gone, i.e. after the finalizer was released.
    """

    def __init__(self, cluster: Cluster, namespace: str, name: str, look: Callable[[], Any]):
        from kubernetes import watch

        self._cluster, self._namespace, self._name, self._look = cluster, namespace, name, look
        self._watch = watch.Watch()
        current: Any = cluster.core.read_namespaced_service(name, namespace)
        self._version = current.metadata.resource_version
        self.seen: Any = None
        self.deleted = threading.Event()
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace}-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self.deleted.is_set():
                for event in self._watch.stream(self._cluster.core.list_namespaced_service, self._namespace,
                                                field_selector=f"metadata.name={self._name}",
                                                resource_version=self._version, timeout_seconds=30):
                    self._version = event["object"].metadata.resource_version
                    if event["type"] == "DELETED":
                        self.seen = self._look()
                        self.deleted.set()
                        self._watch.stop()
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.failure = exc
            self.deleted.set()

    def result(self, controller: Controller, timeout: float = 120.0) -> Any:
        """What ``look`` saw at the DELETED event (fails if the Service is not deleted in time)."""
        if not self.deleted.wait(timeout):
            self._watch.stop()
            pytest.fail(f"{self._namespace}/{self._name} was not deleted within {timeout}s "
                        f"(annotations: {self._cluster.annotations(self._namespace, self._name)})\n"
                        f"--- controller log tail ---\n{controller.log()[-6000:]}", pytrace=False)
        if self.failure is not None:
            raise self.failure
        return self.seen

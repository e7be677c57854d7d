"""provider.swarm without a daemon: labels, ports and targets from plain Engine API dicts,
and what the provider sends for a sequence of observed states (fake client).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, parse_config
from controller.extension import ExtensionContext, ExtensionStartError
from controller.messages import Action, Message, Service, Target
from extensions import resolve
from extensions.providers.swarm import SwarmConfig, SwarmProvider
from extensions.providers.swarm.client import EventWatcher, Snapshot, SwarmUnavailable, is_relevant
from extensions.providers.swarm.labels import (
    LabelRequirement,
    LabelSelectorError,
    ServiceLabelError,
    label_filters,
    node_address,
    observe_all,
    parse_hosts,
    parse_label_selector,
    parse_port,
    parse_ssl,
)

# -- Engine API shaped dicts -------------------------------------------------

def svc(name: str, labels: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None,
        sid: str | None = None) -> dict[str, Any]:
    if labels is None:
        labels = {"interlook.hosts": "a.example.com", "interlook.port": "80"}
    if ports is None:
        ports = [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30080, "PublishMode": "ingress"}]
    return {"ID": sid or f"id-{name}", "Spec": {"Name": name, "Labels": labels},
            "Endpoint": {"Ports": ports}}


def task(service: str, node: str, state: str = "running", desired: str = "running",
         ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if ports is not None:
        status["PortStatus"] = {"Ports": ports}
    return {"ServiceID": f"id-{service}", "NodeID": node, "DesiredState": desired, "Status": status}


def node(nid: str, addr: str, state: str = "ready", manager: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": nid, "Status": {"State": state, "Addr": addr}}
    if manager:
        out["ManagerStatus"] = {"Addr": manager}
    return out


NODES = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2"), node("n3", "10.0.0.3")]


# -- labels ------------------------------------------------------------------

def test_hosts_are_comma_separated_and_trimmed() -> None:
    assert parse_hosts(" a.example.com, b.example.com ,,") == ("a.example.com", "b.example.com")
    with pytest.raises(ServiceLabelError, match="interlook.hosts is empty"):
        parse_hosts(" , ")


@pytest.mark.parametrize("value", ["http", "", "80.5", "0", "70000", "-1"])
def test_a_port_label_must_be_a_port_number(value: str) -> None:
    with pytest.raises(ServiceLabelError, match="is not a port number"):
        parse_port(value)


def test_ssl_label_is_a_boolean_and_defaults_to_false() -> None:
    assert parse_ssl(None) is False
    assert parse_ssl("TRUE") is True
    assert parse_ssl("false") is False
    with pytest.raises(ServiceLabelError, match="must be true or false"):
        parse_ssl("maybe")


def test_label_selector_items_are_keys_or_key_values() -> None:
    selector = parse_label_selector(["env=prod", "team", " tier = web "])
    assert selector == (LabelRequirement("env", "prod"), LabelRequirement("team"), LabelRequirement("tier", "web"))
    assert label_filters(selector) == ["interlook.hosts", "interlook.port", "env=prod", "team", "tier=web"]
    with pytest.raises(LabelSelectorError):
        parse_label_selector(["=x"])


def test_node_address_falls_back_to_the_manager_address() -> None:
    assert node_address(node("n", "10.1.1.1")) == "10.1.1.1"
    assert node_address(node("n", "0.0.0.0", manager="10.2.2.2:2377")) == "10.2.2.2"
    assert node_address(node("n", "", manager="[fd00::5]:2377")) == "fd00::5"


# -- targets -----------------------------------------------------------------

def test_ingress_targets_are_the_nodes_of_running_tasks_weighted_by_task_count() -> None:
    tasks = [task("web", "n1"), task("web", "n1"), task("web", "n2"),
             task("web", "n3", state="preparing")]  # not running yet
    observed = observe_all([svc("web")], tasks, NODES)["web"]
    assert observed.error == ""
    assert observed.service is not None
    assert observed.service.targets == (Target("10.0.0.1", 30080, 2), Target("10.0.0.2", 30080, 1))
    assert observed.service.dns_names == ("a.example.com",)
    assert observed.desired_tasks == 4


def test_port_label_matches_the_target_port_and_the_published_port_is_used() -> None:
    ports = [{"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 30443, "PublishMode": "ingress"},
             {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 30081, "PublishMode": "ingress"}]
    service = svc("web", {"interlook.hosts": "a", "interlook.port": "8080", "interlook.ssl": "true"}, ports)
    observed = observe_all([service], [task("web", "n1")], NODES)["web"]
    assert observed.service is not None
    assert observed.service.targets == (Target("10.0.0.1", 30081, 1),)
    assert observed.service.tls is True


def test_port_label_may_name_the_published_port() -> None:
    service = svc("web", {"interlook.hosts": "a", "interlook.port": "30080"})
    observed = observe_all([service], [task("web", "n1")], NODES)["web"]
    assert observed.service is not None and observed.service.targets == (Target("10.0.0.1", 30080, 1),)


def test_host_mode_uses_each_task_port_status() -> None:
    ports = [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 0, "PublishMode": "host"}]
    tasks = [task("web", "n1", ports=[{"TargetPort": 80, "PublishedPort": 31001}]),
             task("web", "n2", ports=[{"TargetPort": 80, "PublishedPort": 31002}])]
    observed = observe_all([svc("web", ports=ports)], tasks, NODES)["web"]
    assert observed.service is not None
    assert observed.service.targets == (Target("10.0.0.1", 31001, 1), Target("10.0.0.2", 31002, 1))


def test_tasks_on_nodes_that_are_down_are_no_targets() -> None:
    nodes = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2", state="down")]
    observed = observe_all([svc("web")], [task("web", "n1"), task("web", "n2")], nodes)["web"]
    assert observed.service is not None and observed.service.targets == (Target("10.0.0.1", 30080, 1),)


def test_bad_labels_are_errors_not_exceptions() -> None:
    services = [svc("nan", {"interlook.hosts": "a", "interlook.port": "web"}),
                svc("unpublished", {"interlook.hosts": "a", "interlook.port": "9090"}),
                svc("noports", ports=[]),
                svc("good")]
    observed = observe_all(services, [task("good", "n1")], NODES)
    assert "is not a port number" in observed["nan"].error
    assert "9090 is not a published port" in observed["unpublished"].error
    assert "30080->80/tcp" in observed["unpublished"].error
    assert "published: none" in observed["noports"].error
    assert observed["good"].service is not None and observed["good"].service.targets


def test_services_outside_the_selector_are_not_observed() -> None:
    selector = parse_label_selector(["env=prod"])
    prod = svc("prod", {"interlook.hosts": "a", "interlook.port": "80", "env": "prod"})
    dev = svc("dev", {"interlook.hosts": "a", "interlook.port": "80", "env": "dev"})
    unlabelled = svc("plain", {"env": "prod"})
    assert set(observe_all([prod, dev, unlabelled], [], NODES, selector)) == {"prod"}


# -- config ------------------------------------------------------------------

def load(section: dict[str, Any]) -> SwarmConfig:
    data = {"core": {"workflowSteps": "provider.swarm"}, "provider": {"swarm": section}}
    config: SwarmConfig = parse_config(data, resolve).extensions["provider.swarm"]
    return config


def test_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    config = load({})
    assert config.endpoint == "unix:///var/run/docker.sock"
    assert config.poll_interval == 15.0
    monkeypatch.setenv("DOCKER_HOST", "tcp://swarm.example:2376")
    assert load({}).endpoint == "tcp://swarm.example:2376"


def test_a_zero_poll_interval_means_the_default() -> None:
    assert load({"pollInterval": "0s"}).poll_interval == 15.0
    assert load({"pollInterval": "1m30s"}).poll_interval == 90.0


def test_config_keys_of_the_go_program(tmp_path: Path) -> None:
    config = load({"endpoint": "tcp://10.0.0.1:2376", "labelSelector": ["env=prod", "team"],
                   "tlsCa": str(tmp_path / "ca.pem"), "tlsCert": str(tmp_path / "c.pem"),
                   "tlsKey": str(tmp_path / "k.pem"), "pollInterval": "5s"})
    assert config.label_selector == ("env=prod", "team")
    assert config.uses_tls
    assert config.poll_interval == 5.0


def test_bad_config_values_are_reported_with_their_path() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"endpoint": "localhost", "labelSelector": ["=oops"], "tlsCert": "/x.pem"})
    text = str(caught.value)
    assert "provider.swarm.endpoint" in text
    assert "provider.swarm.labelSelector" in text
    assert "tlsCert and tlsKey go together" in text


# -- provider logic with a fake client ---------------------------------------

class FakeClient:
    """Serves scripted snapshots; ``fail`` makes every read raise like a stopped daemon."""

    def __init__(self) -> None:
        self.services: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.nodes = NODES
        self.fail = False
        self.connect_error: Exception | None = None

    def connect(self) -> None:
        if self.connect_error:
            raise self.connect_error

    def close(self) -> None:
        pass

    def snapshot(self, selector: Any) -> Snapshot:
        if self.fail:
            raise ConnectionError("connection refused")
        return Snapshot(list(self.services), list(self.tasks), list(self.nodes))

    def service_snapshot(self, name: str) -> Snapshot | None:
        if self.fail:
            raise ConnectionError("connection refused")
        found = [s for s in self.services if s["Spec"]["Name"] == name]
        return Snapshot(found, list(self.tasks), list(self.nodes)) if found else None

    def open_events(self) -> Any:
        raise ConnectionError("no events in unit tests")


def make_provider(live: dict[str, Service] | None = None) -> tuple[SwarmProvider, FakeClient,
                                                                   asyncio.Queue[Message]]:
    client = FakeClient()
    context = ExtensionContext(name="provider.swarm", entries=lambda: dict(live or {}))
    provider = SwarmProvider(SwarmConfig(endpoint="unix:///fake"), context, client=client)  # type: ignore[arg-type]
    queue: asyncio.Queue[Message] = asyncio.Queue()
    provider.send_queue = queue
    return provider, client, queue


def drain(queue: asyncio.Queue[Message]) -> list[Message]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_only_changes_are_sent() -> None:
    provider, client, queue = make_provider()
    client.services = [svc("web")]
    client.tasks = [task("web", "n1")]
    await provider.sync()
    [first] = drain(queue)
    assert first.action == Action.ADD and first.service.targets == (Target("10.0.0.1", 30080, 1),)
    await provider.sync()
    assert drain(queue) == []
    client.tasks.append(task("web", "n1"))
    await provider.sync()
    [second] = drain(queue)
    assert second.service.targets == (Target("10.0.0.1", 30080, 2),)


async def test_a_service_that_disappears_gets_one_delete() -> None:
    provider, client, queue = make_provider()
    client.services, client.tasks = [svc("web")], [task("web", "n1")]
    await provider.sync()
    drain(queue)
    client.services, client.tasks = [], []
    await provider.sync()
    [gone] = drain(queue)
    assert gone.action == Action.DELETE and gone.service.name == "web"
    await provider.sync()
    assert drain(queue) == []


async def test_an_unreadable_swarm_deletes_nothing() -> None:
    provider, client, queue = make_provider()
    client.services, client.tasks = [svc("web")], [task("web", "n1")]
    await provider.sync()
    drain(queue)
    client.fail = True
    assert await provider.sync() == (False, False)
    assert drain(queue) == []
    client.fail = False
    await provider.sync()
    assert drain(queue) == []  # nothing changed meanwhile


async def test_entries_the_core_holds_for_vanished_services_are_deleted() -> None:
    # E.g. removed while Interlook was not running: the core still has the entry.
    live = {"old": Service(name="old", provider="provider.swarm"),
            "k8s": Service(name="k8s", provider="provider.kubernetes")}
    provider, client, queue = make_provider(live)
    await provider.sync()
    messages = drain(queue)
    assert [(m.action, m.service.name) for m in messages] == [(Action.DELETE, "old")]
    await provider.sync()
    assert drain(queue) == []


async def test_a_service_waits_for_a_running_task_before_it_is_announced() -> None:
    provider, client, queue = make_provider()
    client.services, client.tasks = [svc("web")], [task("web", "n1", state="preparing")]
    ok, converging = await provider.sync()
    assert ok and converging
    assert drain(queue) == []


async def test_a_rolling_restart_does_not_shrink_what_is_published() -> None:
    provider, client, queue = make_provider()
    client.services = [svc("web")]
    client.tasks = [task("web", "n1"), task("web", "n2")]
    await provider.sync()
    drain(queue)
    client.tasks = [task("web", "n1"), task("web", "n2", state="starting")]
    await provider.sync()
    assert drain(queue) == []
    client.tasks = [task("web", "n1", state="ready"), task("web", "n2", state="ready")]  # daemon restart
    await provider.sync()
    assert drain(queue) == []
    client.tasks = [task("web", "n1"), task("web", "n3")]  # settled somewhere else
    await provider.sync()
    [moved] = drain(queue)
    assert moved.service.targets == (Target("10.0.0.1", 30080, 1), Target("10.0.0.3", 30080, 1))


async def test_scaled_to_zero_is_published_with_no_target() -> None:
    provider, client, queue = make_provider()
    client.services, client.tasks = [svc("web")], [task("web", "n1")]
    await provider.sync()
    drain(queue)
    client.tasks = []
    await provider.sync()
    [empty] = drain(queue)
    assert empty.action == Action.ADD and empty.service.targets == () and empty.info == "no running task"


async def test_bad_labels_send_an_add_with_error_once() -> None:
    provider, client, queue = make_provider()
    client.services = [svc("bad", {"interlook.hosts": "a", "interlook.port": "x"}), svc("good")]
    client.tasks = [task("good", "n1"), task("bad", "n1")]
    await provider.sync()
    messages = {m.service.name: m for m in drain(queue)}
    assert messages["bad"].action == Action.ADD and "not a port number" in messages["bad"].error
    assert messages["good"].error == "" and messages["good"].service.targets
    await provider.sync()
    assert drain(queue) == []


async def test_refresh_answers() -> None:
    provider, client, queue = make_provider()
    client.services, client.tasks = [svc("web")], [task("web", "n1")]
    refresh = Message(action=Action.REFRESH, service=Service(name="web", public_ip="192.0.2.9"), sender="core",
                      destination="provider.swarm", extra={"generation": "3"})
    answer = await provider.handle(refresh)
    assert (answer.action, answer.sender, answer.extra) == (Action.ADD, "provider.swarm", {"generation": "3"})
    assert answer.service.targets == (Target("10.0.0.1", 30080, 1),)
    client.tasks = [task("web", "n1", state="starting")]
    answer = await provider.handle(refresh)
    assert answer.action == Action.ADD and answer.info == "no running task"
    client.fail = True
    answer = await provider.handle(refresh)
    assert answer.action == Action.REFRESH and "cannot read the swarm" in answer.error  # the core ignores it
    client.fail, client.services = False, []
    answer = await provider.handle(refresh)
    assert answer.action == Action.DELETE and answer.service.name == "web"


async def test_start_up_fails_when_the_daemon_is_unreachable() -> None:
    provider, client, _ = make_provider()
    client.connect_error = SwarmUnavailable("cannot reach the Docker daemon at unix:///fake: connection refused")
    task_ = asyncio.create_task(provider.start(asyncio.Queue(), asyncio.Queue()))
    with pytest.raises(ExtensionStartError) as caught:
        await provider.wait_ready()
    with pytest.raises(SwarmUnavailable):
        await task_
    assert "cannot reach the Docker daemon at unix:///fake" in caught.value.reason


async def test_the_real_client_names_the_missing_socket(tmp_path: Path) -> None:
    provider = SwarmProvider(SwarmConfig(endpoint=f"unix://{tmp_path}/no-such.sock"))
    task_ = asyncio.create_task(provider.start(asyncio.Queue(), asyncio.Queue()))
    with pytest.raises(ExtensionStartError) as caught:
        await provider.wait_ready()
    with pytest.raises(SwarmUnavailable):
        await task_
    assert caught.value.reason.endswith(f"cannot reach the Docker daemon at unix://{tmp_path}/no-such.sock: "
                                        "no such file or directory")


# -- events ------------------------------------------------------------------

def test_relevant_events() -> None:
    assert is_relevant({"Type": "service", "Action": "update"})
    assert is_relevant({"Type": "node", "Action": "update"})
    assert is_relevant({"Type": "container", "Action": "die",
                        "Actor": {"Attributes": {"com.docker.swarm.service.id": "x"}}})
    assert not is_relevant({"Type": "container", "Action": "start", "Actor": {"Attributes": {}}})
    assert not is_relevant({"Type": "container", "Action": "exec_start: sh",
                            "Actor": {"Attributes": {"com.docker.swarm.service.id": "x"}}})
    assert not is_relevant({"Type": "image", "Action": "pull"})


class FakeStream:
    def __init__(self, events: list[dict[str, Any]], ends: bool) -> None:
        self.events = events
        self.ends = ends
        self._closed = threading.Event()

    def __iter__(self) -> Any:
        yield from self.events
        if not self.ends:
            self._closed.wait(10)

    def close(self) -> None:
        self._closed.set()


def test_a_lost_events_stream_is_reopened_and_announced() -> None:
    opened: list[FakeStream] = []
    notes: list[str] = []

    def open_stream() -> FakeStream:
        # The first stream ends after one event, as when the daemon goes away.
        stream = FakeStream([{"Type": "service", "Action": "create"}], ends=not opened)
        opened.append(stream)
        return stream

    watcher = EventWatcher(open_stream, notes.append, backoff_max=0.05)
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while notes.count("connected") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        watcher.stop()
    assert notes[:3] == ["connected", "service", "connected"]
    assert watcher.connections >= 2
    assert len(opened) >= 2

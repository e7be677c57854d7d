"""provider.swarm against a real Docker Swarm: detection, targets, errors, refresh, restarts.

Every provider here polls once an hour: whatever a test sees arrive came from
the Docker events stream.
"""

from __future__ import annotations

import ipaddress

import pytest

from controller.messages import Action, Message, Target
from tests.swarm.conftest import ServiceFactory, SwarmEnv
from tests.swarm.support import POOL, eventually, running_core, running_provider, swarm_config

pytestmark = [pytest.mark.integration, pytest.mark.swarm]


def published_port(service: object) -> int:
    service.reload()  # type: ignore[attr-defined]
    ports = service.attrs["Endpoint"]["Ports"]  # type: ignore[attr-defined]
    return int(ports[0]["PublishedPort"])


def node_address(services: ServiceFactory) -> str:
    node = services.client.api.nodes()[0]
    return str(node["Status"]["Addr"])


async def test_labelled_service_is_deployed_with_a_pool_address_and_its_targets(
        swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_core(swarm_config(swarm.docker_host, [services.selector])) as run:
        svc = services.create("web", hosts="web.example.com,www.example.com", ssl="true", replicas=2)
        name = services.name("web")
        entry = await run.deployed(name, lambda e: sum(t.weight for t in e.service.targets) == 2)
        assert ipaddress.ip_address(entry.service.public_ip) in POOL
        assert entry.service.targets == (Target(node_address(services), published_port(svc), 2),)
        assert entry.service.dns_names == ("web.example.com", "www.example.com")
        assert entry.service.tls is True
        assert entry.service.provider == "provider.swarm"
        assert entry.error == ""


async def test_a_new_service_is_seen_from_the_events_stream_not_the_poll(
        swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_provider(swarm_config(swarm.docker_host, [services.selector])) as run:
        first_passes = await eventually(lambda: run.provider.passes, what="first pass")
        services.create("fast")
        message = await run.next_message(lambda m: m.service.name == services.name("fast"))
        assert message.action == Action.ADD
        assert message.error == ""
        assert message.service.targets
        # Passes beyond the first were all triggered by events: the poll is an hour away.
        assert run.provider.passes > first_passes
        assert run.provider.config.poll_interval == 3600


async def test_scaling_changes_target_weights(swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_core(swarm_config(swarm.docker_host, [services.selector])) as run:
        svc = services.create("scaled", replicas=1)
        name = services.name("scaled")
        await run.deployed(name, lambda e: [t.weight for t in e.service.targets] == [1])
        first_ip = run.entry(name).service.public_ip  # type: ignore[union-attr]
        services.scale(svc, 3)
        entry = await run.deployed(name, lambda e: [t.weight for t in e.service.targets] == [3])
        assert entry.service.public_ip == first_ip  # same service, same address
        services.scale(svc, 2)
        await run.deployed(name, lambda e: [t.weight for t in e.service.targets] == [2])


async def test_scaling_to_zero_publishes_no_target_but_keeps_the_entry(
        swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_provider(swarm_config(swarm.docker_host, [services.selector])) as run:
        svc = services.create("zero", replicas=1)
        name = services.name("zero")
        await run.next_message(lambda m: m.service.name == name and bool(m.service.targets))
        services.scale(svc, 0)
        message = await run.next_message(lambda m: m.service.name == name)
        assert message.action == Action.ADD
        assert message.service.targets == ()
        assert message.info == "no running task"


async def test_removing_the_service_undeploys_it_and_frees_its_address(
        swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_core(swarm_config(swarm.docker_host, [services.selector])) as run:
        svc = services.create("gone")
        name = services.name("gone")
        deployed = await run.deployed(name)
        assert deployed.service.public_ip
        services.remove(svc)
        entry = await run.undeployed(name)
        assert entry.service.public_ip == ""
        assert entry.error == ""


async def test_removing_the_label_undeploys_too(swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_core(swarm_config(swarm.docker_host, [services.selector])) as run:
        svc = services.create("unlabelled")
        name = services.name("unlabelled")
        await run.deployed(name)
        services.set_labels(svc, {"interlook.test": services.run_id})  # no interlook.hosts/port any more
        await run.undeployed(name)


async def test_label_selector_filters_services(swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_provider(swarm_config(swarm.docker_host, [services.selector])) as run:
        services.create("outside", selected=False)
        services.create("inside")
        inside = await run.next_message(lambda m: m.service.name == services.name("inside") and bool(m.service.targets))
        # A later service proves a pass ran after "outside" had running tasks too.
        services.create("later")
        await run.next_message(lambda m: m.service.name == services.name("later") and bool(m.service.targets))
        assert inside.action == Action.ADD
        assert services.name("outside") not in {m.service.name for m in run.seen}


async def test_a_selector_with_a_bare_key_needs_only_the_label(swarm: SwarmEnv, services: ServiceFactory) -> None:
    config = swarm_config(swarm.docker_host, [services.selector, "interlook.team"])
    async with running_provider(config) as run:
        services.create("teamless")
        services.create("team", extra_labels={"interlook.team": "blue"})
        await run.next_message(lambda m: m.service.name == services.name("team") and bool(m.service.targets))
        services.create("team2", extra_labels={"interlook.team": ""})
        await run.next_message(lambda m: m.service.name == services.name("team2") and bool(m.service.targets))
        assert services.name("teamless") not in {m.service.name for m in run.seen}


async def test_bad_labels_are_error_entries_and_the_others_go_on(swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_core(swarm_config(swarm.docker_host, [services.selector])) as run:
        not_a_number = services.create("nan", port="http")
        services.create("unpublished", port="8080")
        services.create("good")
        await run.deployed(services.name("good"))
        nan = await run.errored(services.name("nan"))
        unpublished = await run.errored(services.name("unpublished"))
        assert "interlook.port='http' is not a port number" in nan.error
        assert "interlook.port=8080 is not a published port" in unpublished.error
        assert nan.state != "deployed" and unpublished.state != "deployed"
        assert nan.service.public_ip == "" and unpublished.service.public_ip == ""
        # Fixing the label heals the entry.
        services.set_labels(not_a_number, {"interlook.test": services.run_id, "interlook.hosts": "nan.example.com",
                                           "interlook.port": "80"})
        healed = await run.deployed(services.name("nan"), lambda e: not e.error)
        assert healed.service.public_ip


async def test_host_mode_ports_give_the_nodes_of_the_tasks(swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_provider(swarm_config(swarm.docker_host, [services.selector])) as run:
        svc = services.create("hostmode", mode="host")
        name = services.name("hostmode")
        message = await run.next_message(lambda m: m.service.name == name and bool(m.service.targets))
        assert message.service.targets == (Target(node_address(services), published_port(svc), 1),)


async def test_refresh_answers_add_while_the_service_exists_and_delete_once_gone(
        swarm: SwarmEnv, services: ServiceFactory) -> None:
    async with running_provider(swarm_config(swarm.docker_host, [services.selector])) as run:
        svc = services.create("refreshed")
        name = services.name("refreshed")
        added = await run.next_message(lambda m: m.service.name == name and bool(m.service.targets))
        refresh = Message(action=Action.REFRESH, service=added.service, sender="core", destination="provider.swarm",
                          extra={"generation": "7"})
        answer = await run.provider.handle(refresh)
        assert answer.action == Action.ADD
        assert answer.sender == "provider.swarm"
        assert answer.service.targets == added.service.targets
        assert answer.extra == {"generation": "7"}
        services.remove(svc)
        await run.next_message(lambda m: m.service.name == name and m.action == Action.DELETE)
        answer = await run.provider.handle(refresh)
        assert answer.action == Action.DELETE
        # A name that only prefixes an existing service is not that service.
        other = services.create("refreshed-longer")
        await run.next_message(lambda m: m.service.name == services.name("refreshed-longer"))
        answer = await run.provider.handle(refresh)
        assert answer.action == Action.DELETE
        assert other.name != name


async def test_a_daemon_restart_is_survived(swarm: SwarmEnv, services: ServiceFactory) -> None:
    if not swarm.restartable:
        pytest.skip(f"DOCKER_HOST={swarm.docker_host} is not the daemon scripts/components/docker.sh manages")
    async with running_core(swarm_config(swarm.docker_host, [services.selector])) as run:
        services.create("survivor", replicas=2)
        name = services.name("survivor")
        before = await run.deployed(name, lambda e: sum(t.weight for t in e.service.targets) == 2)
        connections = run.provider._watcher.connections if run.provider._watcher else 0
        swarm.restart_daemon()
        # The events stream comes back by itself ...
        await eventually(lambda: run.provider._watcher and run.provider._watcher.connections > connections,
                         what="events stream reconnected")
        # ... so a service created after the restart is seen without waiting for the poll.
        services.create("newcomer")
        await run.deployed(services.name("newcomer"))
        after = await run.deployed(name, lambda e: sum(t.weight for t in e.service.targets) == 2)
        assert after.service.public_ip == before.service.public_ip
        # Never undeployed while the daemon was away.
        assert all(e.expected_state == "deployed" for e in run.history if e.name == name)

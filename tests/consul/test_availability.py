"""provisioner.consul when Consul is away or refuses: start-up checks, outages, ACLs."""

from __future__ import annotations

import asyncio

import pytest
import requests

from controller.extension import ExtensionStartError
from controller.messages import Action, Message
from extensions.provisioners.consul.provisioner import ConsulSetupError
from tests.consul.agent import ConsulAgent
from tests.consul.support import catalog_node, message, provisioner, service
from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.consul]


async def test_start_fails_clearly_when_consul_cannot_be_reached():
    url = f"http://127.0.0.1:{free_port()}"
    prov = provisioner(url)
    receive: asyncio.Queue[Message] = asyncio.Queue()
    send: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(prov.start(receive, send))
    with pytest.raises(ExtensionStartError) as failure:
        await prov.wait_ready()
    assert f"cannot reach Consul at {url}" in failure.value.reason
    with pytest.raises(ConsulSetupError):
        await task


async def test_an_outage_is_an_entry_error_and_the_retry_converges(private_agent: ConsulAgent):
    prov = provisioner(private_agent.url)
    await prov.setup()
    svc = service("shop/outage", "outage-web", ip="10.30.0.1")
    assert (await prov.handle(message(Action.ADD, svc))).error == ""

    private_agent.stop()
    failed = await prov.handle(message(Action.ADD, svc))
    assert f"cannot reach Consul at {private_agent.url}" in failed.error
    assert failed.extra == {"generation": "1"}
    assert "cannot reach Consul" in (await prov.handle(message(Action.DELETE, svc))).error

    # A dev agent comes back with an empty catalog: the core's retry re-registers.
    private_agent.start()
    assert (await prov.handle(message(Action.ADD, svc))).error == ""
    node = catalog_node(private_agent.url, "outage-web")
    assert node is not None and node["Node"]["Address"] == "10.30.0.1"


# -- ACLs ------------------------------------------------------------------------


def _token_with_rules(agent: ConsulAgent, name: str, rules: str) -> str:
    headers = {"X-Consul-Token": agent.bootstrap_token}
    policy = requests.put(f"{agent.url}/v1/acl/policy", headers=headers, timeout=10,
                          json={"Name": name, "Rules": rules})
    policy.raise_for_status()
    token = requests.put(f"{agent.url}/v1/acl/token", headers=headers, timeout=10,
                         json={"Description": name, "Policies": [{"ID": policy.json()["ID"]}]})
    token.raise_for_status()
    return str(token.json()["SecretID"])


async def test_with_acls_the_configured_token_publishes_and_removes(acl_agent: ConsulAgent):
    token = _token_with_rules(acl_agent, "interlook-writer",
                              'node_prefix "" { policy = "write" }\nservice_prefix "" { policy = "write" }')
    prov = provisioner(acl_agent.url, token=token)
    await prov.setup()
    svc = service("shop/acl", "acl-web")
    assert (await prov.handle(message(Action.ADD, svc))).error == ""
    node = catalog_node(acl_agent.url, "acl-web", token=acl_agent.bootstrap_token)
    assert node is not None and node["Node"]["Meta"]["interlook-owner"] == "shop/acl"
    assert (await prov.handle(message(Action.DELETE, svc))).error == ""
    assert catalog_node(acl_agent.url, "acl-web", token=acl_agent.bootstrap_token) is None


async def test_with_acls_and_no_token_start_up_says_a_token_is_needed(acl_agent: ConsulAgent):
    with pytest.raises(ConsulSetupError, match="set dns.consul.token or tokenFile; none is set"):
        await provisioner(acl_agent.url).setup()


async def test_with_acls_an_unknown_token_is_refused_without_showing_it(acl_agent: ConsulAgent):
    secret = "0b6f38a4-6c7b-4d0e-9d55-2f4c1c2d0a11"
    with pytest.raises(ConsulSetupError, match="refused the token") as failure:
        await provisioner(acl_agent.url, token=secret).setup()
    assert secret not in str(failure.value)


async def test_with_acls_a_read_only_token_gives_a_clear_entry_error(acl_agent: ConsulAgent):
    token = _token_with_rules(acl_agent, "interlook-reader",
                              'node_prefix "" { policy = "read" }\nservice_prefix "" { policy = "read" }')
    prov = provisioner(acl_agent.url, token=token)
    await prov.setup()
    reply = await prov.handle(message(Action.ADD, service("shop/ro", "ro-web")))
    assert "Consul denied the change" in reply.error
    assert "node:write" in reply.error
    assert token not in reply.error
    assert catalog_node(acl_agent.url, "ro-web", token=acl_agent.bootstrap_token) is None

"""provisioner.kemplm against the LoadMaster simulator, over verified HTTPS."""

from __future__ import annotations

import asyncio
import base64
import logging
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from controller.config import Report, Section
from controller.extension import ExtensionStartError
from controller.messages import Action, Message, Service, Target
from extensions.provisioners.kemplm import KempConfig, KempProvisioner
from extensions.provisioners.kemplm.client import VirtualService, parse_virtual_service
from tests.kemp.conftest import PASSWORD, Sim, kemp_config, kemp_context

pytestmark = pytest.mark.integration

WEB = Service(name="shop/web", provider="provider.kubernetes", public_ip="10.20.0.5",
              targets=(Target("192.168.1.11", 30080), Target("192.168.1.12", 30080, 2)),
              dns_names=("web.example.com",))


def add(service: Service = WEB) -> Message:
    return Message(action=Action.ADD, service=service, extra={"generation": "1"})


def delete(service: Service = WEB) -> Message:
    return Message(action=Action.DELETE, service=service)


async def virtual_services(sim: Sim) -> list[VirtualService]:
    response = await sim.access("listvs")
    assert response.status_code == 200, response.text
    return [parse_virtual_service(vs) for vs in ET.fromstring(response.content).iterfind("Success/Data/VS")]


async def only_vs(sim: Sim) -> VirtualService:
    services = await virtual_services(sim)
    assert len(services) == 1, services
    return services[0]


def servers(vs: VirtualService) -> set[tuple[str, int, int]]:
    return {(rs.address, rs.port, rs.weight) for rs in vs.real_servers}


async def test_add_creates_vs_on_http_port_with_targets_as_real_servers(sim: Sim, provisioner: KempProvisioner):
    reply = await provisioner.handle(add())

    assert reply.error == ""
    assert reply.extra == {"generation": "1"}  # core bookkeeping kept
    vs = await only_vs(sim)
    assert (vs.address, vs.port, vs.protocol) == ("10.20.0.5", 80, "tcp")
    assert vs.nickname == "interlook_site-a_shop.web"
    assert servers(vs) == {("192.168.1.11", 30080, 1), ("192.168.1.12", 30080, 2)}


async def test_tls_service_gets_the_https_port(sim: Sim, provisioner: KempProvisioner):
    assert (await provisioner.handle(add(replace(WEB, tls=True)))).error == ""
    assert (await only_vs(sim)).port == 443


async def test_identical_second_message_makes_no_write(sim: Sim, provisioner: KempProvisioner):
    await provisioner.handle(add())
    writes = await sim.writes()

    reply = await provisioner.handle(add())
    again = await provisioner.handle(Message(action=Action.UPDATE, service=WEB))

    assert reply.error == again.error == ""
    assert await sim.writes() == writes


async def test_update_adds_new_removes_departed_and_reweights_real_servers(sim: Sim, provisioner: KempProvisioner):
    await provisioner.handle(add())
    index = (await only_vs(sim)).index
    changed = replace(WEB, targets=(Target("192.168.1.12", 30080, 5), Target("192.168.1.13", 30080)))

    reply = await provisioner.handle(Message(action=Action.UPDATE, service=changed))

    assert reply.error == ""
    vs = await only_vs(sim)
    assert vs.index == index
    assert servers(vs) == {("192.168.1.12", 30080, 5), ("192.168.1.13", 30080, 1)}


async def test_target_order_does_not_matter(sim: Sim, provisioner: KempProvisioner):
    await provisioner.handle(add())
    writes = await sim.writes()
    reordered = replace(WEB, targets=tuple(reversed(WEB.targets)))

    assert (await provisioner.handle(add(reordered))).error == ""
    assert await sim.writes() == writes


async def test_tls_change_moves_the_vs_port_and_keeps_its_real_servers(sim: Sim, provisioner: KempProvisioner):
    await provisioner.handle(add())
    before = await only_vs(sim)

    reply = await provisioner.handle(Message(action=Action.UPDATE, service=replace(WEB, tls=True)))

    assert reply.error == ""
    after = await only_vs(sim)
    assert (after.index, after.port) == (before.index, 443)
    assert servers(after) == servers(before)
    back = await provisioner.handle(Message(action=Action.UPDATE, service=WEB))
    assert back.error == "" and (await only_vs(sim)).port == 80


async def test_delete_removes_the_vs(sim: Sim, provisioner: KempProvisioner):
    await provisioner.handle(add())

    reply = await provisioner.handle(delete())

    assert reply.error == ""
    assert await virtual_services(sim) == []


async def test_deleting_what_is_already_gone_is_success(sim: Sim, provisioner: KempProvisioner):
    writes = await sim.writes()

    reply = await provisioner.handle(delete())

    assert reply.error == ""
    assert await sim.writes() == writes


async def test_vs_that_is_not_interlooks_is_never_touched(sim: Sim, provisioner: KempProvisioner):
    created = await sim.access("addvs", vs="10.20.0.5", port=80, prot="tcp", nickname="hand-made")
    assert created.status_code == 200
    writes = await sim.writes()

    refused = await provisioner.handle(add())
    deleted = await provisioner.handle(delete())

    assert "held by something other than Interlook" in refused.error and "hand-made" not in refused.error
    assert deleted.error == ""
    assert await sim.writes() == writes
    assert (await only_vs(sim)).nickname == "hand-made"


async def test_two_services_on_one_ip_do_not_disturb_each_other(sim: Sim, provisioner: KempProvisioner):
    other = replace(WEB, name="shop/api", tls=True, targets=(Target("192.168.1.20", 30443),))
    await provisioner.handle(add())
    await provisioner.handle(add(other))

    await provisioner.handle(delete())

    vs = await only_vs(sim)
    assert (vs.nickname, vs.port) == ("interlook_site-a_shop.api", 443)


async def test_service_without_public_ip_is_an_error(provisioner: KempProvisioner):
    reply = await provisioner.handle(add(replace(WEB, public_ip="")))
    assert "no public IP" in reply.error


async def test_server_errors_become_the_entry_error_then_heal(sim: Sim, provisioner: KempProvisioner):
    await sim.faults(error_rate=1.0, error_status=503)

    failed = await provisioner.handle(add())

    assert failed.error.startswith("provisioner.kemplm: LoadMaster listvs: 503")
    await sim.clear_faults()
    healed = await provisioner.handle(add())
    assert healed.error == ""
    assert len(await virtual_services(sim)) == 1


async def test_appliance_down_is_an_error_then_heals(sim: Sim, provisioner: KempProvisioner):
    await sim.faults(down=True)

    failed = await provisioner.handle(add())

    assert "LoadMaster listvs" in failed.error
    await sim.clear_faults()
    assert (await provisioner.handle(add())).error == ""


async def test_appliance_error_status_and_text_reach_the_entry(provisioner: KempProvisioner):
    reply = await provisioner.handle(add(replace(WEB, targets=(Target("192.168.1.11", 30080, 70000),))))
    assert reply.error == "provisioner.kemplm: LoadMaster addrs: 422 Invalid weight: 70000"


async def test_vs_deleted_behind_interlooks_back_is_recreated(sim: Sim, provisioner: KempProvisioner):
    await provisioner.handle(add())
    vs = await only_vs(sim)
    await sim.access("delvs", vs=vs.index)
    reply = await provisioner.handle(add(replace(WEB, targets=(Target("192.168.1.99", 30080),))))
    assert reply.error == ""  # the plan reads first, so it re-creates
    assert servers(await only_vs(sim)) == {("192.168.1.99", 30080, 1)}


async def test_bad_credentials_refuse_start_with_a_clear_reason(sim: Sim):
    wrong = "not-the-password-42"
    extension = KempProvisioner(kemp_config(sim, password=wrong), kemp_context())

    runner = asyncio.create_task(extension.start(asyncio.Queue(), asyncio.Queue()))
    with pytest.raises(ExtensionStartError) as caught:
        await extension.wait_ready()
    with pytest.raises(RuntimeError):
        await runner

    reason = str(caught.value)
    assert "refused the credentials" in reason and sim.url in reason
    assert wrong not in reason


async def test_wrong_ca_refuses_start_with_a_tls_reason(sim: Sim, tmp_path):
    from tests.simulators.tlsutil import ensure_tls

    stranger = ensure_tls(tmp_path / "other-ca")
    extension = KempProvisioner(kemp_config(sim, caFile=str(stranger.ca_file)), kemp_context())

    with pytest.raises(RuntimeError) as caught:
        await extension.setup()

    assert "TLS verification" in str(caught.value) and "caFile" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_unreachable_appliance_refuses_start(sim: Sim):
    from tests.helpers import free_port

    config = replace(kemp_config(sim), endpoint=f"https://127.0.0.1:{free_port()}")
    extension = KempProvisioner(config, kemp_context())
    with pytest.raises(RuntimeError, match="cannot connect"):
        await extension.setup()


async def test_nothing_secret_in_errors_or_logs(sim: Sim, caplog: pytest.LogCaptureFixture):
    secret = "s3cret-Pa55word"
    caplog.set_level(logging.DEBUG)
    sim_config = kemp_config(sim)
    extension = KempProvisioner(replace(sim_config, password=secret), kemp_context())
    with pytest.raises(RuntimeError) as caught:
        await extension.setup()
    good = KempProvisioner(sim_config, kemp_context())
    await good.setup()
    await sim.faults(error_rate=1.0)
    failed = await good.handle(add())
    await sim.clear_faults()
    await good.handle(add())
    await good.teardown()

    texts = [str(caught.value), failed.error, caplog.text, repr(sim_config)]
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    for text in texts:
        assert secret not in text
        assert token not in text
    assert "password=" not in repr(sim_config)


async def test_api_key_instead_of_password():
    # Its own simulator, configured with an API key (the shared one has none).
    from tests.simulators.kemp import KempSimulator

    async with KempSimulator(api_key="sim-api-key-0123") as keyed:
        data = {"endpoint": keyed.url, "apiKey": "sim-api-key-0123", "caFile": str(keyed.ca_file)}
        report = Report()
        config = KempConfig.from_section(Section(data, "lb.kemplm", report))
        assert not report.errors, report.errors
        extension = KempProvisioner(config, kemp_context())
        await extension.setup()
        try:
            reply = await extension.handle(add())
        finally:
            await extension.teardown()
        assert reply.error == ""
        assert len(keyed.appliance.virtual_services) == 1
        assert "sim-api-key-0123" not in repr(config)


async def test_runs_under_the_extension_contract(sim: Sim):
    extension = KempProvisioner(kemp_config(sim), kemp_context())
    receive: asyncio.Queue[Message] = asyncio.Queue()
    send: asyncio.Queue[Message] = asyncio.Queue()
    runner = asyncio.create_task(extension.start(receive, send))
    await extension.wait_ready()

    await receive.put(add())
    added = await asyncio.wait_for(send.get(), 30)
    await receive.put(delete())
    deleted = await asyncio.wait_for(send.get(), 30)
    await extension.stop()
    await runner

    assert (added.action, added.error) == (Action.ADD, "")
    assert (deleted.action, deleted.error) == (Action.DELETE, "")
    assert await virtual_services(sim) == []

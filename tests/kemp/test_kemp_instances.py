"""Several Interlooks on one LoadMaster: nicknames carry the instance, and each touches only its own VSs."""

from __future__ import annotations

from dataclasses import replace
from typing import AsyncIterator

import pytest

from controller.messages import Action, Message, Service, Target
from extensions.kit.ownership import Mark, Ownership, Verdict
from extensions.provisioners.kemplm import KempProvisioner
from extensions.provisioners.kemplm.nicknames import MAX_NICKNAME, VALID_NICKNAME, NicknameOwnership, nickname
from tests.kemp.conftest import Sim, kemp_config, kemp_context
from tests.kemp.test_kemp_provisioner import only_vs, virtual_services

pytestmark = pytest.mark.integration

WEB = Service(name="shop/web", provider="provider.kubernetes", public_ip="10.20.0.5",
              targets=(Target("192.168.1.11", 30080),), dns_names=("web.example.com",))


def add(service: Service = WEB) -> Message:
    return Message(action=Action.ADD, service=service)


def delete(service: Service = WEB) -> Message:
    return Message(action=Action.DELETE, service=service)


@pytest.fixture
async def other(sim: Sim) -> AsyncIterator[KempProvisioner]:
    """A second Interlook (another cluster) on the same LoadMaster."""
    extension = KempProvisioner(kemp_config(sim), kemp_context("site-b"))
    await extension.setup()
    try:
        yield extension
    finally:
        await extension.teardown()


async def legacy_vs(sim: Sim, entry: str, address: str = "10.20.0.5") -> int:
    """A VS as the version before instance ids nicknamed it (``interlook:<entry>``), planted through the
    simulator's control endpoint: its API holds nicknames to the documented characters, which that form
    does not keep to."""
    async with sim._client() as client:
        answer = await client.post("/__sim/plant", json={"address": address, "port": 80,
                                                         "nickname": f"interlook:{entry}",
                                                         "real_servers": [["192.168.1.11", 30080]]})
    return int(answer.raise_for_status().json()["index"])


# -- the nickname ----------------------------------------------------------------------------

def test_nicknames_carry_instance_and_entry_readably():
    assert nickname(Mark("site-a", "shop/web")) == "interlook_site-a_shop.web"
    assert nickname(Mark("il-3f2a9c01de", "stack_web")).startswith("interlook_il-3f2a9c01de_stack-web_")


@pytest.mark.parametrize("entry", ["shop/web", "stack_web", "a/b/c", "weird name:!", "é/ü",
                                   "team-payments-production/" + "checkout-" * 8])
@pytest.mark.parametrize("instance", ["site-a", "il-3f2a9c01de", "x" * 32])
def test_nicknames_keep_to_the_documented_characters_and_our_length(entry, instance):
    text = nickname(Mark(instance, entry))
    assert VALID_NICKNAME.match(text), text
    assert len(text) <= MAX_NICKNAME
    marks = NicknameOwnership(Ownership(instance))
    assert marks.is_own(text)
    assert marks.judge(text, entry) is Verdict.OURS


def test_nicknames_never_collide_between_entries_or_instances():
    entries = ["shop/web", "shop.web", "shop_web", "shop/web_", "a/b/c", "a/b.c", "a.b/c",
               "ns/" + "x" * 60 + "1", "ns/" + "x" * 60 + "2"]
    names = [nickname(Mark(i, e)) for i in ("site-a", "site-b", "site") for e in entries]
    assert len(set(names)) == len(names)


def test_who_holds_a_vs_is_said_without_naming_its_service():
    marks = NicknameOwnership(Ownership("site-a"))
    assert marks.holder("interlook_site-b_shop.web") == "another Interlook instance (site-b)"
    assert marks.holder("interlook_site-a_shop.api") == "another Service"
    assert marks.holder("interlook:shop/api") == "another Service"
    assert marks.holder("exchange-owa") == "something other than Interlook"
    assert marks.judge("interlook:shop/web", "shop/web") is Verdict.ADOPT
    assert marks.judge("interlook:shop/web", "shop/api") is Verdict.FOREIGN
    assert marks.judge("interlook_site-b_shop.web", "shop/web") is Verdict.FOREIGN
    assert not marks.is_own("interlook:shop/web")


# -- two instances, one appliance --------------------------------------------------------------

async def test_two_instances_publish_the_same_entry_side_by_side(sim: Sim, provisioner: KempProvisioner,
                                                                  other: KempProvisioner):
    replies = [await provisioner.handle(add()), await other.handle(add(replace(WEB, public_ip="10.20.0.6")))]
    deleted = await provisioner.handle(delete())

    assert [r.error for r in replies] == ["", ""] and deleted.error == ""
    vs = await only_vs(sim)
    assert (vs.nickname, vs.address) == ("interlook_site-b_shop.web", "10.20.0.6")


async def test_an_address_held_by_another_instance_is_an_error_naming_that_instance(sim: Sim,
                                                                                    provisioner: KempProvisioner,
                                                                                    other: KempProvisioner):
    assert (await other.handle(add(replace(WEB, name="team/shop")))).error == ""
    writes = await sim.writes()

    refused = await provisioner.handle(add())
    deleted = await provisioner.handle(delete())

    assert "held by another Interlook instance (site-b)" in refused.error
    assert "team" not in refused.error
    assert deleted.error == ""
    assert await sim.writes() == writes
    assert (await only_vs(sim)).nickname == "interlook_site-b_team.shop"


async def test_a_long_entry_gets_a_shortened_nickname_the_appliance_takes(sim: Sim, provisioner: KempProvisioner):
    long = replace(WEB, name="team-payments-production/checkout-frontend-canary-blue")

    added = await provisioner.handle(add(long))
    again_writes = await sim.writes()
    again = await provisioner.handle(add(long))

    assert added.error == "" and again.error == ""
    assert await sim.writes() == again_writes
    vs = await only_vs(sim)
    assert len(vs.nickname) <= MAX_NICKNAME and vs.nickname.startswith("interlook_site-a_team-payments")
    assert (await provisioner.handle(delete(long))).error == ""
    assert await virtual_services(sim) == []


# -- virtual services from before instance ids --------------------------------------------------

async def test_a_legacy_vs_is_adopted_for_its_entry_and_renamed(sim: Sim, provisioner: KempProvisioner):
    index = await legacy_vs(sim, "shop/web")

    reply = await provisioner.handle(add(replace(WEB, targets=(Target("192.168.1.11", 30080),
                                                               Target("192.168.1.12", 30080)))))

    assert reply.error == ""
    vs = await only_vs(sim)
    assert (vs.index, vs.nickname) == (index, "interlook_site-a_shop.web")
    assert {(rs.address, rs.port) for rs in vs.real_servers} == {("192.168.1.11", 30080), ("192.168.1.12", 30080)}
    assert (await provisioner.handle(delete())).error == ""
    assert await virtual_services(sim) == []


async def test_a_legacy_vs_of_another_entry_is_never_touched(sim: Sim, provisioner: KempProvisioner):
    index = await legacy_vs(sim, "shop/web")
    writes = await sim.writes()

    refused = await provisioner.handle(add(replace(WEB, name="shop/other")))
    deleted = await provisioner.handle(delete(replace(WEB, name="shop/other")))

    assert "held by another Service" in refused.error and "shop/web" not in refused.error
    assert deleted.error == ""
    assert await sim.writes() == writes
    vs = await only_vs(sim)
    assert (vs.index, vs.nickname) == (index, "interlook:shop/web")

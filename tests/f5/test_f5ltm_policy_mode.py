"""provisioner.f5ltm in ``policy`` mode: a pool per service plus a rule in the shared, published LTM policy."""

from __future__ import annotations

from typing import Any

import pytest

from controller.messages import Action
from tests.f5.helpers import HTTP_POLICY, SSL_POLICY, mark_of, message, name_of, path_of, service
from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]

POOL = path_of()
RULE = name_of()


def rule(bigip: F5Simulator, policy: str = HTTP_POLICY, name: str = RULE) -> dict[str, Any] | None:
    return next((r for r in bigip.state.rules[policy] if r["name"] == name), None)


async def policy_mode(provisioner_factory, **overrides):
    return await provisioner_factory(update_mode="policy", **overrides)


async def test_add_creates_pool_and_rule_routing_the_host_names(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)

    reply = await f5.handle(message(Action.ADD, service(dns=("b.example.com", "a.example.com"))))

    assert reply.error == ""
    assert POOL in bigip.state.pools
    assert bigip.state.virtuals == {}  # the shared virtual server is the operator's
    added = rule(bigip)
    assert added is not None
    assert added["description"] == mark_of()
    condition = added["conditions"][0]
    assert condition["httpHost"] and condition["host"] and condition["equals"] and condition["request"]
    assert sorted(condition["values"]) == ["a.example.com", "b.example.com"]
    assert added["actions"][0]["forward"] and added["actions"][0]["pool"] == POOL
    assert bigip.state.drafts() == []
    assert bigip.state.policies[HTTP_POLICY]["status"] == "published"


async def test_tls_service_gets_an_sni_rule_in_the_ssl_policy(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)

    reply = await f5.handle(message(Action.ADD, service(tls=True)))

    assert reply.error == ""
    added = rule(bigip, SSL_POLICY)
    assert added is not None
    condition = added["conditions"][0]
    assert condition["sslExtension"] and condition["serverName"] and condition["sslClientHello"]
    assert condition["values"] == ["web.example.com"]
    assert rule(bigip, HTTP_POLICY) is None


async def test_second_identical_message_writes_nothing(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    svc = service(dns=("a.example.com", "b.example.com"), targets=(("10.0.0.1", 30080, 1), ("10.0.0.2", 30080, 2)))
    await f5.handle(message(Action.ADD, svc))
    before = bigip.stats.writes

    reply = await f5.handle(message(Action.ADD, svc))

    assert reply.error == ""
    assert bigip.stats.writes == before


async def test_dns_name_change_rewrites_the_rule_through_a_draft(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await f5.handle(message(Action.ADD, service()))

    reply = await f5.handle(message(Action.UPDATE, service(dns=("shop.example.com", "www.example.com"))))

    assert reply.error == ""
    changed = rule(bigip)
    assert changed is not None
    assert sorted(changed["conditions"][0]["values"]) == ["shop.example.com", "www.example.com"]
    assert len(bigip.state.rules[HTTP_POLICY]) == 1
    assert bigip.state.drafts() == []


async def test_target_change_touches_the_pool_only(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await f5.handle(message(Action.ADD, service()))
    generation = bigip.state.policies[HTTP_POLICY]["generation"]

    reply = await f5.handle(message(Action.UPDATE, service(targets=(("10.0.0.7", 30081, 2),))))

    assert reply.error == ""
    assert {m["name"]: m["ratio"] for m in bigip.state.members[POOL].values()} == {"10.0.0.7:30081": 2}
    assert bigip.state.policies[HTTP_POLICY]["generation"] == generation  # not republished


async def test_tls_change_moves_the_rule_to_the_other_policy(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await f5.handle(message(Action.ADD, service()))

    reply = await f5.handle(message(Action.UPDATE, service(tls=True)))

    assert reply.error == ""
    assert rule(bigip, HTTP_POLICY) is None
    assert rule(bigip, SSL_POLICY) is not None
    assert bigip.state.drafts() == []


async def test_rules_of_other_services_and_the_operator_are_kept(bigip, provisioner_factory):
    bigip.state.rules[HTTP_POLICY].append({"name": "operator-default", "ordinal": 0, "description": "",
                                           "generation": 1, "conditions": [], "actions": []})
    f5 = await policy_mode(provisioner_factory)
    await f5.handle(message(Action.ADD, service("shop/web")))
    await f5.handle(message(Action.ADD, service("shop/api", dns=("api.example.com",))))

    reply = await f5.handle(message(Action.DELETE, service("shop/web")))

    assert reply.error == ""
    assert [r["name"] for r in bigip.state.rules[HTTP_POLICY]] == ["operator-default", name_of("shop/api")]


async def test_concurrent_services_take_turns_on_the_policy_draft(bigip, provisioner_factory):
    import asyncio

    f5 = await policy_mode(provisioner_factory)
    names = [f"team/svc{i}" for i in range(6)]

    replies = await asyncio.gather(*(f5.handle(message(Action.ADD, service(n, dns=(f"{n[5:]}.example.com",))))
                                     for n in names))

    assert [r.error for r in replies] == [""] * len(names)
    assert len(bigip.state.rules[HTTP_POLICY]) == len(names)
    assert bigip.state.drafts() == []


async def test_delete_removes_rule_then_pool(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await f5.handle(message(Action.ADD, service()))

    reply = await f5.handle(message(Action.DELETE, service()))

    assert reply.error == ""
    assert rule(bigip) is None
    assert bigip.state.pools == {}
    assert bigip.state.drafts() == []


async def test_deleting_what_is_already_gone_succeeds_without_writes(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)

    reply = await f5.handle(message(Action.DELETE, service()))

    assert reply.error == ""
    assert bigip.stats.writes == 0


async def test_failed_publish_leaves_no_draft_and_heals_after(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    bigip.faults.fail_publish = True

    failed = await f5.handle(message(Action.ADD, service()))

    assert "cannot be published" in failed.error
    assert bigip.state.drafts() == []
    assert rule(bigip) is None

    bigip.faults.fail_publish = False
    healed = await f5.handle(message(Action.ADD, service()))

    assert healed.error == ""
    assert rule(bigip) is not None
    assert bigip.state.drafts() == []


async def test_failed_publish_on_delete_leaves_no_draft(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await f5.handle(message(Action.ADD, service()))
    bigip.faults.fail_publish = True

    failed = await f5.handle(message(Action.DELETE, service()))

    assert failed.error != ""
    assert bigip.state.drafts() == []
    assert rule(bigip) is not None and POOL in bigip.state.pools  # nothing half-removed

    bigip.faults.fail_publish = False
    assert (await f5.handle(message(Action.DELETE, service()))).error == ""
    assert bigip.state.pools == {}


async def test_a_draft_left_by_someone_else_is_not_touched(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    bigip.state.add_policy("/Common/Drafts/global-http", status="draft")

    reply = await f5.handle(message(Action.ADD, service()))

    assert "draft of policy /Common/global-http already exists" in reply.error
    assert bigip.state.drafts() == ["/Common/Drafts/global-http"]


async def test_a_service_without_dns_names_is_an_error_before_any_write(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)

    reply = await f5.handle(message(Action.ADD, service(dns=())))

    assert "no DNS names" in reply.error
    assert bigip.stats.writes == 0


async def test_start_refuses_a_policy_that_does_not_exist(bigip, provisioner_factory):
    with pytest.raises(RuntimeError, match="LTM policy /Common/missing does not exist"):
        await policy_mode(provisioner_factory, global_http_policy="missing")

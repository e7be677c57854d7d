"""provisioner.f5ltm in policy mode: a host name is routed for one holder only, whatever steps run before (issue 14).

Without a Consul step before the F5 step, nothing else stops a Service from
adding a rule for a host name that another team's rule already routes in
the shared policy (the BIG-IP takes both).  The provisioner checks every
rule of every policy it uses before it writes anything; the holder is named
only as the asking Service's namespace may see it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.messages import Action
from extensions.provisioners.f5ltm import F5Provisioner
from extensions.provisioners.f5ltm.client import uri_id
from tests.f5.helpers import HTTP_POLICY, SSL_POLICY, message, name_of, path_of, service, writes
from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]

HOST_EQUALS = {"httpHost": True, "host": True, "equals": True, "request": True}


def rule_names(bigip: F5Simulator, policy: str = HTTP_POLICY) -> list[str]:
    return [r["name"] for r in bigip.state.rules[policy]]


async def policy_mode(provisioner_factory: Any, **overrides: Any) -> F5Provisioner:
    return await provisioner_factory(update_mode="policy", **overrides)  # type: ignore[no-any-return]


async def publish_by_hand(f5: F5Provisioner, name: str, condition: dict[str, Any],
                          policy: str = HTTP_POLICY) -> None:
    """A rule a person adds on the appliance, the way BIG-IP wants it: draft, add, publish."""
    draft = policy.replace("/Common/", "/Common/Drafts/")
    await f5._bigip.request("PATCH", f"/mgmt/tm/ltm/policy/{uri_id(policy)}?options=create-draft", {})
    await f5._bigip.request("POST", f"/mgmt/tm/ltm/policy/{uri_id(draft)}/rules",
                            {"name": name, "conditions": [{"name": "0", **condition}], "actions": []})
    await f5._bigip.request("POST", "/mgmt/tm/ltm/policy", {"command": "publish", "name": draft})


# -- who holds it, in words its namespace may read ------------------------------------------

async def test_a_host_routed_for_another_service_of_the_namespace_is_an_error_naming_it(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    assert (await f5.handle(message(Action.ADD, service("shop/web")))).error == ""
    before = writes(bigip)

    reply = await f5.handle(message(Action.ADD, service("shop/other", public_ip="192.0.2.11")))

    assert ("host name web.example.com is already routed by a rule of shop/web in policy /Common/global-http"
            in reply.error)
    assert writes(bigip) == before
    assert path_of("shop/other") not in bigip.state.pools
    assert rule_names(bigip) == [name_of("shop/web")]


async def test_a_host_routed_for_another_namespace_is_an_error_that_does_not_name_it(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    assert (await f5.handle(message(Action.ADD, service("shop/web")))).error == ""
    before = writes(bigip)

    reply = await f5.handle(message(Action.ADD, service("team/web", dns=("www.example.com", "web.example.com"))))

    assert ("host name web.example.com is already routed by a rule of another Service in policy /Common/global-http"
            in reply.error)
    assert "shop" not in reply.error
    assert writes(bigip) == before
    assert path_of("team/web") not in bigip.state.pools
    assert rule_names(bigip) == [name_of("shop/web")]


async def test_a_host_routed_by_another_instance_is_an_error_before_the_pool_is_made(bigip, provisioner_factory):
    a = await policy_mode(provisioner_factory, instance="site-a")
    b = await policy_mode(provisioner_factory, instance="site-b")
    assert (await b.handle(message(Action.ADD, service("team/shop")))).error == ""
    before = writes(bigip)

    reply = await a.handle(message(Action.ADD, service()))

    assert "already routed by a rule of another Interlook instance (site-b)" in reply.error
    assert "team" not in reply.error
    assert writes(bigip) == before
    assert path_of(instance="site-a") not in bigip.state.pools
    assert rule_names(bigip) == [name_of("team/shop", "site-b")]


async def test_a_host_routed_by_a_hand_made_rule_is_an_error_whatever_its_case(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await publish_by_hand(f5, "www-to-legacy-farm", {**HOST_EQUALS, "values": ["Web.Example.COM"]})
    before = writes(bigip)

    reply = await f5.handle(message(Action.ADD, service()))

    assert ("host name web.example.com is already routed by a rule of something other than Interlook "
            "in policy /Common/global-http") in reply.error
    assert "www-to-legacy-farm" not in reply.error
    assert writes(bigip) == before
    assert bigip.state.pools == {}
    assert rule_names(bigip) == ["www-to-legacy-farm"]


async def test_a_host_routed_over_plain_http_is_held_over_tls_too(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    assert (await f5.handle(message(Action.ADD, service("team/web")))).error == ""

    reply = await f5.handle(message(Action.ADD, service("shop/web", tls=True, public_ip="192.0.2.11")))

    assert "web.example.com is already routed by a rule of another Service in policy /Common/global-http" in reply.error
    assert rule_names(bigip, SSL_POLICY) == []


async def test_a_hand_made_sni_rule_holds_its_host_for_plain_http_too(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    sni = {"sslExtension": True, "serverName": True, "equals": True, "sslClientHello": True,
           "values": ["web.example.com"]}
    await publish_by_hand(f5, "tls-passthrough", sni, policy=SSL_POLICY)

    reply = await f5.handle(message(Action.ADD, service()))

    assert "rule of something other than Interlook in policy /Common/global-ssl" in reply.error
    assert rule_names(bigip) == []


async def test_a_hand_made_suffix_rule_holds_every_name_under_it(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await publish_by_hand(f5, "payments-farm", {"httpHost": True, "host": True, "endsWith": True, "request": True,
                                                "values": [".payments.example.com"]})

    held = await f5.handle(message(Action.ADD, service("shop/pay", dns=("pay.PAYMENTS.example.com",))))
    free = await f5.handle(message(Action.ADD, service("shop/web", public_ip="192.0.2.11")))

    assert "host name pay.PAYMENTS.example.com is already routed by a rule of something other" in held.error
    assert free.error == ""
    assert rule_names(bigip) == ["payments-farm", name_of("shop/web")]


async def test_a_negated_host_condition_and_a_default_rule_hold_no_name(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    await publish_by_hand(f5, "not-web", {**HOST_EQUALS, "not": True, "values": ["web.example.com"]})
    await publish_by_hand(f5, "by-path", {"httpUri": True, "path": True, "startsWith": True, "request": True,
                                          "values": ["/web.example.com"]})

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    assert rule_names(bigip) == ["not-web", "by-path", name_of()]


# -- the entry's own rule -------------------------------------------------------------------

async def test_the_services_own_rule_redeployed_is_no_conflict_and_writes_nothing(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    svc = service(dns=("web.example.com", "www.example.com"))
    assert (await f5.handle(message(Action.ADD, svc))).error == ""
    before = writes(bigip)

    again = await f5.handle(message(Action.ADD, svc))
    restarted = await policy_mode(provisioner_factory)
    after_restart = await restarted.handle(message(Action.ADD, svc))

    assert again.error == "" and after_restart.error == ""
    assert writes(bigip) == before


async def test_the_services_own_rule_with_other_hosts_is_no_conflict(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    assert (await f5.handle(message(Action.ADD, service(dns=("web.example.com",))))).error == ""

    reply = await f5.handle(message(Action.UPDATE, service(dns=("web.example.com", "www.example.com"))))

    assert reply.error == ""
    assert sorted(bigip.state.rules[HTTP_POLICY][0]["conditions"][0]["values"]) == [
        "web.example.com", "www.example.com"]


# -- a conflict that goes away ----------------------------------------------------------------

async def test_the_conflict_ends_when_the_other_service_is_undeployed(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    assert (await f5.handle(message(Action.ADD, service("shop/web")))).error == ""
    refused = await f5.handle(message(Action.ADD, service("team/web", public_ip="192.0.2.11")))
    assert "already routed" in refused.error

    assert (await f5.handle(message(Action.DELETE, service("shop/web")))).error == ""
    retried = await f5.handle(message(Action.ADD, service("team/web", public_ip="192.0.2.11")))

    assert retried.error == ""
    assert rule_names(bigip) == [name_of("team/web")]


async def test_a_host_name_a_service_gave_up_is_free_for_another_at_once(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)
    assert (await f5.handle(message(Action.ADD, service("shop/web")))).error == ""
    moved = await f5.handle(message(Action.UPDATE, service("shop/web", dns=("www.example.com",))))

    taken = await f5.handle(message(Action.ADD, service("team/web", public_ip="192.0.2.11")))
    refused = await f5.handle(message(Action.ADD, service("team/www", dns=("www.example.com",),
                                                          public_ip="192.0.2.12")))

    assert moved.error == "" and taken.error == ""
    assert "host name www.example.com is already routed by a rule of another Service" in refused.error
    assert rule_names(bigip) == [name_of("shop/web"), name_of("team/web")]


async def test_the_conflict_ends_when_another_instance_undeploys_its_service(bigip, provisioner_factory):
    a = await policy_mode(provisioner_factory, instance="site-a")
    b = await policy_mode(provisioner_factory, instance="site-b")
    assert (await b.handle(message(Action.ADD, service("team/shop")))).error == ""
    assert "site-b" in (await a.handle(message(Action.ADD, service()))).error

    assert (await b.handle(message(Action.DELETE, service("team/shop")))).error == ""
    retried = await a.handle(message(Action.ADD, service()))

    assert retried.error == ""
    assert rule_names(bigip) == [name_of(instance="site-a")]


async def test_two_services_asking_one_host_at_once_only_one_gets_it(bigip, provisioner_factory):
    f5 = await policy_mode(provisioner_factory)

    replies = await asyncio.gather(f5.handle(message(Action.ADD, service("shop/web"))),
                                   f5.handle(message(Action.ADD, service("shop/api", public_ip="192.0.2.11"))))

    assert sorted(bool(r.error) for r in replies) == [False, True]
    assert len(rule_names(bigip)) == 1
    assert len(bigip.state.pools) == 1
    assert bigip.state.drafts() == []


# -- what the check costs the appliance -------------------------------------------------------

async def test_new_services_are_checked_without_listing_the_rules_until_someone_else_publishes(
        bigip, provisioner_factory):
    a = await policy_mode(provisioner_factory, instance="site-a")
    b = await policy_mode(provisioner_factory, instance="site-b")
    start = bigip.stats.listings

    for i in range(3):
        added = await a.handle(message(Action.ADD, service(f"shop/web-{i}", dns=(f"web-{i}.example.com",))))
        assert added.error == ""
    assert bigip.stats.listings == start  # the view kept by the policies' generations answered

    assert (await b.handle(message(Action.ADD, service("team/shop", dns=("shop.example.com",))))).error == ""
    listed = bigip.stats.listings
    refused = await a.handle(message(Action.ADD, service("shop/shop", dns=("shop.example.com",))))

    assert "another Interlook instance (site-b)" in refused.error
    assert bigip.stats.listings == listed + 1  # the HTTP policy changed behind a's back: its rules, once

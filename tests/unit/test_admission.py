"""Name rules and the host limit (controller/admission.py), and the core's gate that applies them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from controller.admission import RULES_STEP, Domain, NameRule, Rules
from controller.app import read_config
from controller.config import ConfigError, CoreConfig, Report, Section
from controller.core import Core
from controller.messages import Service, Target
from controller.selectors import LabelSelector, labels_of
from controller.status import DEPLOYED
from tests.helpers import eventually
from tests.unit.fakes import FakeProvider, RecordingProvisioner

TEAM_A = NameRule(domains=(Domain.parse("a.example.com"),), namespaces=("team-a",))
BY_LABEL = NameRule(domains=(Domain.parse("*.shop.example.com"),), namespace_selector=LabelSelector.parse("team=shop"))
RULES = Rules(names=(TEAM_A, BY_LABEL))
ROOT = Path(__file__).resolve().parents[2]


def service(name: str = "team-a/web", *hosts: str, namespace_labels: dict[str, str] | None = None) -> Service:
    return Service(name=name, dns_names=hosts or ("web.a.example.com",), targets=(Target("10.0.0.1", 30080),),
                   namespace_labels=labels_of(namespace_labels))


def test_a_namespace_may_publish_its_domain_and_the_names_below_it():
    assert RULES.check(service("team-a/web", "a.example.com", "www.a.example.com", "*.a.example.com")) == ""


def test_a_name_outside_the_namespace_rules_is_refused_naming_the_host_and_what_it_may_publish():
    error = RULES.check(service("team-a/web", "www.a.example.com", "shop.example.com"))
    assert error == ("host name shop.example.com is not allowed here: namespace team-a may publish names under "
                     "a.example.com (core.rules.names)")


def test_a_suffix_that_is_not_a_whole_label_is_not_below_the_domain():
    assert "evila.example.com" in RULES.check(service("team-a/web", "evila.example.com"))


def test_a_wildcard_above_the_domain_is_refused():
    assert RULES.check(service("team-a/web", "*.example.com"))


def test_a_rule_by_namespace_selector_follows_the_namespace_labels():
    assert RULES.check(service("shop/web", "cart.shop.example.com", namespace_labels={"team": "shop"})) == ""
    error = RULES.check(service("shop/web", "cart.shop.example.com", namespace_labels={"team": "other"}))
    assert error.endswith("namespace shop may publish no names (core.rules.names)")


def test_a_star_domain_allows_only_the_names_below_it():
    assert "shop.example.com" in RULES.check(service("shop/web", "shop.example.com",
                                                     namespace_labels={"team": "shop"}))


def test_the_error_never_names_another_namespace_rules():
    error = RULES.check(service("team-a/web", "cart.shop.example.com"))
    assert "shop.example.com (core" not in error and "team=shop" not in error and "shop" not in error.split(":")[1]


def test_several_refused_names_are_counted():
    assert "host name x.example.com (and 2 more) is not allowed" in RULES.check(
        service("team-a/web", "x.example.com", "y.example.com", "ok.a.example.com", "z.example.com"))


def test_a_rule_that_selects_no_namespace_applies_to_every_service_swarm_included():
    everyone = Rules(names=(NameRule(domains=(Domain.parse("example.org"),)),))
    assert everyone.check(service("swarm-web", "web.example.org")) == ""
    assert everyone.check(service("swarm-web", "web.example.com")).endswith(
        "this service may publish names under example.org (core.rules.names)")


def test_no_rule_configured_allows_any_name():
    assert Rules().check(service("team-b/web", "anything.example.net")) == ""


def test_more_host_names_than_the_limit_is_refused_before_the_names_are_looked_at():
    hosts = tuple(f"h{i}.a.example.com" for i in range(21))
    assert RULES.check(service("team-a/web", *hosts)) == (
        "21 host names, more than the limit of 20 (core.rules.maxHostsPerService)")
    assert RULES.check(service("team-a/web", *hosts[:20])) == ""
    assert Rules(max_hosts_per_service=0).check(service("team-a/web", *hosts)) == ""


def rules_of(body: str) -> tuple[Rules, list[str]]:
    import yaml

    report = Report()
    rules = Rules.from_section(Section(yaml.safe_load(textwrap.dedent(body)), "core.rules", report))
    return rules, [str(p) for p in report.errors]


def test_rules_are_read_from_the_config_with_both_selector_forms():
    rules, errors = rules_of("""
        maxHostsPerService: 5
        names:
          - namespaces: [team-a]
            domains: [a.example.com]
          - namespaceSelector: {matchLabels: {team: shop}}
            domains: ["*.shop.example.com", Shop2.Example.com.]
    """)
    assert errors == []
    assert rules.max_hosts_per_service == 5
    assert rules.names[1].domains == (Domain("shop.example.com", only_below=True), Domain("shop2.example.com"))
    assert rules.check(service("x/web", "a.shop.example.com", namespace_labels={"team": "shop"})) == ""


@pytest.mark.parametrize("body, expected", [
    ("names: {namespaces: [a]}", "core.rules.names: must be a list, got dict"),
    ("names: [3]", "core.rules.names[0]: must be a mapping, got int"),
    ("names: [{namespaces: [a]}]", "core.rules.names[0].domains: lists no domain"),
    ("names: [{namespaces: [a], domains: []}]", "core.rules.names[0].domains: lists no domain"),
    ("names: [{domains: ['a..example.com']}]", "core.rules.names[0].domains: 'a..example.com' is not a domain"),
    ("names: [{domains: [a.com], namespaceSelector: 'team in (a'}]",
     "core.rules.names[0].namespaceSelector: not a valid label selector: unbalanced '('"),
    ("names: [{domains: [a.com], namespaceSelector: {matchLabels: {team: 'a b'}}}]",
     "core.rules.names[0].namespaceSelector: not a valid label selector: 'a b' is not a valid label value"),
    ("names: [{domains: [a.com], namespaces: [Team_A]}]", "core.rules.names[0].namespaces: 'Team_A' is not"),
    ("maxHostsPerService: -1", "core.rules.maxHostsPerService: must be at least 0, got -1"),
    ("maxHostsPerService: many", "core.rules.maxHostsPerService: must be an integer"),
])
def test_bad_rules_are_config_errors_with_their_key_path(body, expected):
    _, errors = rules_of(body)
    assert any(e.startswith(expected) for e in errors), errors


def test_check_config_reports_bad_rules_with_their_key_paths_and_exits_2(tmp_path: Path):
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent("""
        core:
          workflowSteps: provider.kubernetes,provisioner.ipalloc
          rules:
            maxHostsPerService: -3
            names:
              - {namespaces: [a], namespaceSelector: '=x', domains: [a.com]}
              - {namespaces: [b], domains: []}
        ipam: {ipalloc: {network_cidr: 10.0.0.0/24}}
    """))
    result = subprocess.run([sys.executable, "-m", "controller", "check-config", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: core.rules.maxHostsPerService: must be at least 0, got -3",
        "error: core.rules.names[0].namespaceSelector: not a valid label selector: cannot read '=x' in selector '=x'",
        "error: core.rules.names[1].domains: lists no domain: a rule allows names under at least one domain",
    ]
    with pytest.raises(ConfigError):
        read_config(str(path))


def test_check_config_shows_the_rules_and_the_pools_a_valid_config_sets(tmp_path: Path):
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent("""
        core:
          workflowSteps: provider.kubernetes,provisioner.ipalloc
          rules:
            maxHostsPerService: 5
            names:
              - {namespaces: [team-a], domains: [a.example.com]}
              - {namespaceSelector: {matchLabels: {team: b}}, domains: ["*.b.example.com"]}
        ipam:
          ipalloc:
            maxAddressesPerNamespace: 0
            pools:
              - {name: v6, network_cidr: "2001:db8::/120", serviceSelector: "tier in (web,api)"}
              - {name: a, network_cidr: 10.1.0.0/29, namespaces: [team-a], priority: 1}
    """))
    result = subprocess.run([sys.executable, "-m", "controller", "check-config", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shown = result.stdout.splitlines()
    assert shown[2:6] == [
        "rules:",
        "  host names per Service: 5",
        "  names: namespaces team-a may publish a.example.com",
        "  names: namespaces selected by team=b may publish *.b.example.com",
    ]
    assert shown[-3:] == [  # in the order they are tried: priority first
        "       pool a: 10.1.0.1-10.1.0.6, priority 1; admits namespaces team-a",
        "       pool v6: 2001:db8::1-2001:db8::ff; admits serviceSelector tier in (web,api)",
        "       addresses per namespace: no limit",
    ]


# ---------------------------------------------------------------- the core's gate


@pytest.fixture
async def gated(tmp_path):
    provider, pool = FakeProvider(), RecordingProvisioner("provisioner.ipalloc")
    config = CoreConfig(workflow_steps=("provider.fake", "provisioner.ipalloc"), rules=RULES,
                        workflow_entries_file=str(tmp_path / "entries.json"))
    core = Core(config, {"provider.fake": provider, "provisioner.ipalloc": pool})
    await core.start()
    yield core, provider, pool
    await core.stop()


async def test_a_refused_service_is_an_error_at_the_rules_step_and_no_step_is_sent_anything(gated):
    core, provider, pool = gated
    await provider.publish(service("team-a/web", "www.b.example.com"))
    await eventually(lambda: "team-a/web" in core.entries)
    entry = core.entries["team-a/web"]
    assert (entry.error_step, entry.state, entry.next_retry) == (RULES_STEP, "undeployed", 0.0)
    assert "www.b.example.com" in entry.error
    core.housekeep()  # never retried by the clock: it waits for a changed Service
    assert pool.received == []


async def test_a_namespace_label_change_turns_a_refused_service_into_a_deployed_one(gated):
    core, provider, pool = gated
    refused = service("shop/web", "cart.shop.example.com", namespace_labels={"team": "other"})
    await provider.publish(refused)
    await eventually(lambda: core.entries.get("shop/web") is not None and core.entries["shop/web"].error)
    await provider.publish(replace(refused, namespace_labels=labels_of({"team": "shop"})))
    await eventually(lambda: core.entries["shop/web"].state == DEPLOYED)
    assert core.entries["shop/web"].error == ""
    assert [m.service.name for m in pool.received] == ["shop/web"]


async def test_a_refused_edit_keeps_what_the_valid_version_published(gated):
    core, provider, pool = gated
    await provider.publish(service("team-a/web", "www.a.example.com"))
    await eventually(lambda: getattr(core.entries.get("team-a/web"), "state", "") == DEPLOYED)
    await provider.publish(service("team-a/web", "www.b.example.com"))
    await eventually(lambda: core.entries["team-a/web"].error_step == RULES_STEP)
    assert core.entries["team-a/web"].state == DEPLOYED
    assert core.entries["team-a/web"].service.dns_names == ("www.a.example.com",)
    assert len(pool.received) == 1


async def test_a_refusal_that_arrives_while_the_service_is_walked_back_is_still_shown_after(gated):
    # The Service is first seen without ready endpoints (a delete walks every step back), and its
    # endpoints come while that round is in flight: the refusal must outlast the round's success.
    core, provider, pool = gated
    pool.gate = asyncio.Event()
    await provider.withdraw("team-a/web")
    await eventually(lambda: len(pool.received) == 1)
    await provider.publish(service("team-a/web", "www.b.example.com"))
    await eventually(lambda: core.entries["team-a/web"].error_step == RULES_STEP)
    pool.gate.set()
    await eventually(lambda: not core.entries["team-a/web"].work_in_progress)
    entry = core.entries["team-a/web"]
    assert (entry.state, entry.expected_state, entry.error_step) == ("undeployed", DEPLOYED, RULES_STEP)
    assert "www.b.example.com" in entry.error
    core.housekeep()
    assert [m.action.value for m in pool.received] == ["delete"]


async def test_a_refused_edit_during_a_deploy_round_is_shown_once_the_round_ends(gated):
    core, provider, pool = gated
    pool.gate = asyncio.Event()
    await provider.publish(service("team-a/web", "www.a.example.com"))
    await eventually(lambda: len(pool.received) == 1)
    await provider.publish(service("team-a/web", "www.b.example.com"))
    await eventually(lambda: core.entries["team-a/web"].error_step == RULES_STEP)
    pool.gate.set()
    await eventually(lambda: core.entries["team-a/web"].state == DEPLOYED)
    entry = core.entries["team-a/web"]
    assert entry.error_step == RULES_STEP and "www.b.example.com" in entry.error
    assert entry.service.dns_names == ("www.a.example.com",)  # what was published is the valid version's

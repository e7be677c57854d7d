"""Several Interlooks side by side: the instance id, and a standby that runs nothing until active."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from controller.__main__ import check_config
from controller.app import App
from controller.config import Config, ConfigError, CoreConfig, parse_config
from controller.core import Core
from controller.entries import DEPLOYED
from controller.instance import ClusterIdentity, Identity, derive_instance_id, instance_id_problem
from controller.messages import Service, Target
from extensions import resolve
from extensions.kit.ownership import Mark, Ownership, Verdict, parse_text
from tests.helpers import eventually
from tests.unit.fakes import FakeProvider, RecordingProvisioner

STEPS = ("provider.fake", "provisioner.dns")


def test_replicas_share_the_derived_id_clusters_and_scopes_do_not():
    one = ClusterIdentity("kubernetes", "uid-cluster-1", "namespaces=;selector=;prefix=interlook.io")
    replica = ClusterIdentity("kubernetes", "uid-cluster-1", "namespaces=;selector=;prefix=interlook.io")
    other_cluster = ClusterIdentity("kubernetes", "uid-cluster-2", "namespaces=;selector=;prefix=interlook.io")
    other_team = ClusterIdentity("kubernetes", "uid-cluster-1", "namespaces=team-b;selector=;prefix=interlook.io")
    ids = {derive_instance_id([i]) for i in (one, other_cluster, other_team)}
    assert derive_instance_id([one]) == derive_instance_id([replica])
    assert len(ids) == 3
    assert all(not instance_id_problem(i) for i in ids)


def test_a_configured_id_wins_and_says_where_it_came_from():
    identity = Identity(configured="shop-prod")
    assert identity.resolve([ClusterIdentity("swarm", "abc", "")]) == "shop-prod"
    assert identity.source == "core.instanceId"


@pytest.mark.parametrize("bad", ["Shop", "-shop", "shop-", "a" * 33, "shop_prod", "shop:prod"])
def test_a_bad_instance_id_is_a_config_error_with_its_key_path(bad):
    with pytest.raises(ConfigError) as error:
        parse_config({"core": {"workflowSteps": "provider.swarm", "instanceId": bad}}, resolve)
    assert [p.path for p in error.value.problems] == ["core.instanceId"]


def test_check_config_shows_the_instance_id(tmp_path: Path, capsys):
    path = tmp_path / "config.yml"
    path.write_text("core:\n  workflowSteps: provider.swarm\n  instanceId: team-a\n")
    assert check_config(str(path)) == 0
    assert "instance: team-a (core.instanceId)" in capsys.readouterr().out
    path.write_text("core:\n  workflowSteps: provider.swarm\n")
    assert check_config(str(path)) == 0
    assert "instance: derived at start-up" in capsys.readouterr().out


def test_marks_round_trip_and_the_legacy_form_is_recognised():
    assert parse_text(Mark("il-a1", "shop/web").text() + " (auto generated - do not edit)") == Mark("il-a1", "shop/web")
    assert parse_text("interlook:shop/web (auto generated)") == Mark("", "shop/web")
    assert parse_text("made by hand") is None
    assert parse_text("interlook:") is None


def test_ownership_rules():
    rules = Ownership("il-a")
    assert rules.judge(Mark("il-a", "ns/web"), "ns/web") is Verdict.OURS
    assert rules.judge(Mark("", "ns/web"), "ns/web") is Verdict.ADOPT
    assert rules.judge(Mark("", "ns/web"), "ns/other") is Verdict.FOREIGN
    assert rules.judge(Mark("il-b", "ns/web"), "ns/web") is Verdict.FOREIGN
    assert rules.judge(None, "ns/web") is Verdict.FOREIGN
    assert rules.is_own(Mark("il-a", "x/y")) and not rules.is_own(Mark("", "x/y"))
    assert rules.holder(Mark("il-b", "secret/svc")) == "another Interlook instance (il-b)"
    assert rules.holder(Mark("il-a", "secret/svc")) == "another Service"
    assert rules.holder(None) == "something other than Interlook"


def _app(tmp_path: Path) -> tuple[App, FakeProvider, RecordingProvisioner]:
    provider = FakeProvider()
    dns = RecordingProvisioner("provisioner.dns")
    core_config = CoreConfig(workflow_steps=STEPS, listen_port=0, listen_address="127.0.0.1",
                             housekeeper_interval=0.05, activity_interval=0.05, retry_backoff_base=0.05)
    extensions = {"provider.fake": provider, "provisioner.dns": dns}
    identity = Identity(configured="il-test")
    core = Core(core_config, extensions)
    core.identity = identity
    app = App(config=Config(core=core_config, extensions={}), core=core, extensions=extensions,
              identity=identity)
    return app, provider, dns


async def test_a_standby_runs_nothing_and_says_so_until_it_is_activated(tmp_path: Path):
    app, provider, dns = _app(tmp_path)
    await app.start(active=False)
    assert app.api is not None
    base = f"http://127.0.0.1:{app.api.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as r:
                assert (r.status, await r.json()) == (200, {"status": "standby"})
            async with http.get(f"{base}/version") as r:
                version = await r.json()
            assert (version["instance"], version["role"]) == ("il-test", "standby")
            assert not dns.received and not app.core.started

            await app.activate()
            await provider.publish(Service(name="ns/web", targets=(Target("10.0.0.1", 30000),),
                                           dns_names=("web.example.com",)))
            await eventually(lambda: getattr(app.core.entries.get("ns/web"), "state", "") == DEPLOYED)
            async with http.get(f"{base}/version") as r:
                assert (await r.json())["role"] == "active"

            # Pre-empted: everything stops at once, the entries are forgotten.
            dns.hang = True
            await provider.publish(Service(name="ns/other", dns_names=("other.example.com",)))
            await eventually(lambda: bool(dns.received) and dns.received[-1].service.name == "ns/other")
            await app.deactivate()
            assert not app.core.started and app.core.entries == {}
            async with http.get(f"{base}/health") as r:
                assert (await r.json()) == {"status": "standby"}

            # Active again: a fresh start, fed again by its provider.
            dns.hang = False
            seen = len(dns.received)
            await app.activate()
            await provider.publish(Service(name="ns/web", targets=(Target("10.0.0.1", 30000),),
                                           dns_names=("web.example.com",)))
            await eventually(lambda: getattr(app.core.entries.get("ns/web"), "state", "") == DEPLOYED)
            assert len(dns.received) == seen + 1
    finally:
        await app.stop()

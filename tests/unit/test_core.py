"""Workflow semantics of the core (DESIGN.md), with recording test doubles."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest

from controller.config import CoreConfig
from controller.core import Core
from controller.extension import BaseExtension, ExtensionContext, ExtensionStartError
from controller.messages import Action, Message, Service, Target
from controller.status import DEPLOYED, UNDEPLOYED, EntryStatus
from tests.helpers import eventually
from tests.unit.fakes import FakeProvider, RecordingIPAM, RecordingProvisioner

STEPS = ("provider.fake", "provisioner.ipalloc", "provisioner.dns", "provisioner.lb")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def svc(name: str = "ns/web", hosts: tuple[str, ...] = ("web.example.com",), port: int = 30080,
        nodes: tuple[str, ...] = ("10.0.0.1",)) -> Service:
    return Service(name=name, provider="provider.fake", targets=tuple(Target(n, port) for n in nodes),
                   dns_names=hosts)


@pytest.fixture
def journal() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
async def world(journal, tmp_path):
    provider = FakeProvider()
    ipam = RecordingIPAM("provisioner.ipalloc", journal)
    ipam.transform = lambda m: m.reply(service=replace(m.service, public_ip="" if m.action == Action.DELETE
                                                       else "192.0.2.10"))
    dns = RecordingProvisioner("provisioner.dns", journal)
    lb = RecordingProvisioner("provisioner.lb", journal)
    clock = Clock()
    config = CoreConfig(workflow_steps=STEPS, workflow_entries_file=str(tmp_path / "entries.json"),
                        service_wip_timeout=30, service_max_last_updated=60, clean_undeployed_after=120,
                        retry_backoff_base=2, retry_backoff_max=16)
    core = Core(config, {"provider.fake": provider, "provisioner.ipalloc": ipam,
                         "provisioner.dns": dns, "provisioner.lb": lb}, clock=clock)
    await core.start()
    yield core, provider, {"ipam": ipam, "dns": dns, "lb": lb}, clock
    await core.stop()


async def settled(core: Core, name: str, state: str) -> None:
    await eventually(lambda: (e := core.entries.get(name)) is not None and e.state == state
                        and not e.work_in_progress)


async def test_add_walks_provisioners_forward_and_ends_deployed(world, journal):
    core, provider, _, _ = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    assert journal == [("provisioner.ipalloc", "add", "ns/web"), ("provisioner.dns", "add", "ns/web"),
                       ("provisioner.lb", "add", "ns/web")]
    assert core.entries["ns/web"].service.public_ip == "192.0.2.10"


async def run_one_service(steps: dict[str, object]) -> Core:
    """A core over ``steps`` (step name -> extension) that has deployed one service; stopped again."""
    core = Core(CoreConfig(workflow_steps=tuple(steps)), steps)  # type: ignore[arg-type]
    await core.start()
    try:
        provider = next(e for e in steps.values() if isinstance(e, FakeProvider))
        await provider.publish(svc())
        await settled(core, "ns/web", DEPLOYED)
    finally:
        await core.stop()
    return core


def hands_out_an_ip(message: Message) -> Message:
    return message.reply(service=replace(message.service, public_ip="192.0.2.77"))


async def test_a_step_that_declares_it_sets_the_public_ip_keeps_it_whatever_its_name():
    pool = RecordingIPAM("provisioner.netbox")
    pool.transform = hands_out_an_ip
    core = await run_one_service({"provider.fake": FakeProvider(), "provisioner.netbox": pool})
    assert core.entries["ns/web"].service.public_ip == "192.0.2.77"


async def test_a_step_that_does_not_declare_it_cannot_change_the_public_ip_even_named_like_an_ip_pool():
    impostor = RecordingProvisioner("provisioner.ipalloc")
    impostor.transform = hands_out_an_ip
    core = await run_one_service({"provider.fake": FakeProvider(), "provisioner.ipalloc": impostor})
    assert core.entries["ns/web"].service.public_ip == ""


def test_the_roles_of_steps_come_from_their_declared_kind_not_their_names():
    source, step = FakeProvider("source.fake"), RecordingProvisioner("provider.looks-like-one")
    core = Core(CoreConfig(workflow_steps=("source.fake", "provider.looks-like-one")),
                {"source.fake": source, "provider.looks-like-one": step})
    assert core.providers == ("source.fake",)
    assert core.provisioners == ("provider.looks-like-one",)


def test_an_extension_that_declares_no_kind_is_refused():
    class Undeclared(BaseExtension):
        pass

    with pytest.raises(ValueError, match="declare no kind"):
        Core(CoreConfig(workflow_steps=("provider.fake", "provisioner.x")),
             {"provider.fake": FakeProvider(), "provisioner.x": Undeclared(ExtensionContext("provisioner.x"))})


async def test_delete_walks_steps_backwards(world, journal):
    core, provider, _, _ = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    journal.clear()
    await provider.withdraw("ns/web")
    await settled(core, "ns/web", UNDEPLOYED)
    assert journal == [("provisioner.lb", "delete", "ns/web"), ("provisioner.dns", "delete", "ns/web"),
                       ("provisioner.ipalloc", "delete", "ns/web")]
    assert core.entries["ns/web"].service.public_ip == ""


async def test_delete_during_a_step_undoes_every_step_from_the_last(world, journal):
    # A later step may hold what an earlier round (or process) put there.
    core, provider, steps, _ = world
    gate = steps["dns"].gate = asyncio.Event()
    await provider.publish(svc())
    await eventually(lambda: getattr(core.entries.get("ns/web"), "state", "") == "provisioner.dns")
    await provider.withdraw("ns/web")
    await eventually(lambda: core.entries["ns/web"].expected_state == UNDEPLOYED)
    gate.set()
    await settled(core, "ns/web", UNDEPLOYED)
    deletes = [j for j in journal if j[1] == "delete"]
    assert deletes == [("provisioner.lb", "delete", "ns/web"), ("provisioner.dns", "delete", "ns/web"),
                       ("provisioner.ipalloc", "delete", "ns/web")]
    assert ("provisioner.lb", "add", "ns/web") not in journal


async def test_delete_after_a_rerun_undoes_steps_the_previous_round_reached(world, journal):
    core, provider, steps, _ = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    gate = steps["ipam"].gate = asyncio.Event()
    await provider.publish(svc(nodes=("10.0.0.9",)))  # re-run: held at the first step
    await eventually(lambda: core.entries["ns/web"].state == "provisioner.ipalloc")
    journal.clear()
    await provider.withdraw("ns/web")
    await eventually(lambda: core.entries["ns/web"].expected_state == UNDEPLOYED)
    gate.set()
    await settled(core, "ns/web", UNDEPLOYED)
    assert [j for j in journal if j[1] == "delete"][0] == ("provisioner.lb", "delete", "ns/web")


async def test_providers_are_never_sent_workflow_messages(world):
    core, provider, _, _ = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    await provider.withdraw("ns/web")
    await settled(core, "ns/web", UNDEPLOYED)
    assert provider.refreshes == []


async def test_unchanged_add_only_refreshes(world, journal):
    core, provider, _, clock = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    before = len(journal)
    clock.now += 30
    await provider.publish(svc())
    await eventually(lambda: core.entries["ns/web"].last_update == clock.now)
    await asyncio.sleep(0.05)
    assert len(journal) == before
    assert core.entries["ns/web"].state == DEPLOYED


async def test_changed_add_reruns_the_workflow(world, journal):
    core, provider, _, _ = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    journal.clear()
    await provider.publish(svc(nodes=("10.0.0.1", "10.0.0.2")))
    await eventually(lambda: len(journal) == 3)
    await settled(core, "ns/web", DEPLOYED)
    assert [j[0] for j in journal] == ["provisioner.ipalloc", "provisioner.dns", "provisioner.lb"]
    assert len(core.entries["ns/web"].service.targets) == 2
    assert core.entries["ns/web"].service.public_ip == "192.0.2.10"


async def test_only_providers_change_targets_and_only_ipam_changes_ip(world):
    core, provider, steps, _ = world
    steps["dns"].transform = lambda m: m.reply(service=replace(m.service, public_ip="6.6.6.6", targets=(),
                                                                dns_names=("evil.example",)))
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    service = core.entries["ns/web"].service
    assert service.public_ip == "192.0.2.10"
    assert service.dns_names == ("web.example.com",)
    assert service.targets == (Target("10.0.0.1", 30080, 1),)


async def test_error_stops_the_flow_and_is_retried_with_capped_backoff(world, journal):
    core, provider, steps, clock = world
    steps["dns"].fail_with = "consul unreachable"
    await provider.publish(svc())
    await eventually(lambda: getattr(core.entries.get("ns/web"), "error", "") != "")
    entry = core.entries["ns/web"]
    assert entry.state == "provisioner.dns" and entry.state != DEPLOYED
    assert ("provisioner.lb", "add", "ns/web") not in journal
    delays = []
    for attempt in range(1, 6):
        delays.append(core.entries["ns/web"].next_retry - clock.now)
        clock.now = core.entries["ns/web"].next_retry + 0.001
        core.housekeep()
        await eventually(lambda a=attempt: core.entries["ns/web"].attempts == a + 1)
    assert delays == [2, 4, 8, 16, 16]
    steps["dns"].fail_with = ""
    clock.now = core.entries["ns/web"].next_retry + 0.001
    core.housekeep()
    await settled(core, "ns/web", DEPLOYED)
    assert core.entries["ns/web"].error == ""


async def test_when_a_step_works_again_its_failed_entries_retry_at_once_but_only_once(world):
    core, provider, steps, clock = world
    steps["dns"].fail_with = "consul unreachable"
    for name in ("ns/a", "ns/b"):
        await provider.publish(svc(name))
    await eventually(lambda: all(getattr(core.entries.get(n), "error", "") for n in ("ns/a", "ns/b")))
    for _ in range(3):  # the outage lasts: backoffs grow to 16 s
        clock.now = max(core.entries[n].next_retry for n in ("ns/a", "ns/b")) + 0.001
        attempts = {n: core.entries[n].attempts for n in ("ns/a", "ns/b")}
        core.housekeep()
        await eventually(lambda a=attempts: all(core.entries[n].attempts > a[n] for n in a))
    assert all(core.entries[n].next_retry - clock.now >= 8 for n in ("ns/a", "ns/b"))

    # Consul is back, except for one name it keeps refusing (a conflict of its own).
    steps["dns"].fail_with = ""
    steps["dns"].transform = lambda m: m.failed("name taken") if m.service.name == "ns/b" else m.reply()
    await provider.publish(svc("ns/new"))
    await settled(core, "ns/new", DEPLOYED)
    assert core.entries["ns/a"].next_retry <= clock.now and core.entries["ns/b"].next_retry <= clock.now
    core.housekeep()
    await settled(core, "ns/a", DEPLOYED)
    await eventually(lambda: core.entries["ns/b"].error == "name taken")

    # ns/b failed for its own reason: another success does not bring it forward again.
    await provider.publish(svc("ns/other"))
    await settled(core, "ns/other", DEPLOYED)
    assert core.entries["ns/b"].next_retry > clock.now


async def test_wip_timeout_becomes_an_error_never_deployed(world):
    core, provider, steps, clock = world
    steps["lb"].hang = True
    await provider.publish(svc())
    await eventually(lambda: getattr(core.entries.get("ns/web"), "state", "") == "provisioner.lb")
    clock.now += 31
    core.housekeep()
    entry = core.entries["ns/web"]
    assert entry.error.startswith("step provisioner.lb did not answer")
    assert entry.state == "provisioner.lb" and not entry.work_in_progress


async def test_late_reply_after_timeout_is_ignored(world):
    core, provider, steps, clock = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    entry = core.entries["ns/web"]
    stale = Message(Action.ADD, entry.service, sender="provisioner.lb", extra={"generation": "0"})
    core.handle_message(stale)
    assert core.entries["ns/web"].state == DEPLOYED


async def test_stale_deployed_entry_gets_refresh_from_its_own_provider(world):
    core, provider, _, clock = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    clock.now += 61
    core.housekeep()
    await eventually(lambda: provider.refreshes == ["ns/web"])
    await eventually(lambda: core.entries["ns/web"].last_update == clock.now)
    assert core.entries["ns/web"].state == DEPLOYED


async def test_refresh_of_a_gone_service_undeploys_it(world, journal):
    core, provider, _, clock = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    del provider.services["ns/web"]
    clock.now += 61
    core.housekeep()
    await settled(core, "ns/web", UNDEPLOYED)
    assert ("provisioner.ipalloc", "delete", "ns/web") in journal


async def test_closed_undeployed_entries_are_cleaned_up(world):
    core, provider, _, clock = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    await provider.withdraw("ns/web")
    await settled(core, "ns/web", UNDEPLOYED)
    clock.now += 121
    core.housekeep()
    assert "ns/web" not in core.entries


async def test_entries_are_persisted_on_every_change(world, tmp_path):
    core, provider, _, _ = world
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    path = Path(core.config.workflow_entries_file)
    await eventually(lambda: path.exists() and json.loads(path.read_text()).get("ns/web", {}).get("state")
                        == DEPLOYED)
    saved = json.loads(path.read_text())["ns/web"]
    assert saved["service"]["public_ip"] == "192.0.2.10"
    assert saved["service"]["dns_name"] == ["web.example.com"]
    assert not list(tmp_path.glob(".entries.json.*"))  # no temp file left behind


async def test_entries_are_reloaded_at_start(tmp_path, journal):
    path = tmp_path / "entries.json"
    config = CoreConfig(workflow_steps=("provider.fake", "provisioner.ipalloc"), workflow_entries_file=str(path))

    def build() -> tuple[Core, FakeProvider]:
        provider = FakeProvider()
        ipam = RecordingIPAM("provisioner.ipalloc", journal)
        return Core(config, {"provider.fake": provider, "provisioner.ipalloc": ipam}), provider

    core, provider = build()
    await core.start()
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    await core.stop()
    again, _ = build()
    await again.start()
    try:
        assert again.entries["ns/web"].state == DEPLOYED
        assert again.entries["ns/web"].service.dns_names == ("web.example.com",)
    finally:
        await again.stop()


async def test_an_extension_that_fails_to_start_fails_startup_with_its_name(tmp_path):
    provider = FakeProvider()
    broken = RecordingProvisioner("provisioner.dns")
    broken.refuse_start = "connection refused to 127.0.0.1:8500"
    core = Core(CoreConfig(workflow_steps=("provider.fake", "provisioner.dns")),
                {"provider.fake": provider, "provisioner.dns": broken})
    with pytest.raises(ExtensionStartError) as info:
        await core.start()
    assert info.value.name == "provisioner.dns"
    assert "connection refused to 127.0.0.1:8500" in str(info.value)


class Crashing(RecordingProvisioner):
    async def run_background(self) -> None:
        await asyncio.sleep(0.05)
        if not getattr(self, "crashed", False):
            self.crashed = True
            raise RuntimeError("backend went away")
        await asyncio.Event().wait()


async def test_a_crashed_extension_is_restarted_and_inflight_entries_get_the_error():
    provider = FakeProvider()
    crashing = Crashing("provisioner.dns")
    crashing.hang = True
    core = Core(CoreConfig(workflow_steps=("provider.fake", "provisioner.dns"), retry_backoff_base=0.05),
                {"provider.fake": provider, "provisioner.dns": crashing})
    await core.start()
    try:
        await provider.publish(svc())
        await eventually(lambda: "crashed" in getattr(core.entries.get("ns/web"), "error", ""))
        assert "backend went away" in core.entries["ns/web"].error
        await eventually(lambda: core.extension_status()["provisioner.dns"]["status"] == "running")
        assert core.extension_status()["provisioner.dns"]["restarts"] == 1
    finally:
        await core.stop()


async def test_status_sinks_see_every_change(world):
    core, provider, _, _ = world
    seen: list[tuple[str, bool]] = []
    core.add_status_sink(lambda e: seen.append((e.state, e.work_in_progress)))
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    assert seen[-1] == (DEPLOYED, False)
    assert ("provisioner.ipalloc", True) in seen and ("provisioner.lb", True) in seen


async def test_status_sinks_get_a_frozen_copy_not_the_core_s_entry(world):
    core, provider, _, _ = world
    seen: list[EntryStatus] = []
    core.add_status_sink(seen.append)
    await provider.publish(svc())
    await settled(core, "ns/web", DEPLOYED)
    last = seen[-1]
    assert (last.name, last.state, last.service.public_ip) == ("ns/web", DEPLOYED, "192.0.2.10")
    with pytest.raises(dataclasses.FrozenInstanceError):
        last.state = UNDEPLOYED  # type: ignore[misc]
    assert core.entries["ns/web"].state == DEPLOYED


async def test_a_provider_error_is_kept_on_the_entry_and_nothing_is_provisioned(world, journal):
    core, provider, _, _ = world
    await provider.send_queue.put(Message(Action.ADD, Service(name="ns/bad"), error="interlook.io/port: 'abc'"))
    await eventually(lambda: "ns/bad" in core.entries)
    assert core.entries["ns/bad"].error == "interlook.io/port: 'abc'"
    assert journal == []
    await provider.publish(svc(name="ns/bad"))
    await settled(core, "ns/bad", DEPLOYED)
    assert core.entries["ns/bad"].error == ""


async def test_an_entry_that_only_ever_had_a_provider_error_is_undone_and_cleaned_on_delete(world, journal):
    # Its input may have turned bad after an earlier process deployed it: undo every step.
    core, provider, _, clock = world
    await provider.send_queue.put(Message(Action.ADD, Service(name="ns/bad"), error="bad label"))
    await eventually(lambda: "ns/bad" in core.entries)
    await provider.send_queue.put(Message(Action.DELETE, Service(name="ns/bad")))
    await eventually(lambda: core.entries["ns/bad"].close_time > 0)
    entry = core.entries["ns/bad"]
    assert entry.close_time and entry.error == ""
    assert [j[0] for j in journal] == ["provisioner.lb", "provisioner.dns", "provisioner.ipalloc"]
    clock.now += 121
    core.housekeep()
    assert "ns/bad" not in core.entries


async def test_delete_of_an_unknown_service_walks_every_step_back(world, journal):
    core, provider, _, _ = world
    await provider.send_queue.put(Message(Action.DELETE, Service(name="ns/gone", public_ip="192.0.2.7")))
    await settled(core, "ns/gone", UNDEPLOYED)
    assert journal == [("provisioner.lb", "delete", "ns/gone"), ("provisioner.dns", "delete", "ns/gone"),
                       ("provisioner.ipalloc", "delete", "ns/gone")]


async def test_a_provider_error_waits_for_the_provider_and_is_saved(world, journal):
    core, provider, _, clock = world
    await provider.send_queue.put(Message(Action.ADD, Service(name="ns/bad"), error="interlook.port: 'http'"))
    await eventually(lambda: "ns/bad" in core.entries)
    saved = core.entries["ns/bad"].to_dict()
    assert saved["error_step"] == "provider.fake"
    assert saved["next_retry"] == "0001-01-01T00:00:00Z"  # no retry scheduled: it waits for the provider
    path = Path(core.config.workflow_entries_file)
    await eventually(lambda: path.exists() and "ns/bad" in json.loads(path.read_text()))
    clock.now += 10**6
    core.housekeep()
    assert journal == []  # never retried by the clock
    assert core.health_problems() == {}


async def test_a_provider_error_reloaded_from_the_file_is_still_not_provisioned(tmp_path, journal):
    path = tmp_path / "entries.json"
    clock = Clock()
    config = CoreConfig(workflow_steps=("provider.fake", "provisioner.ipalloc"), workflow_entries_file=str(path))

    def build() -> tuple[Core, FakeProvider]:
        provider = FakeProvider()
        ipam = RecordingProvisioner("provisioner.ipalloc", journal)
        return Core(config, {"provider.fake": provider, "provisioner.ipalloc": ipam}, clock=clock), provider

    core, provider = build()
    await core.start()
    await provider.send_queue.put(Message(Action.ADD, Service(name="ns/bad"), error="bad label"))
    await eventually(lambda: "ns/bad" in core.entries)
    await core.stop()
    again, _ = build()
    await again.start()
    try:
        assert again.entries["ns/bad"].error_step == "provider.fake"
        clock.now += 10**6
        again.housekeep()
        assert journal == []
    finally:
        await again.stop()


async def test_a_persister_that_cannot_write_says_so_on_health_and_recovers(world, monkeypatch):
    core, provider, _, _ = world
    import controller.core as core_module

    real_save = core_module.save_entries

    def broken(path: str, entries: object) -> None:
        raise ValueError("an entry the file cannot hold")

    monkeypatch.setattr(core_module, "save_entries", broken)
    await provider.publish(svc())
    await eventually(lambda: "persister" in core.health_problems())
    assert "an entry the file cannot hold" in core.health_problems()["persister"]
    monkeypatch.setattr(core_module, "save_entries", real_save)
    await eventually(lambda: "persister" not in core.health_problems(), timeout=20)
    path = Path(core.config.workflow_entries_file)
    assert "ns/web" in json.loads(path.read_text())


async def test_a_core_task_that_ends_is_logged_restarted_and_shown_on_health(world, caplog):
    core, _, _, _ = world
    runs: list[int] = []
    back = asyncio.Event()

    async def body() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("lost its way")
        back.set()
        await asyncio.Event().wait()

    core._spawn("probe task", body)
    await eventually(lambda: "probe task" in core.health_problems())
    assert "RuntimeError: lost its way" in core.health_problems()["probe task"]
    assert "core task probe task ended unexpectedly" in caplog.text
    await asyncio.wait_for(back.wait(), timeout=10)
    assert len(runs) == 2
    assert core.metrics.core_task_crashes.labels("probe task")._value.get() == 1


def test_backoff_never_overflows():
    core = Core(CoreConfig(workflow_steps=("provider.fake",), retry_backoff_base=1, retry_backoff_max=300),
                {"provider.fake": FakeProvider()})
    assert core.backoff(1) == 1
    assert core.backoff(5000) == 300

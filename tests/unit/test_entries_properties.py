"""Any entry the core can produce is written to /services and the entries file, and read back unchanged.

Hypothesis drives a core (no tasks running: messages are handled directly)
with random sequences of what reaches it in production: provider adds with
arbitrary services, provider errors with arbitrary text, deletes, step
replies and step errors, the clock moving by arbitrary amounts, housekeeper
passes.  After every sequence each entry must serialise as strict JSON (no
NaN, no infinity) and survive a write and a read of the entries file.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import CoreConfig
from controller.core import Core
from controller.entries import dump_entries, load_entries, save_entries
from controller.messages import Action, Message, Service, Target
from tests.unit.fakes import FakeProvider, RecordingProvisioner

STEPS = ("provider.fake", "provisioner.ipalloc", "provisioner.dns")
NAMES = st.sampled_from(["ns/a", "ns/b", "other/a", "x"]) | st.text(min_size=1, max_size=12)
texts = st.text(max_size=40)

targets = st.builds(Target, host=st.text(max_size=15), port=st.integers(0, 65535), weight=st.integers(1, 50))
services = st.builds(
    Service, name=NAMES, targets=st.lists(targets, max_size=4).map(tuple), tls=st.booleans(),
    dns_names=st.lists(st.text(max_size=20), max_size=3).map(tuple), port=st.integers(0, 65535),
    requested_ip=st.sampled_from(["", "192.0.2.9", "not an ip"]))

provider_add = st.tuples(st.just("add"), services, st.just(""))
provider_error = st.tuples(st.just("add"), services, texts.filter(bool))
provider_delete = st.tuples(st.just("delete"), services, st.just(""))
step_reply = st.tuples(st.just("reply"), NAMES, st.sampled_from(["", "", "backend down", "conflict"]))
clock_moves = st.tuples(st.just("tick"), st.floats(0, 1e7, allow_nan=False, allow_infinity=False), st.just(""))
operations = st.lists(st.one_of(provider_add, provider_error, provider_delete, step_reply, clock_moves),
                      max_size=40)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def build_core(now: float) -> tuple[Core, Clock]:
    clock = Clock(now)
    config = CoreConfig(workflow_steps=STEPS, service_wip_timeout=30, service_max_last_updated=60,
                        clean_undeployed_after=120, retry_backoff_base=1, retry_backoff_max=300)
    extensions = {"provider.fake": FakeProvider(), "provisioner.ipalloc": RecordingProvisioner("provisioner.ipalloc"),
                  "provisioner.dns": RecordingProvisioner("provisioner.dns")}
    return Core(config, extensions, clock=clock), clock


def apply(core: Core, clock: Clock, operation: tuple[str, Any, Any]) -> None:
    kind, subject, error = operation
    if kind == "tick":
        clock.now += subject
        core.housekeep()
    elif kind == "reply":
        entry = core.entries.get(subject)
        if entry is None or not entry.work_in_progress:
            return
        service = replace(entry.service, public_ip="192.0.2.10")
        core.handle_message(Message(Action.DELETE if entry.reverse else Action.ADD, service, sender=entry.state,
                                    error=error, extra={"generation": str(entry.generation)}))
    else:
        action = Action.ADD if kind == "add" else Action.DELETE
        core.handle_message(Message(action, subject, sender="provider.fake", error=error))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.floats(1e6, 4e9), ops=operations)
def test_every_entry_the_core_produces_round_trips_through_the_entries_file(tmp_path: Path, start: float,
                                                                            ops: list[tuple[str, Any, Any]]) -> None:
    core, clock = build_core(start)
    for operation in ops:
        apply(core, clock, operation)
    shown = dump_entries(core.entries)
    json.dumps(shown, allow_nan=False)  # what /services answers: strict JSON
    path = tmp_path / "entries.json"
    save_entries(str(path), core.entries)
    assert dump_entries(load_entries(str(path))) == shown

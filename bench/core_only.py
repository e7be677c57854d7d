"""The core's own CPU per Service, without any I/O: `.venv/bin/python -m bench.core_only [N]`.

A provider and three steps that answer at once (the unit tests' doubles,
tests/unit/fakes.py) on the workflow shape of `make bench`; N Services (3,000
by default) are published and the process's CPU seconds until every one is
`deployed` are divided by N.  What the core costs a Service is then known
apart from kopf, the API server and the appliances (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace

from controller.config import CoreConfig
from controller.core import Core
from controller.messages import Service, Target
from controller.status import EntryStatus
from tests.unit.fakes import FakeProvider, RecordingIPAM, RecordingProvisioner

STEPS = ("provider.kubernetes", "provisioner.ipalloc", "provisioner.consul", "provisioner.f5ltm")


class _Forget(list):  # type: ignore[type-arg]
    """A journal that keeps nothing (the doubles record every message by default)."""

    def append(self, item: object) -> None:
        pass


async def main(count: int) -> None:
    provider = FakeProvider(STEPS[0])
    ipam = RecordingIPAM(STEPS[1], _Forget())
    ipam.transform = lambda m: m.reply(service=replace(m.service, public_ip="192.0.2.10"))
    steps = {STEPS[0]: provider, STEPS[1]: ipam, STEPS[2]: RecordingProvisioner(STEPS[2], _Forget()),
             STEPS[3]: RecordingProvisioner(STEPS[3], _Forget())}
    for step in steps.values():
        if isinstance(step, RecordingProvisioner):
            step.received = _Forget()
    core = Core(CoreConfig(workflow_steps=STEPS), steps)  # type: ignore[arg-type]
    done = asyncio.Event()
    deployed: set[str] = set()

    def sink(status: EntryStatus) -> None:
        if status.state == "deployed":
            deployed.add(status.name)
            if len(deployed) >= count:
                done.set()

    core.add_status_sink(sink)
    await core.start()
    before, started = os.times(), time.perf_counter()
    for i in range(count):
        await provider.publish(Service(name=f"ns/svc-{i}", provider=STEPS[0], targets=(Target("10.0.0.1", 30080, 1),),
                                       dns_names=(f"svc-{i}.example.com",)))
        if i % 50 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 300)
    after = os.times()
    cpu = (after.user + after.system) - (before.user + before.system)
    print(f"core only: {count} Services, {1000 * cpu / count:.3f} ms CPU per Service "
          f"({time.perf_counter() - started:.1f} s)")
    await core.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))

"""kopf's index pre-population after our patch (controller/main.py): the same readiness, linear wake-ups."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits.aiotoggles import ToggleSet

import controller.main  # noqa: F401  -- applies the patch


async def test_waiters_wake_when_the_last_toggle_is_dropped_and_only_then() -> None:
    toggles = ToggleSet(all)
    held = [await toggles.make_toggle(name=str(i)) for i in range(200)]
    wakeups = 0
    original = toggles._condition.notify_all

    def counting() -> None:
        nonlocal wakeups
        wakeups += 1
        original()

    toggles._condition.notify_all = counting  # type: ignore[method-assign]
    waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(50)]
    await asyncio.sleep(0)

    for toggle in held[:-1]:
        await toggles.drop_toggle(toggle)
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    await toggles.drop_toggle(held[-1])
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)

    assert wakeups == 1  # not one per dropped toggle
    assert toggles.is_on()

"""Shared test helpers: how a test asks for a real component, and waits for a condition."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, Callable

import pytest

from tests.ports import free_port  # noqa: F401  (re-exported: the tests import it from here)

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_component(available: bool, what: str, how: str = "") -> None:
    """Fail in CI, skip loudly elsewhere, when a real component is missing.

    ``what`` names the component, ``how`` says how to get it (e.g. `make env-up`).
    """
    if available:
        return
    reason = f"REAL COMPONENT MISSING: {what}" + (f" ({how})" if how else "")
    if IN_CI:
        pytest.fail(reason + " -- CI never skips a real component", pytrace=False)
    print(f"\n*** {reason}: SKIPPING ***", file=sys.stderr)
    pytest.skip(reason)


async def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll until check() returns something truthy; fail naming ``what`` (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - the thing may not exist yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")

"""Giving freed memory back to the system after a burst.

A burst (a restart's resync of 10,000 Services, thousands created at once)
allocates far more at once than the controller keeps afterwards; glibc keeps
what was freed in its heap, counted in the process's RSS, unless asked to
return it.  Every ``interval`` seconds, ``malloc_trim(0)`` gives the free pages
back (a few milliseconds; nothing on a C library without it, such as musl).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Callable

log = logging.getLogger("interlook.memory")

TRIM_INTERVAL = 30.0


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


async def trim_forever(interval: float = TRIM_INTERVAL) -> None:
    trim = _malloc_trim()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the process")
        return
    while True:
        await asyncio.sleep(interval)
        trim()

"""Finding what Interlook made for entries that no longer exist.

Every step is idempotent and undone on delete, yet a crash between two
steps, or a Service deleted in the instant a controller died, can leave a
record behind with nobody left to ask for its removal.  Provisioners that can
list what they own sweep it periodically, the external-dns way: an owner
absent from the core's live entries on two passes in a row is an orphan (one
pass is not enough: after a restart the entries are still being rebuilt).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Container, Iterable

from controller.extension import BaseExtension


class OrphanSweep:
    def __init__(self) -> None:
        self._suspects: set[str] = set()

    def confirmed(self, owners: Iterable[str], live: Container[str]) -> set[str]:
        """Owners missing from ``live`` now and on the previous pass."""
        missing = {owner for owner in owners if owner not in live}
        confirmed = missing & self._suspects
        self._suspects = missing - confirmed
        return confirmed


async def sweep_forever(extension: BaseExtension, interval: float,
                        owners: Callable[[], Awaitable[set[str]]],
                        remove: Callable[[str], Awaitable[None]],
                        errors: tuple[type[Exception], ...] = ()) -> None:
    """Every ``interval``, ``remove`` each confirmed orphan among ``owners()``.

    Off when ``interval`` is 0 or when no core lent its entries (an extension
    driven on its own would take every record for an orphan).  A removal holds
    the entry's lock and checks once more, so it never races a message for a
    service that has just come back.  ``errors`` of a pass are logged and the
    next pass tries again.
    """
    if not interval or not extension.context.knows_entries:
        return
    sweep = OrphanSweep()
    while True:
        await asyncio.sleep(interval)
        try:
            found = await owners()
        except errors as exc:
            extension.log.warning("orphan sweep skipped: %s", exc)
            continue
        for owner in sweep.confirmed(found, extension.context.entries()):
            async with extension.entry_lock(owner):
                if owner in extension.context.entries():
                    continue
                try:
                    await remove(owner)
                except errors as exc:
                    extension.log.warning("orphan %s not removed yet: %s", owner, exc)

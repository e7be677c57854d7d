"""Finding what this Interlook made for entries that no longer exist.

Every step is idempotent and undone on delete, yet a crash between two
steps, or a Service deleted in the instant a controller died, can leave a
record behind with nobody left to ask for its removal.  Provisioners that can
list what they own sweep it periodically, the external-dns way: an owner
absent from the core's live entries on two passes in a row is an orphan (one
pass is not enough: after a restart the entries are still being rebuilt).

``owners()`` must list only the records marked with this instance's id
(extensions/kit/ownership.py): another Interlook's records, a standby's
peer's, and records written before instance ids are never swept.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Container, Iterable

from controller.extension import BaseExtension

Owners = Callable[[], Awaitable[set[str]]]
Remove = Callable[[str], Awaitable[None]]


class OrphanSweep:
    """The sweep of one extension: which owners were missing on the previous pass."""

    def __init__(self, extension: BaseExtension, owners: Owners, remove: Remove,
                 errors: tuple[type[Exception], ...] = ()) -> None:
        self.extension = extension
        self.owners = owners
        self.remove = remove
        self.errors = errors
        self._suspects: set[str] = set()

    def confirmed(self, owners: Iterable[str], live: Container[str]) -> set[str]:
        """Owners missing from ``live`` now and on the previous pass."""
        missing = {owner for owner in owners if owner not in live}
        confirmed = missing & self._suspects
        self._suspects = missing - confirmed
        return confirmed

    @property
    def suspects(self) -> set[str]:
        """Owners missing on the last pass: removed on the next one if still missing."""
        return set(self._suspects)

    async def run_pass(self) -> set[str]:
        """One pass; returns the owners whose records were removed.

        A removal holds the entry's lock and checks once more, so it never
        races a message for a service that has just come back.  ``errors``
        are logged; the next pass tries again.
        """
        extension = self.extension
        try:
            found = await self.owners()
        except self.errors as exc:
            extension.log.warning("orphan sweep skipped: %s", exc)
            return set()
        removed = set()
        for owner in self.confirmed(found, extension.context.entries()):
            async with extension.entry_lock(owner):
                if owner in extension.context.entries():
                    continue
                try:
                    await self.remove(owner)
                    removed.add(owner)
                except self.errors as exc:
                    extension.log.warning("orphan %s not removed yet: %s", owner, exc)
        return removed

    async def forever(self, interval: float) -> None:
        """A pass every ``interval`` (the first after one interval: at start the core may not
        know its entries yet).  Off when ``interval`` is 0 or when no core lent its entries:
        an extension driven on its own would take every record for an orphan."""
        if not interval or not self.extension.context.knows_entries:
            return
        while True:
            await asyncio.sleep(interval)
            await self.run_pass()


async def sweep_forever(extension: BaseExtension, interval: float, owners: Owners, remove: Remove,
                        errors: tuple[type[Exception], ...] = ()) -> None:
    """Every ``interval``, ``remove`` each confirmed orphan among ``owners()`` (see OrphanSweep.forever)."""
    await OrphanSweep(extension, owners, remove, errors).forever(interval)

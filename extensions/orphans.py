"""Finding what Interlook made for entries that no longer exist.

Every step is idempotent and undone on delete, yet a crash between two
steps, or a Service deleted in the instant a controller died, can leave a
record behind with nobody left to ask for its removal.  Provisioners that can
list what they own sweep it periodically, the external-dns way: an owner
absent from the core's live entries on two passes in a row is an orphan (one
pass is not enough: after a restart the entries are still being rebuilt).
"""

from __future__ import annotations

from typing import Container, Iterable


class OrphanSweep:
    def __init__(self) -> None:
        self._suspects: set[str] = set()

    def confirmed(self, owners: Iterable[str], live: Container[str]) -> set[str]:
        """Owners missing from ``live`` now and on the previous pass."""
        missing = {owner for owner in owners if owner not in live}
        confirmed = missing & self._suspects
        self._suspects = missing - confirmed
        return confirmed

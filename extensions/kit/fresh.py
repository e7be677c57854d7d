"""Which entries may hold something of ours in a backend, so that the others are written without reading first.

A provisioner reads, at start-up, every record or object its instance holds
(one bulk read); since then only this process writes them (the active
replica; a standby writes nothing).  An entry in neither that read nor the
ones written for since is *fresh*: nothing of it can exist but what someone
else made meanwhile, which the backend's own guard refuses to overwrite
(Consul's compare-and-set at index 0, the BIG-IP's 409 to a create at a taken
name), after which the entry is read and judged as usual.

Used by provisioner.consul and provisioner.f5ltm.
"""

from __future__ import annotations

import sys
from typing import Iterable


class MayHold:
    """Entries that may hold something of ours; unknown (nothing is fresh) until a bulk read loads it."""

    def __init__(self) -> None:
        self._entries: set[str] | None = None

    def load(self, entries: Iterable[str]) -> None:
        """What the start-up bulk read found (interned: the names the core's entries hold too)."""
        self._entries = {sys.intern(entry) for entry in entries}

    def forget(self) -> None:
        """No bulk read (failed, or torn down): every entry counts as possibly holding something."""
        self._entries = None

    def fresh(self, entry: str) -> bool:
        return self._entries is not None and entry not in self._entries

    def writing(self, entry: str) -> None:
        """Before a write for ``entry``, whatever its outcome: a timed-out write may still have landed."""
        if self._entries is not None:
            self._entries.add(sys.intern(entry))

    def holds_nothing(self, entry: str) -> None:
        """Everything of ``entry`` is gone (a delete went through): fresh again, and the set stays small."""
        if self._entries is not None:
            self._entries.discard(entry)

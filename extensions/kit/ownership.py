"""Ownership marks: who made a record outside the Service, for which entry.

Every record Interlook makes (an IPAllocation, a Consul node, an F5 object, a
Kemp virtual service) carries two marks: the **instance** that made it (see
controller/instance.py) and the **entry** (``namespace/name``) it is for.  One
module writes and reads them for every provisioner, so that the rule is the
same everywhere:

* a record with our instance's mark and the entry's name is ours to change;
* a record written before instance ids existed (no instance mark) is adopted
  only for the entry it names, by the instance that has that entry; sweeps
  never take one;
* anything else (another instance's, another entry's, hand-made) is never
  changed or removed, and a name or address it holds is an error on the entry.

Backends that hold free text (F5 descriptions, Kemp nicknames) carry the marks
as ``interlook:<instance>:<entry>``; backends with key/value metadata (Consul
node meta, IPAllocation specs) carry them as two fields.  The text form of a
record from before instance ids is ``interlook:<entry>``: entries never hold a
``:`` (Kubernetes and Swarm names cannot), so the two forms cannot be confused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.messages import holder_as_seen_by

TEXT_PREFIX = "interlook:"


@dataclass(frozen=True)
class Mark:
    """The marks found on (or written to) one record."""

    instance: str  # "" for a record written before instance ids
    entry: str

    @property
    def legacy(self) -> bool:
        return not self.instance

    def text(self) -> str:
        """``interlook:<instance>:<entry>``, the form written into free-text fields."""
        return f"{TEXT_PREFIX}{self.instance}:{self.entry}" if self.instance else f"{TEXT_PREFIX}{self.entry}"


def parse_text(text: str | None) -> Mark | None:
    """The marks at the start of a free-text field (up to the first space); None when it carries none."""
    token = (text or "").strip().split(" ", 1)[0]
    if not token.startswith(TEXT_PREFIX):
        return None
    rest = token[len(TEXT_PREFIX):]
    if not rest:
        return None
    instance, sep, entry = rest.partition(":")
    if not sep:
        return Mark(instance="", entry=rest)
    return Mark(instance=instance, entry=entry) if instance and entry else None


class Verdict(enum.Enum):
    OURS = "ours"                  # our instance, this entry
    ADOPT = "adopt"                # written before instance ids, for this entry: ours once re-marked
    FOREIGN = "foreign"            # anything else: never touched


@dataclass(frozen=True)
class Ownership:
    """The ownership rules, bound to one instance."""

    instance: str

    def mark(self, entry: str) -> Mark:
        return Mark(self.instance, entry)

    def judge(self, found: Mark | None, entry: str) -> Verdict:
        """May ``entry`` of this instance change a record that carries ``found``?"""
        if found is None or found.entry != entry:
            return Verdict.FOREIGN
        if found.instance == self.instance:
            return Verdict.OURS
        return Verdict.ADOPT if found.legacy else Verdict.FOREIGN

    def may_change(self, found: Mark | None, entry: str) -> bool:
        return self.judge(found, entry) is not Verdict.FOREIGN

    def is_own(self, found: Mark | None) -> bool:
        """Made by this instance (for any entry): what an orphan sweep may consider."""
        return found is not None and found.instance == self.instance

    def holder(self, found: Mark | None, viewer: str = "") -> str:
        """Who holds a record, in words fit for an error shown on the Service ``viewer``.

        Another namespace's Service is never named (see
        controller.messages.holder_as_seen_by); another instance's entries
        never are either: only the instance id, which is what the operator
        needs to find it.
        """
        if found is None:
            return "something other than Interlook"
        if found.instance and found.instance != self.instance:
            return f"another Interlook instance ({found.instance})"
        return holder_as_seen_by(found.entry, viewer) if viewer else "another Service"

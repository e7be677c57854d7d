"""The ownership marks in a Virtual Service's nickname, the one free-text field a LoadMaster VS has.

The marks are those of extensions/kit/ownership.py (the instance that made a
VS, and the entry it is for), but a nickname cannot hold their text form
``interlook:<instance>:<entry>``: Kemp documents a Virtual Service's name as
letters and digits plus ``.``, ``@``, ``-`` and ``_``, with a letter or digit
first (LoadMaster WUI configuration guide, "SubVS WUI Options", Service
Name).  So a nickname spells them ``interlook_<instance>_<entry>``:

* the instance as it is (ids are lower-case letters, digits and ``-``, never
  ``_``: the first ``_`` after the prefix ends it);
* ``namespace/name`` as ``namespace.name`` (Kubernetes names hold no ``.``
  nor ``_``, so that form is unambiguous); any other entry (a Swarm
  ``stack_web``, odd characters) cleaned up and followed by ``_`` and a short
  hash of the entry, so that two entries never share a nickname;
* at most ``MAX_NICKNAME`` characters: Kemp documents no maximum, so we keep
  nicknames short enough to read in the WUI's list; a longer one keeps the
  whole instance and cuts the entry, again with the hash.

An entry is never read back from a nickname: a VS is an entry's when its
nickname is exactly the one computed for that entry.  Only the instance is
read back, for sweeps and for saying who holds a VS.  Nicknames written
before instance ids (``interlook:<entry>``) are read with the ownership
module's text form.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from extensions.kit.ownership import Mark, Ownership, Verdict, parse_text

PREFIX = "interlook_"
MAX_NICKNAME = 64
# What Kemp documents for a Virtual Service's name.
VALID_NICKNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.@_-]*$")
_CLEAN = re.compile(r"^[A-Za-z0-9-]+(/[A-Za-z0-9-]+)?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
_INSTANCE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_HASHED = 9  # "_" and 8 hex digits


def _digest(entry: str) -> str:
    return hashlib.sha256(entry.encode()).hexdigest()[:8]


def nickname(mark: Mark) -> str:
    """The nickname that carries ``mark`` (an instance's mark: legacy marks are never written)."""
    head = f"{PREFIX}{mark.instance}_"
    room = MAX_NICKNAME - len(head)
    if _CLEAN.match(mark.entry) and len(mark.entry) <= room:
        return head + mark.entry.replace("/", ".")
    cleaned = _UNSAFE.sub("-", mark.entry.replace("/", "."))
    return f"{head}{cleaned[: room - _HASHED]}_{_digest(mark.entry)}"


def read_instance(text: str) -> Mark | None:
    """The marks a nickname shows: its instance (the entry only for a legacy nickname); None if it has none.

    For a nickname of ours the entry returned is its spelling in the
    nickname, fit for nothing but display: compare nicknames to match entries.
    """
    if text.startswith(PREFIX):
        instance, sep, rest = text[len(PREFIX):].partition("_")
        if sep and rest and _INSTANCE.match(instance):
            return Mark(instance=instance, entry=rest)
        return None
    return parse_text(text)


@dataclass(frozen=True)
class NicknameOwnership:
    """The ownership rules of extensions/kit/ownership.py, applied to nicknames."""

    ownership: Ownership

    def nickname(self, entry: str) -> str:
        return nickname(self.ownership.mark(entry))

    def judge(self, text: str, entry: str) -> Verdict:
        """OURS for exactly our nickname for ``entry``; ADOPT for the legacy ``interlook:<entry>``; else FOREIGN."""
        if text == self.nickname(entry):
            return Verdict.OURS
        legacy = parse_text(text)
        if legacy is not None and legacy.legacy:
            return self.ownership.judge(legacy, entry)
        return Verdict.FOREIGN

    def is_own(self, text: str) -> bool:
        return self.ownership.is_own(read_instance(text))

    def holder(self, text: str) -> str:
        return self.ownership.holder(read_instance(text))

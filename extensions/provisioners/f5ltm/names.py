"""How Interlook names and marks what it creates on a BIG-IP.

Every object carries the entry it belongs to twice: in its name (so an
operator finds it) and in its description (so Interlook only ever changes or
deletes what it made: an object with the right name but without the mark is
somebody else's).  Entry names are ``namespace/name`` for Kubernetes or a
Swarm service name, which BIG-IP names cannot hold as they are.
"""

from __future__ import annotations

import hashlib
import re

from controller.messages import holder_as_seen_by

PREFIX = "interlook_"
MARK = "interlook:"
# BIG-IP object names: letters, digits, '.', '-', '_'; ours start with the prefix, so with a letter.
_CLEAN = re.compile(r"^[A-Za-z0-9.-]+(/[A-Za-z0-9.-]+)?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
MAX_NAME = 150


def _digest(entry: str) -> str:
    return hashlib.sha256(entry.encode()).hexdigest()[:8]


def object_name(entry: str) -> str:
    """A valid BIG-IP name for an entry, distinct for distinct entries.

    ``ns/name`` (Kubernetes) gives ``interlook_ns_name``.  Kubernetes names
    hold no ``_``, so that form is unambiguous; anything else (a Swarm
    ``stack_web``, odd characters, very long names) gets a short hash of the
    entry name appended, so two entries can never share an object.
    """
    if _CLEAN.match(entry) and len(PREFIX) + len(entry) <= MAX_NAME:
        return PREFIX + entry.replace("/", "_")
    mangled = _UNSAFE.sub("_", entry)[: MAX_NAME - len(PREFIX) - 9]
    return f"{PREFIX}{mangled}_{_digest(entry)}"


def object_description(entry: str, suffix: str) -> str:
    """``interlook:ns/name (auto generated - do not edit)``: whose object it is, and a warning."""
    return f"{MARK}{entry} {suffix}".strip()


def owned_by(description: str | None, entry: str) -> bool:
    """True when an object's description marks it as made by Interlook for ``entry``."""
    text = (description or "").strip()
    mark = f"{MARK}{entry}"
    return text == mark or text.startswith(mark + " ")


def node_description(suffix: str) -> str:
    """Nodes are shared by every pool on the same host, so they name no entry."""
    return f"{MARK}node {suffix}".strip()


def owns_node(description: str | None) -> bool:
    text = (description or "").strip()
    return text == f"{MARK}node" or text.startswith(f"{MARK}node ")


def owner_of(description: str | None) -> str:
    """The entry named by an ownership mark (``interlook:ns/name ...``), or "" (nodes, foreign objects)."""
    text = (description or "").strip()
    if not text.startswith(MARK):
        return ""
    owner = text[len(MARK):].split(" ", 1)[0]
    return "" if owner == "node" else owner


def whose(description: str | None, viewer: str) -> str:
    """Who an object belongs to, as an error shown on ``viewer`` may say it (no other namespace's names)."""
    owner = owner_of(description)
    if owner:
        return f"made by Interlook for {holder_as_seen_by(owner, viewer)}"
    return f"description {(description or '')!r}"

"""How Interlook names what it creates on a BIG-IP.

Every object carries its owner twice: in its name (so an operator finds it)
and in its description, which holds the ownership marks of
extensions/kit/ownership.py (``interlook:<instance>:<entry> <suffix>``; a
description is the only thing Interlook trusts: an object at the right name
without our marks is somebody else's).

Names hold a short form of the instance id, so that two Interlooks that
publish the same ``namespace/name`` into one partition never want the same
object: ``interlook_<instance>_<namespace>_<name>``.  Objects made before
instance ids are named ``interlook_<namespace>_<name>``
(:func:`legacy_object_name`); the provisioner adopts them in place and they
keep that name, because BIG-IP cannot rename an object: moving it would mean
deleting a virtual server that carries traffic.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "interlook_"
# BIG-IP object names: letters, digits, '.', '-', '_'; ours start with the prefix, so with a letter.
_CLEAN = re.compile(r"^[A-Za-z0-9.-]+(/[A-Za-z0-9.-]+)?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
MAX_NAME = 150
# Instance ids are up to 32 characters (controller/instance.py); in names a
# longer one is cut and given a hash, so that a name keeps room for its entry.
MAX_INSTANCE_IN_NAME = 16
NODE_ENTRY = "node"  # the entry part of a node's mark: nodes are shared by pools, they name no entry


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def short_instance(instance: str) -> str:
    """The instance id as it appears in names: itself when short, else a prefix and a hash (no '_' either way)."""
    if len(instance) <= MAX_INSTANCE_IN_NAME:
        return instance
    return f"{instance[:MAX_INSTANCE_IN_NAME - 9]}-{_digest(instance)}"


def _entry_part(entry: str, room: int) -> str:
    """The entry in a name: ``ns/name`` -> ``ns_name``; anything else gets a hash, so entries never share one.

    Kubernetes names hold no ``_``, so that plain form is unambiguous; a
    Swarm ``stack_web``, odd characters or a very long name is mangled and
    followed by ``_`` and a short hash of the entry.
    """
    if _CLEAN.match(entry) and len(entry) <= room:
        return entry.replace("/", "_")
    return f"{_UNSAFE.sub('_', entry)[: room - 9]}_{_digest(entry)}"


def object_name(instance: str, entry: str) -> str:
    """``interlook_<instance>_<ns>_<name>``: a valid BIG-IP name, distinct per instance and entry."""
    head = f"{PREFIX}{short_instance(instance)}_"
    return head + _entry_part(entry, MAX_NAME - len(head))


def legacy_object_name(entry: str) -> str:
    """The name the version before instance ids gave an entry's objects (``interlook_<ns>_<name>``)."""
    return PREFIX + _entry_part(entry, MAX_NAME - len(PREFIX))

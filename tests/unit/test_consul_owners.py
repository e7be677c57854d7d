"""Which entries the start-up read counts as holding Consul records (Known.owners, then extensions/kit/fresh.py)."""

from __future__ import annotations

import sys

from extensions.provisioners.consul.records import Known, NodeState


def node(name: str, owner: str, instance: str | None) -> NodeState:
    meta = {"interlook-managed": "true", "interlook-owner": owner}
    if instance is not None:
        meta["interlook-instance"] = instance
    return NodeState(name=name, address="192.0.2.1", meta=meta, modify_index=3)


def test_the_owners_are_this_instances_and_those_from_before_instance_ids_never_anothers():
    nodes = [node("a", "shop/web", "il-a"), node("b", "shop/old", None), node("c", "shop/theirs", "il-b"),
             NodeState(name="d", address="192.0.2.1", meta={"external-node": "true"}, modify_index=4)]
    assert Known(nodes, "il-a", loaded_at=0.0, ttl=1.0).owners() == {"shop/web", "shop/old"}


def test_the_owners_are_interned_and_do_not_shrink_when_the_view_is_consumed():
    known = Known([node("a", "".join(["shop/", "web"]), "il-a")], "il-a", loaded_at=0.0, ttl=1.0)
    owners = known.owners()
    assert all(owner is sys.intern(owner) for owner in owners)
    known.unchanged("shop/web", [])
    assert owners == {"shop/web"}

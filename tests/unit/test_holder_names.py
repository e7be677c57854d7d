"""Errors shown on a Service never name another namespace's Service (controller/messages.py holder_as_seen_by)."""

from __future__ import annotations

from controller.messages import holder_as_seen_by
from extensions.kit.ownership import Mark, Ownership
from extensions.provisioners.consul.records import NameState, NodeState, Record


def test_a_holder_in_the_viewers_namespace_is_named_any_other_is_not():
    assert holder_as_seen_by("shop/db", "shop/web") == "shop/db"
    assert holder_as_seen_by("bank/vault", "shop/web") == "another Service"
    assert holder_as_seen_by("stack_web", "stack_api") == "stack_web"  # Swarm: one shared space
    assert holder_as_seen_by("bank/vault", "stack_api") == "another Service"
    assert holder_as_seen_by("", "shop/web") == "another Service"


def test_the_ownership_rules_name_only_the_viewers_namespace_and_never_another_instances_entries():
    rules = Ownership("il-a")
    assert rules.holder(Mark("il-a", "shop/db"), "shop/web") == "shop/db"
    assert rules.holder(Mark("il-a", "bank/vault"), "shop/web") == "another Service"
    assert rules.holder(Mark("il-b", "shop/db"), "shop/web") == "another Interlook instance (il-b)"
    assert rules.holder(None, "shop/web") == "something other than Interlook"


def test_consul_conflicts_name_only_the_viewers_namespace():
    record = Record(name="www.example.com", owner="shop/web", address="192.0.2.1", port=80, instance="il-a")

    def held_by(owner: str) -> str:
        meta = {"interlook-managed": "true", "interlook-owner": owner, "interlook-instance": "il-a"} if owner else {}
        node = NodeState(name="www.example.com", address="192.0.2.9", modify_index=7, meta=meta)
        return record.conflict(NameState(name="www.example.com", node=node))

    assert held_by("bank/vault").endswith("held by another Service")
    assert held_by("shop/db").endswith("held by shop/db")
    assert held_by("").endswith("held by something other than Interlook")

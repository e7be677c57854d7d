"""Errors shown on a Service never name another namespace's Service (controller/messages.py holder_as_seen_by)."""

from __future__ import annotations

from controller.messages import holder_as_seen_by
from extensions.provisioners.consul.records import NameState, NodeState, Record
from extensions.provisioners.f5ltm.names import object_description, whose
from extensions.provisioners.kemplm.provisioner import _whose, nickname_for


def test_a_holder_in_the_viewers_namespace_is_named_any_other_is_not():
    assert holder_as_seen_by("shop/db", "shop/web") == "shop/db"
    assert holder_as_seen_by("bank/vault", "shop/web") == "another Service"
    assert holder_as_seen_by("stack_web", "stack_api") == "stack_web"  # Swarm: one shared space
    assert holder_as_seen_by("bank/vault", "stack_api") == "another Service"
    assert holder_as_seen_by("", "shop/web") == "another Service"


def test_f5_and_kemp_conflicts_name_only_the_viewers_namespace():
    assert whose(object_description("bank/vault", "(auto)"), "shop/web") == "made by Interlook for another Service"
    assert whose("hand made", "shop/web") == "description 'hand made'"
    assert _whose(nickname_for("bank/vault"), "shop/web") == "made by Interlook for another Service"
    assert _whose(nickname_for("shop/db"), "shop/web") == "made by Interlook for shop/db"


def test_consul_conflicts_name_only_the_viewers_namespace():
    record = Record(name="www.example.com", owner="shop/web", address="192.0.2.1", port=80)

    def held_by(owner: str) -> str:
        node = NodeState(name="www.example.com", address="192.0.2.9", modify_index=7,
                         meta={"interlook-owner": owner} if owner else {})
        return record.conflict(NameState(name="www.example.com", node=node))

    assert held_by("bank/vault").endswith("owned by Interlook for another Service")
    assert held_by("shop/db").endswith("owned by Interlook for shop/db")
    assert held_by("").endswith("owned by something other than Interlook")

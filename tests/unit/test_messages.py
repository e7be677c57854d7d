"""Message and Service copies on the hot path (Message.reply/failed/sent_by, Service.but) equal dataclasses.replace."""

from __future__ import annotations

import dataclasses

from controller.messages import Action, Message, Service, Target

SERVICE = Service(name="ns/web", provider="provider.kubernetes", targets=(Target("10.0.0.2", 30080, 1),
                  Target("10.0.0.1", 30080, 2)), tls=True, public_ip="192.0.2.1", dns_names=("a.example",),
                  port=443, requested_ip="192.0.2.1", pool="blue", labels=(("team", "a"),),
                  namespace_labels=(("env", "prod"),))
MESSAGE = Message(Action.UPDATE, SERVICE, sender="core", destination="provisioner.consul", error="",
                  info="no ready endpoints", extra={"generation": "3"})


def test_every_field_of_a_message_is_set_on_a_non_default_value() -> None:
    """The copies below are only a proof if no field is left at its default (a new field must join here)."""
    defaults = Message(Action.ADD, Service(name="x"))
    differs = {f.name for f in dataclasses.fields(Message)
               if getattr(MESSAGE, f.name) != getattr(defaults, f.name)}
    assert differs == {f.name for f in dataclasses.fields(Message)} - {"error"}


def test_reply_failed_and_sent_by_are_replace() -> None:
    other = dataclasses.replace(SERVICE, public_ip="192.0.2.9")
    assert MESSAGE.reply() == dataclasses.replace(MESSAGE, error="")
    assert MESSAGE.reply(error="x", service=other, info="i") == dataclasses.replace(
        MESSAGE, error="x", service=other, info="i")
    assert MESSAGE.failed("boom") == dataclasses.replace(MESSAGE, error="boom")
    assert MESSAGE.failed("") == dataclasses.replace(MESSAGE, error="unknown error")
    assert MESSAGE.sent_by("provider.kubernetes") == dataclasses.replace(MESSAGE, sender="provider.kubernetes")


def test_service_but_is_replace_and_still_merges_new_targets() -> None:
    assert SERVICE.but(public_ip="192.0.2.7") == dataclasses.replace(SERVICE, public_ip="192.0.2.7")
    assert SERVICE.but() == SERVICE
    raw = (Target("10.0.0.3", 80, 1), Target("10.0.0.3", 80, 2))
    assert SERVICE.but(targets=raw, dns_names=["b.example"]) == dataclasses.replace(
        SERVICE, targets=raw, dns_names=("b.example",))

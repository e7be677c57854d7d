"""What a bulk read at start-up found on the BIG-IP: unchanged entries are confirmed without a request.

After a restart every entry comes back through the workflow.  Reading its
objects one by one (the pool at our name, at the legacy name, the virtual
server, the policy rules) is most of the load a restart puts on the
appliance: about four reads per Service, all at once.  Instead the
provisioner reads, once at start-up, every pool, virtual server and policy
rule in its partition (paged collections) and answers each entry's first
message from that view: the entry *takes* its objects out, so a later message
reads afresh.  An entry's first message after start-up is its first chance
to change its objects, so the view is exact for it (an object absent then
is absent now, unless someone else made it: then the appliance's own guard,
409 to a create of an existing object, fails the step and the retry reads).
Every write still goes to the appliance.  The view is dropped after ``ttl``
seconds: it is a start-up snapshot, never a cache of the present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

Object = dict[str, Any]


@dataclass(frozen=True)
class Seen:
    """One entry's objects as the start-up read found them; a name absent here was absent there."""

    pools: Mapping[str, Object] = field(default_factory=dict)
    virtuals: Mapping[str, Object] = field(default_factory=dict)
    rules: Mapping[str, Mapping[str, Object]] = field(default_factory=dict)  # policy -> rule name -> rule

    def pool(self, name: str) -> Object | None:
        return self.pools.get(name)

    def virtual(self, name: str) -> Object | None:
        return self.virtuals.get(name)

    def knows_policy(self, policy: str) -> bool:
        return policy in self.rules

    def rule(self, policy: str, name: str) -> Object | None:
        return (self.rules.get(policy) or {}).get(name)


class Known:
    """Every pool, virtual server and policy rule of our partition, by name, until each entry takes its own."""

    def __init__(self, *, pools: Iterable[Object], virtuals: Iterable[Object],
                 rules: Mapping[str, Iterable[Object]], loaded_at: float, ttl: float):
        self._pools = {str(p.get("name")): slim_pool(p) for p in pools}
        self._virtuals = {str(v.get("name")): _only(v, VIRTUAL_FIELDS) for v in virtuals}
        self._rules = {policy: {str(r.get("name")): r for r in items} for policy, items in rules.items()}
        self.expires = loaded_at + ttl
        self._answered: set[str] = set()

    def __len__(self) -> int:
        return len(self._pools) + len(self._virtuals) + sum(len(r) for r in self._rules.values())

    def expired(self, now: float) -> bool:
        return now >= self.expires or not len(self)

    def take(self, entry: str, names: Iterable[str]) -> Seen | None:
        """The objects at ``names`` (the entry's and its legacy name), taken out; None after the first time."""
        if entry in self._answered:
            return None
        self._answered.add(entry)
        wanted = list(names)
        return Seen(pools=_take(self._pools, wanted), virtuals=_take(self._virtuals, wanted),
                    rules={policy: _take(rules, wanted) for policy, rules in self._rules.items()})


# What the provisioner reads of each object (10,000 appliance objects in full are most of a restart's peak memory).
POOL_FIELDS = ("name", "partition", "fullPath", "description", "loadBalancingMode", "monitor")
MEMBER_FIELDS = ("name", "fullPath", "address", "ratio")
VIRTUAL_FIELDS = ("name", "partition", "fullPath", "description", "destination", "pool", "ipProtocol",
                  "sourceAddressTranslation")


def _only(item: Object, fields: tuple[str, ...]) -> Object:
    return {key: item[key] for key in fields if key in item}


def slim_pool(pool: Object) -> Object:
    members = (pool.get("membersReference") or {}).get("items") or []
    return {**_only(pool, POOL_FIELDS), "membersReference": {"items": [_only(m, MEMBER_FIELDS) for m in members]}}


def _take(objects: dict[str, Object], names: list[str]) -> dict[str, Object]:
    return {name: found for name in names if (found := objects.pop(name, None)) is not None}

"""Which host names the rules of a shared LTM policy route, and who made each rule.

In ``policy`` mode every Service adds a rule to a policy that every team
shares, and the BIG-IP accepts two rules for one host name without a word
(the first by ordinal wins).  So before writing a rule the provisioner asks
who already routes each of its host names, in every policy it uses: a rule
of another entry, another Interlook instance or a person holds the name.

Reading every rule of a policy for each new Service would cost a restart
or a burst of new Services a large listing per Service.  Instead this view is
built from one listing and kept exact by the policy's ``generation``: any
change to a published policy goes through a draft and a publish, which gives
the policy a new generation.  One small read of the policy tells whether the
view is still the policy's; only when it is not are the rules listed again.
The provisioner's own publishes are applied to the view as it makes them.

Host names are DNS names: compared without case.  A condition routes a host
name when it tests the HTTP Host (or the URI's host) or the TLS SNI server
name with ``equals``, ``startsWith``, ``endsWith`` or ``contains``; a negated
condition (``not``) names no host, and neither does a rule without host
conditions (an operator's default rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

Object = Mapping[str, Any]

_OPERATORS = ("equals", "startsWith", "endsWith", "contains")


@dataclass(frozen=True)
class HostTest:
    """One comparison a condition makes against the host name, on a lower-cased value."""

    operator: str
    value: str

    def matches(self, host: str) -> bool:
        if self.operator == "equals":
            return host == self.value
        if self.operator == "startsWith":
            return host.startswith(self.value)
        if self.operator == "endsWith":
            return host.endswith(self.value)
        return self.value in host


@dataclass(frozen=True)
class Route:
    """A rule that routes by host name: its name, its description (where the ownership marks are), its tests."""

    rule: str
    description: str
    tests: tuple[HostTest, ...]

    @property
    def exact(self) -> frozenset[str]:
        return frozenset(t.value for t in self.tests if t.operator == "equals")

    @property
    def patterns(self) -> tuple[HostTest, ...]:
        return tuple(t for t in self.tests if t.operator != "equals")

    def routes(self, host: str) -> bool:
        return any(t.matches(host) for t in self.tests)


def conditions_of(rule: Object) -> list[Object]:
    """A rule's conditions, as the provisioner writes them (``conditions``) or the appliance reads them back."""
    written = rule.get("conditions")
    if written is not None:
        return list(written)
    return list((rule.get("conditionsReference") or {}).get("items") or [])


def host_tests(condition: Object) -> tuple[HostTest, ...]:
    """The host comparisons of one condition; none when it tests something else or is negated."""
    names_a_host = (condition.get("httpHost") or condition.get("httpUri")) and condition.get("host")
    names_a_server = condition.get("sslExtension") and condition.get("serverName")
    if not (names_a_host or names_a_server) or condition.get("not"):
        return ()
    operator = next((op for op in _OPERATORS if condition.get(op)), None)
    if operator is None:
        return ()
    return tuple(HostTest(operator, str(v).lower()) for v in condition.get("values") or [] if str(v))


def route_of(rule: Object) -> Route | None:
    """The host names a rule routes; None when it routes none."""
    tests = tuple(t for c in conditions_of(rule) for t in host_tests(c))
    if not tests:
        return None
    return Route(rule=str(rule.get("name")), description=str(rule.get("description") or ""), tests=tests)


class PolicyRoutes:
    """The routes of one published policy, as of its ``generation``; an index by exact host for speed."""

    def __init__(self, policy: str, generation: object, rules: Iterable[Object], *, expires: float = math.inf):
        self.policy = policy
        self.generation = generation
        # Listed again after this (clock seconds) even when the generation holds: see fresh().
        self.expires = expires
        self._routes: dict[str, Route] = {}
        self._exact: dict[str, set[str]] = {}  # host -> names of the rules that equal it
        self._patterns: dict[str, Route] = {}  # rules with a startsWith/endsWith/contains test (hand-made)
        for rule in rules:
            self.put(rule)

    def __len__(self) -> int:
        return len(self._routes)

    def fresh(self, generation: object, now: float) -> bool:
        """Still the policy's routes: same generation, and not older than ``expires``.

        The expiry bounds what the generation cannot tell: a publish by
        someone else in the instant between one of ours and our read of the
        new generation.
        """
        return generation is not None and generation == self.generation and now < self.expires

    def put(self, rule: Object) -> None:
        """The rule as it now is (written by us or read): replaces a rule of the same name."""
        name = str(rule.get("name"))
        self.drop(name)
        route = route_of(rule)
        if route is None:
            return
        self._routes[name] = route
        for host in route.exact:
            self._exact.setdefault(host, set()).add(name)
        if route.patterns:
            self._patterns[name] = route

    def drop(self, name: str) -> None:
        route = self._routes.pop(name, None)
        if route is None:
            return
        self._patterns.pop(name, None)
        for host in route.exact:
            holders = self._exact.get(host)
            if holders is not None:
                holders.discard(name)
                if not holders:
                    del self._exact[host]

    def routing(self, host: str) -> list[Route]:
        """Every rule that routes ``host``, by rule name."""
        host = host.lower()
        names = set(self._exact.get(host, ())) | {n for n, r in self._patterns.items() if r.routes(host)}
        return [self._routes[n] for n in sorted(names)]

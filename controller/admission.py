"""Who may publish what: the name rules and the host limit, checked before any step runs.

Interlook is shared: every namespace that can annotate a Service publishes
into the same DNS and load balancers.  These rules are the core's gate for
every provider and every provisioner: a Service whose host names are outside
what its namespace may publish, or that asks for more names than the limit,
is refused before anything is written anywhere.  Pure policy: no client, no
core; the core asks :meth:`Rules.check` and shows the answer on the entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from controller.messages import Service
from controller.selectors import LabelSelector

if TYPE_CHECKING:
    from controller.config import Section

# The step an admission refusal is shown at (`interlook.io/step`).
RULES_STEP = "rules"
DEFAULT_MAX_HOSTS = 20

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Domain:
    """A DNS suffix a rule allows: ``a.example.com`` (itself and below) or ``*.a.example.com`` (only below)."""

    name: str
    only_below: bool = False

    @classmethod
    def parse(cls, raw: str) -> Domain:
        text = raw.strip().lower().rstrip(".")
        only_below = text.startswith("*.")
        name = text[2:] if only_below else text
        labels = name.split(".")
        if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
            raise ValueError(f"{raw!r} is not a domain name (like a.example.com or *.a.example.com)")
        return cls(name, only_below)

    def allows(self, host: str) -> bool:
        # A wildcard host `*.a.example.com` ends with `.a.example.com`: below the domain, as it should be.
        return host.endswith(f".{self.name}") or (host == self.name and not self.only_below)

    def __str__(self) -> str:
        return f"*.{self.name}" if self.only_below else self.name


@dataclass(frozen=True)
class NameRule:
    """The domains the namespaces it selects (by name, or by their labels) may publish under."""

    domains: tuple[Domain, ...]
    namespaces: tuple[str, ...] = ()
    namespace_selector: LabelSelector = LabelSelector()

    def applies_to(self, service: Service) -> bool:
        """Named namespaces and selected ones both count; a rule that selects nothing applies to all."""
        if not self.namespaces and self.namespace_selector.empty:
            return True
        if service.namespace in self.namespaces:
            return True
        return not self.namespace_selector.empty and self.namespace_selector.matches(service.namespace_labels)

    def allows(self, host: str) -> bool:
        return any(domain.allows(host) for domain in self.domains)


@dataclass(frozen=True)
class Rules:
    """``core.rules``: the host limit, and the name rules (none: any name may be published)."""

    max_hosts_per_service: int = DEFAULT_MAX_HOSTS  # 0: no limit
    names: tuple[NameRule, ...] = ()

    def describe(self) -> list[str]:
        """What check-config shows of the rules: who may publish which names, and the limit."""
        limit = self.max_hosts_per_service or "no limit"
        lines = [f"host names per Service: {limit}"]
        if not self.names:
            return lines + ["names: any name nobody holds (no core.rules.names)"]
        for rule in self.names:
            who = [f"namespaces {', '.join(rule.namespaces)}"] if rule.namespaces else []
            who += [f"namespaces selected by {rule.namespace_selector}"] if not rule.namespace_selector.empty else []
            lines.append(f"names: {' or '.join(who) or 'every Service'} may publish "
                         f"{', '.join(str(d) for d in rule.domains)}")
        return lines

    def check(self, service: Service) -> str:
        """Why ``service`` may not be published as it is; "" when it may."""
        return self._over_limit(service) or self._refused_names(service)

    def _over_limit(self, service: Service) -> str:
        count = len(set(service.dns_names))
        if self.max_hosts_per_service and count > self.max_hosts_per_service:
            return (f"{count} host names, more than the limit of {self.max_hosts_per_service} "
                    "(core.rules.maxHostsPerService)")
        return ""

    def _refused_names(self, service: Service) -> str:
        if not self.names:
            return ""
        # Only the rules of this Service's namespace are ever named: the error is
        # shown to that namespace, and other teams' domains are none of its business.
        own = [rule for rule in self.names if rule.applies_to(service)]
        refused = [host for host in service.dns_names if not any(rule.allows(host) for rule in own)]
        if not refused:
            return ""
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        return f"host name {refused[0]}{more} is not allowed here: {_what_may_be_published(service, own)}"

    @classmethod
    def from_section(cls, section: Section) -> Rules:
        """``core.rules``, every problem reported with its key path."""
        rules = cls(max_hosts_per_service=section.int("maxHostsPerService", DEFAULT_MAX_HOSTS, minimum=0),
                    names=tuple(_name_rules(section)))
        section.finish()
        return rules


def _what_may_be_published(service: Service, own: Iterable[NameRule]) -> str:
    domains = sorted({str(domain) for rule in own for domain in rule.domains})
    who = f"namespace {service.namespace}" if service.namespace else "this service"
    if not domains:
        return f"{who} may publish no names (core.rules.names)"
    return f"{who} may publish names under {', '.join(domains)} (core.rules.names)"


def _name_rules(section: Section) -> list[NameRule]:
    return [rule for item in section.items("names") if (rule := _name_rule(item)) is not None]


def _name_rule(section: Section) -> NameRule | None:
    namespaces = tuple(section.str_list("namespaces"))
    for name in namespaces:
        if not _NAMESPACE.match(name):
            section.error("namespaces", f"{name!r} is not a namespace name")
    selector = section.selector("namespaceSelector")
    if section.data.get("domains") in (None, "", []):
        section.error("domains", "lists no domain: a rule allows names under at least one domain")
    domains = []
    for raw in section.str_list("domains"):
        try:
            domains.append(Domain.parse(raw))
        except ValueError as exc:
            section.error("domains", str(exc))
    section.finish()
    if not domains:
        return None
    return NameRule(domains=tuple(domains), namespaces=namespaces, namespace_selector=selector)

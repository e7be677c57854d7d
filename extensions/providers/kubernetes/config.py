"""Configuration of provider.kubernetes (section ``provider.kubernetes``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from controller.config import Section
from extensions.providers.kubernetes.contract import DEFAULT_PREFIX, Scope, Selector


@dataclass(frozen=True)
class KubernetesConfig:
    label_selector: Selector = Selector()
    namespaces: tuple[str, ...] = ()
    annotation_prefix: str = DEFAULT_PREFIX
    # kopf peering: how long a replica's keepalive counts; a standby takes
    # over at most this long after the active one stopped.  0: kopf's default.
    peering_lifetime: float = 0.0
    # The Go program's keys, accepted so its configs load.  Under kopf the
    # connection comes from the in-cluster account or KUBECONFIG instead.
    name: str = "kubernetes"
    endpoint: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    poll_interval: float = 15.0

    @cached_property
    def scope(self) -> Scope:
        return Scope(prefix=self.annotation_prefix, selector=self.label_selector, namespaces=self.namespaces)

    @classmethod
    def from_section(cls, section: Section) -> KubernetesConfig:
        selector = Selector.parse(section.str_list("labelSelector"))
        prefix = section.str("annotationPrefix", DEFAULT_PREFIX).strip().rstrip("/")
        if not prefix or "/" in prefix or " " in prefix:
            section.error("annotationPrefix", f"must be a DNS-like prefix such as {DEFAULT_PREFIX}, got {prefix!r}")
            prefix = DEFAULT_PREFIX
        config = cls(
            label_selector=selector,
            namespaces=tuple(section.str_list("namespaces")),
            annotation_prefix=prefix,
            peering_lifetime=section.duration("peeringLifetime", 0.0),
            name=section.str("name", "kubernetes"),
            endpoint=section.str("endpoint"),
            tls_ca=section.file("tlsCa"),
            tls_cert=section.file("tlsCert"),
            tls_key=section.file("tlsKey"),
            poll_interval=section.duration("pollInterval", 15.0),
        )
        if config.endpoint or config.tls_cert:
            section.warn("endpoint", "ignored: the controller connects with its in-cluster account or KUBECONFIG")
        if section.has("pollInterval"):
            section.warn("pollInterval", "ignored: Services, EndpointSlices and Nodes are watched, not polled")
        return config

"""The ``provider.swarm`` section: where the Docker daemon is and what to watch.

Keys are the Go program's, so its configs load unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from controller.config import Section
from extensions.providers.swarm.labels import LabelSelectorError, parse_label_selector

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
DEFAULT_POLL_INTERVAL = 15.0
# What the Docker SDK connects to; ssh:// names its account as ssh://user@host.
DOCKER_SCHEMES = ("unix", "tcp", "http", "https", "ssh", "npipe")


@dataclass(frozen=True)
class SwarmConfig:
    endpoint: str = DEFAULT_ENDPOINT
    # Each item is `key` (label present) or `key=value`.
    label_selector: tuple[str, ...] = ()
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    poll_interval: float = DEFAULT_POLL_INTERVAL

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key)

    @classmethod
    def from_section(cls, section: Section) -> SwarmConfig:
        default = os.environ.get("DOCKER_HOST", "") or DEFAULT_ENDPOINT
        endpoint = section.url("endpoint", default, schemes=DOCKER_SCHEMES, user_schemes=("ssh",),
                               example="unix:///var/run/docker.sock or tcp://host:2376",
                               sends="every request to the Docker daemon")
        selector = tuple(section.str_list("labelSelector"))
        try:
            parse_label_selector(selector)
        except LabelSelectorError as exc:
            section.error("labelSelector", str(exc))
            selector = ()
        tls_ca, tls_cert, tls_key = section.file("tlsCa"), section.file("tlsCert"), section.file("tlsKey")
        if bool(tls_cert) != bool(tls_key):
            section.error("tlsCert" if not tls_cert else "tlsKey", "tlsCert and tlsKey go together")
        # The Go program crashed on a zero interval; zero means "the default" here.
        poll = section.duration("pollInterval", DEFAULT_POLL_INTERVAL)
        if poll < 0:
            section.error("pollInterval", f"must not be negative, got {poll:g}s")
            poll = DEFAULT_POLL_INTERVAL
        return cls(endpoint=endpoint, label_selector=selector, tls_ca=tls_ca, tls_cert=tls_cert,
                   tls_key=tls_key, poll_interval=poll or DEFAULT_POLL_INTERVAL)

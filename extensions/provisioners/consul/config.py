"""The ``dns.consul`` section, read into a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from controller.config import Section

DEFAULT_URL = "http://127.0.0.1:8500"


@dataclass(frozen=True)
class ConsulConfig:
    url: str = DEFAULT_URL
    # Kept out of repr so that a logged config never shows the credential.
    token: str = field(default="", repr=False)
    # Consul's DNS domain: only used to tell users the name Consul answers
    # (<dns name>.service.<domain>), which a CoreDNS rewrite maps back.
    domain: str = "consul"
    ca_file: str = ""
    # 0: the service's own port when the provider gave one, else 80 / 443.
    service_port: int = 0
    tls_service_port: int = 0
    reconcile_interval: float = 60.0

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 8500)

    def public_port(self, tls: bool, service_port: int) -> int:
        """The port the DNS record advertises for a service."""
        configured = self.tls_service_port if tls else self.service_port
        if configured:
            return configured
        if service_port:
            return service_port
        return 443 if tls else 80

    @classmethod
    def from_section(cls, s: Section) -> ConsulConfig:
        # A bare host:port is the Go client's form: plain http to it.
        token = s.secret("token")
        url = s.url("url", DEFAULT_URL, schemes=("http", "https"), example="https://consul.example:8501",
                    bare_scheme="http", sends="the ACL token", secret_sent=bool(token))
        interval = s.duration("reconcileInterval", 60.0)
        if interval <= 0:
            s.error("reconcileInterval", "must be a positive duration")
            interval = 60.0
        return cls(
            url=url,
            token=token,
            domain=s.str("domain", "consul").strip(".") or "consul",
            ca_file=s.file("caFile"),
            service_port=s.port("servicePort", 0),
            tls_service_port=s.port("tlsServicePort", 0),
            reconcile_interval=interval,
        )

"""The ``lb.kemplm`` config section: where the LoadMaster is and how to log in.

Keys of the Go Interlook (``endpoint``, ``username``, ``password``,
``httpPort``, ``httpsPort``) plus TLS verification (``caFile``,
``insecureSkipVerify``) and secrets from files (``passwordFile``,
``apiKey``/``apiKeyFile``) so that manifests can mount Kubernetes Secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.config import Section


@dataclass(frozen=True)
class KempConfig:
    endpoint: str
    username: str = ""
    # Secrets are left out of repr() so that a logged config never shows them.
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    http_port: int = 80
    https_port: int = 443
    ca_file: str = ""
    insecure_skip_verify: bool = False
    timeout: float = 10.0

    @classmethod
    def from_section(cls, s: Section) -> KempConfig:
        if not s.has("endpoint"):
            s.error("endpoint", "is required")
        endpoint = s.url("endpoint", schemes=("https", "http"), example="https://loadmaster.example",
                         sends="the LoadMaster credentials")
        config = cls(
            endpoint=endpoint,
            username=s.str("username"),
            password=s.secret("password"),
            api_key=s.secret("apiKey"),
            http_port=s.port("httpPort", 80) or 80,
            https_port=s.port("httpsPort", 443) or 443,
            ca_file=s.file("caFile"),
            insecure_skip_verify=s.bool("insecureSkipVerify", False),
            timeout=s.duration("timeout", 10.0) or 10.0,
        )
        if not config.api_key and not (config.username and config.password):
            s.error("username", "set username and password (or passwordFile), or apiKey (or apiKeyFile)")
        if config.insecure_skip_verify:
            s.warn("insecureSkipVerify", "TLS verification of the LoadMaster is off; prefer caFile")
        if config.http_port == config.https_port:
            s.error("httpsPort", "httpPort and httpsPort must differ")
        return config

"""The ``lb.f5ltm`` section: the Go Interlook's keys, plus TLS verification settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from controller.config import Section

UPDATE_MODES = ("vs", "policy")
_PARTITION = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class F5Config:
    http_endpoint: str
    username: str
    # repr=False: a config printed in a log or a traceback never shows the secret.
    password: str = field(default="", repr=False)
    auth_provider: str = "tmos"
    http_port: int = 80
    https_port: int = 443
    monitor_name: str = ""
    load_balancing_mode: str = "least-connections-member"
    partition: str = "Common"
    update_mode: str = "vs"
    global_http_policy: str = ""
    global_ssl_policy: str = ""
    object_description_suffix: str = "(auto generated - do not edit)"
    ca_file: str = ""
    insecure_skip_verify: bool = False
    request_timeout: float = 30.0
    # How often objects of entries that no longer exist are removed; 0 turns it off.
    reconcile_interval: float = 60.0

    @property
    def base_url(self) -> str:
        """The endpoint with a scheme: the Go client accepted a bare host and spoke HTTPS to it."""
        endpoint = self.http_endpoint.rstrip("/")
        return endpoint if "://" in endpoint else f"https://{endpoint}"

    @classmethod
    def from_section(cls, s: Section) -> F5Config:
        if not s.has("httpEndpoint"):
            s.error("httpEndpoint", "is required")
        # A bare host is the Go client's form: it spoke HTTPS to it.
        endpoint = s.url("httpEndpoint", schemes=("https", "http"), example="https://bigip.example",
                         bare_scheme="https", sends="the BIG-IP credentials and token")
        username = s.str("username", required=True)
        password = s.secret("password")
        if not password:
            s.error("password", "is required (or passwordFile)")
        partition = s.str("partition", "Common")
        if not _PARTITION.match(partition):
            s.error("partition", f"not a valid BIG-IP partition name: {partition!r}")
        mode = s.str("updateMode", "vs", choices=UPDATE_MODES)
        http_policy = s.str("globalHTTPPolicy")
        ssl_policy = s.str("globalSSLPolicy")
        if mode == "policy" and not http_policy and not ssl_policy:
            s.error("updateMode", "policy mode needs globalHTTPPolicy and/or globalSSLPolicy")
        elif mode == "policy" and not (http_policy and ssl_policy):
            missing = "globalSSLPolicy" if http_policy else "globalHTTPPolicy"
            s.warn(missing, "not set: services of that kind (TLS or not) will fail in policy mode")
        insecure = s.bool("insecureSkipVerify", False)
        if insecure:
            s.warn("insecureSkipVerify", "TLS verification of the BIG-IP is OFF; prefer caFile")
        return cls(
            http_endpoint=endpoint,
            username=username,
            password=password,
            auth_provider=s.str("authProvider", "tmos") or "tmos",
            http_port=s.port("httpPort", 80) or 80,
            https_port=s.port("httpsPort", 443) or 443,
            monitor_name=s.str("monitorName"),
            load_balancing_mode=s.str("loadBalancingMode", "least-connections-member"),
            partition=partition,
            update_mode=mode,
            global_http_policy=http_policy,
            global_ssl_policy=ssl_policy,
            object_description_suffix=s.str("objectDescriptionSuffix", "(auto generated - do not edit)"),
            ca_file=s.file("caFile"),
            insecure_skip_verify=insecure,
            request_timeout=s.duration("requestTimeout", 30.0) or 30.0,
            reconcile_interval=s.duration("reconcileInterval", 60.0),
        )

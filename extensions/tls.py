"""TLS settings shared by the extensions that talk HTTPS to an appliance.

Verification is on by default; a private CA is given with ``caFile``; turning
verification off takes an explicit ``insecureSkipVerify: true``.
"""

from __future__ import annotations

import ssl


def verify_setting(ca_file: str, insecure_skip_verify: bool) -> ssl.SSLContext | bool:
    """The ``verify`` of httpx or ``ssl`` of aiohttp: False, a context trusting ``ca_file``, or True (system CAs)."""
    if insecure_skip_verify:
        return False
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return True

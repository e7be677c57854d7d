"""TLS material for the appliance simulators: one CA, one server certificate.

The F5 and Kemp simulators speak HTTPS like the appliances, and the
provisioners verify certificates by default.  A single CA (made with
``trustme``) signs the server certificate for ``127.0.0.1``/``localhost``, so
tests hand that CA file to a provisioner instead of turning verification off.
Kept in a directory so that both simulators (and ``make env-up``) can share one
CA: the second caller reuses what the first one wrote.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class SimulatorTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def _write(path: Path, data: bytes) -> None:
    # Atomic, so a second simulator starting at the same moment never reads half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def ensure_tls(directory: str | os.PathLike[str] | None = None) -> SimulatorTLS:
    """The CA and server certificate in ``directory``, created when missing.

    Without a directory a fresh temporary one is used (the files live as long
    as the process).
    """
    where = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="interlook-sim-tls-"))
    where.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key = where / "ca.pem", where / "ca-key.pem"
    cert_file, key_file = where / "server.pem", where / "server-key.pem"
    if ca_file.exists() and ca_key.exists():
        ca = trustme.CA.from_pem(ca_file.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="Interlook simulators")
        _write(ca_key, ca.private_key_pem.bytes())
        _write(ca_file, ca.cert_pem.bytes())
    if not (cert_file.exists() and key_file.exists()):
        server = ca.issue_cert(*SERVER_NAMES)
        _write(key_file, server.private_key_pem.bytes())
        _write(cert_file, b"".join(blob.bytes() for blob in server.cert_chain_pems))
    return SimulatorTLS(ca_file=ca_file, cert_file=cert_file, key_file=key_file)

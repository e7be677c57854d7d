"""extensions/kube_api.py: credentials from a kubeconfig or service account, or the official client's Configuration."""

from __future__ import annotations

import base64

import pytest
from kubernetes.client import Configuration

from extensions.kube_api import ClientConfiguration, Credentials, KubeApi


def test_a_kubeconfig_token_is_sent_as_bearer() -> None:
    configuration = Configuration(host="https://127.0.0.1:6443")
    configuration.api_key["BearerToken"] = "Bearer s3cret"  # what the kubeconfig loader sets
    assert KubeApi(ClientConfiguration(configuration))._auth_headers() == {"authorization": "Bearer s3cret"}


def test_a_refresh_hook_runs_before_each_request() -> None:
    configuration = Configuration(host="https://127.0.0.1:6443")
    tokens = iter(["Bearer one", "Bearer two"])

    def refresh(c: Configuration) -> None:  # an in-cluster token rotated on disk
        c.api_key["BearerToken"] = next(tokens)

    configuration.api_key["BearerToken"] = "Bearer zero"
    configuration.refresh_api_key_hook = refresh
    api = KubeApi(ClientConfiguration(configuration))
    assert api._auth_headers() == {"authorization": "Bearer one"}
    assert api._auth_headers() == {"authorization": "Bearer two"}


def test_no_credentials_sends_no_header() -> None:
    assert KubeApi(ClientConfiguration(Configuration(host="https://127.0.0.1:6443")))._auth_headers() == {}
    assert KubeApi(Credentials(server="https://127.0.0.1:6443"))._auth_headers() == {}


def test_a_token_is_sent_with_its_scheme() -> None:
    assert Credentials(server="https://h", token="s3cret").auth_headers() == {"Authorization": "Bearer s3cret"}
    assert Credentials(server="https://h", scheme="Other", token="t").auth_headers() == {"Authorization": "Other t"}


def test_a_username_and_password_are_sent_as_basic() -> None:
    assert Credentials(server="https://h", username="u", password="p").auth_headers() == \
        {"Authorization": "Basic dTpw"}


def test_a_token_file_rotated_on_disk_is_read_again(tmp_path, monkeypatch) -> None:
    """A projected service-account token: the kubelet rewrites it; the next minute's requests send the new one."""
    import extensions.kube_api as kube_api

    token = tmp_path / "token"
    token.write_text("one\n")
    now = [1000.0]
    monkeypatch.setattr(kube_api.time, "monotonic", lambda: now[0])
    credentials = Credentials(server="https://h", token="from-login", token_path=str(token))
    assert credentials.auth_headers() == {"Authorization": "Bearer one"}
    token.write_text("two\n")
    now[0] += 10
    assert credentials.auth_headers() == {"Authorization": "Bearer one"}
    now[0] += kube_api.TOKEN_FILE_REREAD
    assert credentials.auth_headers() == {"Authorization": "Bearer two"}
    token.unlink()
    now[0] += kube_api.TOKEN_FILE_REREAD
    assert credentials.auth_headers() == {"Authorization": "Bearer two"}  # the last one read



@pytest.fixture
async def whoami_server(tmp_path):
    """A TLS server that requires a client certificate and answers with its common name."""
    import ssl

    import trustme
    from aiohttp import web

    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item for rdn in (peer or {}).get("subject", ()) for item in rdn)
        return web.json_response({"user": subject.get("commonName", "")})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client_cert = client_ca.issue_cert("interlook-controller", common_name="interlook-controller")
    try:
        yield f"https://127.0.0.1:{port}", server_ca, client_cert
    finally:
        await runner.cleanup()


async def test_skipping_verification_still_sends_the_client_certificate(tmp_path, whoami_server) -> None:
    """insecure-skip-tls-verify + a client certificate (a common kubeconfig): both must hold."""
    server, _, client_cert = whoami_server  # the server's CA is not trusted by the client
    cert_file, key_file = tmp_path / "client.crt", tmp_path / "client.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in client_cert.cert_chain_pems))
    client_cert.private_key_pem.write_to_path(str(key_file))
    configuration = Configuration(host=server)
    configuration.verify_ssl = False
    configuration.cert_file, configuration.key_file = str(cert_file), str(key_file)
    for credentials in (ClientConfiguration(configuration),
                        Credentials(server=server, insecure=True, certificate_path=str(cert_file),
                                    private_key_path=str(key_file))):
        api = KubeApi(credentials)
        try:
            assert await api.get("/whoami") == {"user": "interlook-controller"}
        finally:
            await api.close()


async def test_kubeconfig_data_fields_give_the_ca_and_the_client_certificate(whoami_server) -> None:
    """certificate-authority-data, client-certificate-data, client-key-data: base64 in the kubeconfig."""
    server, server_ca, client_cert = whoami_server

    def b64(pem: bytes) -> str:
        return base64.b64encode(pem).decode()

    api = KubeApi(Credentials(server=server, ca_data=b64(server_ca.cert_pem.bytes()),
                              certificate_data=b64(b"".join(b.bytes() for b in client_cert.cert_chain_pems)),
                              private_key_data=b64(client_cert.private_key_pem.bytes())))
    try:
        assert await api.get("/whoami") == {"user": "interlook-controller"}
    finally:
        await api.close()

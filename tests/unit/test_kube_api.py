"""extensions/kube_api.py takes its credentials from the official client's Configuration."""

from __future__ import annotations

from kubernetes.client import Configuration

from extensions.kube_api import KubeApi


def test_a_kubeconfig_token_is_sent_as_bearer() -> None:
    configuration = Configuration(host="https://127.0.0.1:6443")
    configuration.api_key["BearerToken"] = "Bearer s3cret"  # what the kubeconfig loader sets
    assert KubeApi(configuration)._auth_headers() == {"authorization": "Bearer s3cret"}


def test_a_refresh_hook_runs_before_each_request() -> None:
    configuration = Configuration(host="https://127.0.0.1:6443")
    tokens = iter(["Bearer one", "Bearer two"])

    def refresh(c: Configuration) -> None:  # an in-cluster token rotated on disk
        c.api_key["BearerToken"] = next(tokens)

    configuration.api_key["BearerToken"] = "Bearer zero"
    configuration.refresh_api_key_hook = refresh
    api = KubeApi(configuration)
    assert api._auth_headers() == {"authorization": "Bearer one"}
    assert api._auth_headers() == {"authorization": "Bearer two"}


def test_no_credentials_sends_no_header() -> None:
    assert KubeApi(Configuration(host="https://127.0.0.1:6443"))._auth_headers() == {}



async def test_skipping_verification_still_sends_the_client_certificate(tmp_path) -> None:
    """insecure-skip-tls-verify + a client certificate (a common kubeconfig): both must hold."""
    import ssl

    import trustme
    from aiohttp import web

    server_ca, client_ca = trustme.CA(), trustme.CA()  # the server's CA is not trusted by the client
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
    cert_file, key_file = tmp_path / "client.crt", tmp_path / "client.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in client_cert.cert_chain_pems))
    client_cert.private_key_pem.write_to_path(str(key_file))
    configuration = Configuration(host=f"https://127.0.0.1:{port}")
    configuration.verify_ssl = False
    configuration.cert_file, configuration.key_file = str(cert_file), str(key_file)
    api = KubeApi(configuration)
    try:
        assert await api.get("/whoami") == {"user": "interlook-controller"}
    finally:
        await api.close()
        await runner.cleanup()

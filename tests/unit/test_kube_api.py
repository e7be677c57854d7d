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

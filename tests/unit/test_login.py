"""Who the controller is to the API server (controller/main.py ``_login``): kopf's own readers, no official client."""

from __future__ import annotations

import logging
from pathlib import Path

import kopf
import pytest
import yaml

import controller.main as main

LOG = logging.getLogger("test")


def _kubeconfig(path: Path, user: dict) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    return path


def test_in_a_pod_the_service_account_and_the_service_address(tmp_path, monkeypatch) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("tok\n")
    (account / "ca.crt").write_text("")
    monkeypatch.setattr(main, "SERVICE_ACCOUNT", str(account))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    info, credentials = main._login(kopf.OperatorSettings(), LOG)
    assert info.server == credentials.server == "https://[fd00::1]:443"
    assert info.token == "tok" and info.ca_path == str(account / "ca.crt")
    # Our requests read the token file again (the kubelet rotates it); kopf logs in again on a 401.
    assert credentials.token_path == str(account / "token")


def test_a_kubeconfig_with_files_relative_to_it(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = _kubeconfig(tmp_path / "kubeconfig", {"client-certificate": "me.crt", "client-key": "/abs/me.key"})
    monkeypatch.setenv("KUBECONFIG", str(config))
    info, credentials = main._login(kopf.OperatorSettings(), LOG)
    assert info.ca_path == str(tmp_path / "ca.crt") == credentials.ca_path
    assert info.certificate_path == str(tmp_path / "me.crt") == credentials.certificate_path
    assert info.private_key_path == "/abs/me.key"
    assert credentials.token_path is None


def test_an_exec_plugin_needs_the_official_client(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = _kubeconfig(tmp_path / "kubeconfig", {"exec": {"command": "aws", "apiVersion": "v1"}})
    monkeypatch.setenv("KUBECONFIG", str(config))
    asked = []
    monkeypatch.setattr(kopf, "login_via_client", lambda **kw: asked.append(kw) or None)  # not installed
    with pytest.raises(kopf.LoginError, match="pip install kubernetes"):
        main._login(kopf.OperatorSettings(), LOG)
    assert asked  # the client's loader was asked, not kopf's plain reader

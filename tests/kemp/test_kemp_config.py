"""The lb.kemplm section: keys of the Go Interlook plus TLS and secret files."""

from __future__ import annotations

from pathlib import Path

from controller.config import Report, Section
from extensions.provisioners.kemplm import KempConfig


def parse(data: dict, base_dir: Path | None = None) -> tuple[KempConfig, Report]:
    report = Report()
    return KempConfig.from_section(Section(data, "lb.kemplm", report, base_dir)), report


def test_go_interlook_keys_load_with_defaults():
    config, report = parse({"endpoint": "https://lm.example/", "username": "bal", "password": "pw"})
    assert not report.errors
    assert (config.endpoint, config.http_port, config.https_port) == ("https://lm.example", 80, 443)
    assert config.insecure_skip_verify is False


def test_password_from_file_and_never_in_repr(tmp_path: Path):
    (tmp_path / "pw").write_text("from-a-secret\n")
    config, report = parse({"endpoint": "https://lm", "username": "bal", "passwordFile": "pw"}, tmp_path)
    assert not report.errors
    assert config.password == "from-a-secret"
    assert "from-a-secret" not in repr(config)


def test_api_key_alone_is_enough():
    config, report = parse({"endpoint": "https://lm", "apiKey": "k"})
    assert not report.errors and config.api_key == "k"


def test_missing_credentials_and_bad_endpoint_are_errors():
    _, report = parse({"endpoint": "lm.example"})
    reasons = " ".join(str(p) for p in report.errors)
    assert "lb.kemplm.endpoint" in reasons and "lb.kemplm.username" in reasons


def test_credentials_in_the_endpoint_are_refused():
    _, report = parse({"endpoint": "https://bal:pw@lm", "username": "bal", "password": "pw"})
    assert any("must not carry credentials" in str(p) for p in report.errors)


def test_insecure_skip_verify_is_a_warning():
    _, report = parse({"endpoint": "https://lm", "username": "u", "password": "p", "insecureSkipVerify": True})
    assert not report.errors and any("insecureSkipVerify" in str(p) for p in report.warnings)

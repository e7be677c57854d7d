"""The dns.consul section (no agent needed)."""

from __future__ import annotations

from pathlib import Path

from controller.config import Report, Section
from extensions import resolve
from extensions.provisioners.consul import ConsulConfig


def _read(data: dict[str, object], base: Path | None = None) -> tuple[ConsulConfig, Report]:
    report = Report()
    section = Section(data, "dns.consul", report, base)
    config = ConsulConfig.from_section(section)
    section.finish()
    return config, report


def test_the_go_programs_section_loads_unchanged():
    config, report = _read({"url": "http://consul.local:8500", "token": "", "domain": ""})
    assert report.errors == [] and report.warnings == []
    assert (config.host, config.port, config.scheme, config.domain) == ("consul.local", 8500, "http", "consul")
    assert resolve("dns.consul") is resolve("provisioner.consul")


def test_a_bare_address_and_https_get_their_ports():
    assert _read({"url": "127.0.0.1:18500"})[0].url == "http://127.0.0.1:18500"
    assert _read({"url": "https://consul.example.com"})[0].port == 443


def test_token_file_is_read_and_never_shown(tmp_path: Path):
    (tmp_path / "token").write_text("s3cr3t-token\n")
    config, report = _read({"tokenFile": "token", "caFile": "ca.pem"}, tmp_path)
    assert config.token == "s3cr3t-token"
    assert "s3cr3t" not in repr(config)
    assert [w.path for w in report.warnings] == ["dns.consul.caFile"]  # missing here, may exist where it runs


def test_ports_come_from_config_then_the_service_then_80_443():
    default, _ = _read({})
    assert (default.public_port(False, 0), default.public_port(True, 0)) == (80, 443)
    assert default.public_port(False, 8080) == 8080
    configured, _ = _read({"servicePort": 81, "tlsServicePort": 8443})
    assert (configured.public_port(False, 8080), configured.public_port(True, 0)) == (81, 8443)


def test_bad_values_are_reported_with_their_path():
    _, report = _read({"url": "ftp://x", "reconcileInterval": "soon", "servicePort": 70000})
    assert sorted(p.path for p in report.errors) == ["dns.consul.reconcileInterval", "dns.consul.servicePort",
                                                     "dns.consul.url"]

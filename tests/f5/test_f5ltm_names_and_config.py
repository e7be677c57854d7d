"""Unit tests (no simulator): BIG-IP names for instances and entries, the ``lb.f5ltm`` section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.config import Report, Section
from extensions.provisioners.f5ltm import F5Config, legacy_object_name, object_name
from extensions.provisioners.f5ltm.client import uri_id
from extensions.provisioners.f5ltm.names import short_instance
from extensions.provisioners.f5ltm.provisioner import Member, normalize_monitor, parse_member_name

VALID_BIGIP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def test_kubernetes_entry_becomes_a_readable_name_with_the_instance():
    assert object_name("site-a", "shop/web") == "interlook_site-a_shop_web"
    assert object_name("il-3f2a9c01de", "kube-system/dns.v2") == "interlook_il-3f2a9c01de_kube-system_dns.v2"


def test_legacy_names_are_those_of_the_version_before_instance_ids():
    assert legacy_object_name("shop/web") == "interlook_shop_web"
    assert legacy_object_name("stack_web").startswith("interlook_stack_web_")


def test_a_long_instance_id_is_shortened_in_names_and_kept_distinct():
    long_a, long_b = "team-payments-" + "a" * 18, "team-payments-" + "b" * 18
    assert len(short_instance(long_a)) <= 16 and "_" not in short_instance(long_a)
    assert object_name(long_a, "shop/web") != object_name(long_b, "shop/web")
    assert short_instance("il-3f2a9c01de") == "il-3f2a9c01de"


@pytest.mark.parametrize("entry", ["stack_web", "a/b/c", "weird name!", "ns/" + "x" * 300, "é/ü", "/", ""])
@pytest.mark.parametrize("instance", ["site-a", "x" * 32])
def test_every_entry_gives_a_valid_bigip_name(entry, instance):
    name = object_name(instance, entry)
    assert VALID_BIGIP_NAME.match(name), name
    assert len(name) <= 150


def test_names_never_collide_between_kubernetes_and_swarm_entries_or_instances():
    entries = ["stack/web", "stack_web", "stack__web", "stack/web_", "a/b/c", "a/b_c", "a_b/c", "a.b/c"]
    names = [object_name(i, e) for i in ("site-a", "site-b", "site") for e in entries]
    assert len(set(names)) == len(names)


def test_names_are_stable():
    assert object_name("site-a", "stack_web") == object_name("site-a", "stack_web")


def test_uri_ids_use_tildes():
    assert uri_id("/Common/Drafts/global-http") == "~Common~Drafts~global-http"
    assert uri_id("/Common/10.0.0.1:80") == "~Common~10.0.0.1:80"


def test_member_names_follow_bigip_ipv4_and_ipv6_forms():
    assert Member("10.0.0.1", 80, 1).name == "10.0.0.1:80"
    assert Member("2001:db8::1", 80, 1).name == "2001:db8::1.80"
    assert parse_member_name("/Common/10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_member_name("2001:db8::1.80") == ("2001:db8::1", 80)


def test_monitors_are_compared_as_full_paths():
    assert normalize_monitor("http") == "/Common/http"
    assert normalize_monitor("/Common/http ") == "/Common/http"
    assert normalize_monitor("http and tcp") == "/Common/http and /Common/tcp"
    assert normalize_monitor("") == ""


def _section(data: dict, tmp_path: Path) -> tuple[Section, Report]:
    report = Report()
    return Section(data, "lb.f5ltm", report, tmp_path), report


def test_config_reads_the_go_keys_with_their_defaults(tmp_path):
    section, report = _section({"httpEndpoint": "10.1.1.245", "username": "admin", "password": "pw"}, tmp_path)
    config = F5Config.from_section(section)
    section.finish()

    assert report.errors == [] and report.warnings == []
    assert config.base_url == "https://10.1.1.245"
    assert (config.auth_provider, config.http_port, config.https_port) == ("tmos", 80, 443)
    assert config.load_balancing_mode == "least-connections-member"
    assert (config.partition, config.update_mode) == ("Common", "vs")
    assert config.object_description_suffix == "(auto generated - do not edit)"
    assert (config.ca_file, config.insecure_skip_verify) == ("", False)
    assert "pw" not in repr(config)


def test_config_reads_every_key(tmp_path, monkeypatch):
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "pw").write_text("from-file\n")
    section, report = _section({
        "httpEndpoint": "https://bigip.example.com:8443", "username": "svc", "passwordFile": "pw",
        "authProvider": "ldap", "httpPort": 8080, "httpsPort": 8443, "monitorName": "/Common/http",
        "loadBalancingMode": "round-robin", "partition": "Apps", "updateMode": "policy",
        "globalHTTPPolicy": "http-pol", "globalSSLPolicy": "ssl-pol", "objectDescriptionSuffix": "(managed)",
        "caFile": "ca.pem", "insecureSkipVerify": False,
    }, tmp_path)
    config = F5Config.from_section(section)
    section.finish()

    assert report.errors == [] and report.warnings == []
    assert config.password == "from-file"
    assert config.base_url == "https://bigip.example.com:8443"
    assert (config.auth_provider, config.http_port, config.https_port) == ("ldap", 8080, 8443)
    assert (config.monitor_name, config.load_balancing_mode, config.partition) == ("/Common/http", "round-robin",
                                                                                    "Apps")
    assert (config.update_mode, config.global_http_policy, config.global_ssl_policy) == ("policy", "http-pol",
                                                                                         "ssl-pol")
    assert config.object_description_suffix == "(managed)"
    assert config.ca_file == str(tmp_path / "ca.pem")


def test_config_errors_are_reported_with_their_key(tmp_path):
    section, report = _section({"updateMode": "pool", "partition": "bad/partition"}, tmp_path)
    F5Config.from_section(section)

    paths = {p.path for p in report.errors}
    assert {"lb.f5ltm.httpEndpoint", "lb.f5ltm.username", "lb.f5ltm.password", "lb.f5ltm.updateMode",
            "lb.f5ltm.partition"} <= paths


def test_policy_mode_needs_a_policy_and_insecure_is_warned(tmp_path):
    section, report = _section({"httpEndpoint": "h", "username": "u", "password": "p", "updateMode": "policy",
                                "insecureSkipVerify": True}, tmp_path)
    F5Config.from_section(section)

    assert any(p.path == "lb.f5ltm.updateMode" for p in report.errors)
    assert any(p.path == "lb.f5ltm.insecureSkipVerify" for p in report.warnings)


def test_config_loads_through_the_known_extensions_map(tmp_path):
    from controller.config import parse_config
    from extensions import KNOWN_EXTENSIONS, resolve

    data = {"core": {"workflowSteps": "provider.kubernetes,lb.f5ltm"},
            "lb": {"f5ltm": {"httpEndpoint": "h", "username": "u", "password": "p"}}}
    config = parse_config(data, resolve, base_dir=tmp_path, all_sections=list(KNOWN_EXTENSIONS.values()))

    assert isinstance(config.extensions["provisioner.f5ltm"], F5Config)

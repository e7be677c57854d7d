"""Config loading and `python -m controller check-config`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from controller.app import read_config
from controller.config import ConfigError
from controller.durations import DurationError, parse_duration

ROOT = Path(__file__).resolve().parents[2]
GO_CONFIG = ROOT / "tests/fixtures/configs/go-interlook.yml"


@pytest.mark.parametrize("text, seconds", [("3s", 3), ("10m", 600), ("1h30m", 5400), ("250ms", 0.25),
                                            ("1.5h", 5400), ("0", 0), (15, 15)])
def test_go_durations_are_parsed(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3 seconds", "10x", "1d", "-5s", "s", True])
def test_bad_durations_are_rejected(text):
    with pytest.raises(DurationError):
        parse_duration(text)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(body))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        read_config(str(path))
    return [str(p) for p in info.value.problems]


def test_a_go_interlook_config_loads_unchanged():
    config = read_config(str(GO_CONFIG))
    assert config.core.workflow_steps == ("provider.swarm", "provisioner.ipalloc", "provisioner.consul",
                                          "provisioner.kemplm")
    assert config.core.service_max_last_updated == 600
    assert config.core.clean_undeployed_after == 5400
    ipalloc = config.extensions["provisioner.ipalloc"]
    (pool,) = ipalloc.pools  # the one pool the Go keys define
    assert pool.name == "default" and pool.range == "10.32.0.10-10.32.0.20"
    # lb.f5ltm is not in the workflow: it is read, not reported as unknown
    assert not [w for w in config.warnings if "unknown" in w.reason and "f5ltm" in w.path]


def test_unknown_step_name_is_an_error_with_its_key_path(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provider.swarm,provisioner.nope"}
    """)
    assert any(p.startswith("core.workflowSteps:") and "provisioner.nope" in p for p in problems(path))


def test_workflow_without_provider_is_an_error(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provisioner.ipalloc"}
        ipam: {ipalloc: {network_cidr: 10.0.0.0/24}}
    """)
    assert any("core.workflowSteps" in p and "no provider" in p for p in problems(path))


def test_missing_section_of_a_step_is_an_error(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provider.kubernetes,provisioner.consul"}
    """)
    assert any(p.startswith("dns.consul:") and "missing" in p for p in problems(path))


def test_bad_duration_is_an_error_with_its_key_path(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provider.kubernetes", serviceWIPTimeout: "90 seconds"}
    """)
    assert any(p.startswith("core.serviceWIPTimeout:") for p in problems(path))


def test_bad_cidr_is_an_error(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provider.kubernetes,provisioner.ipalloc"}
        ipam: {ipalloc: {network_cidr: 10.0.0.300/24}}
    """)
    assert any(p.startswith("ipam.ipalloc.network_cidr:") for p in problems(path))


def test_ip_start_outside_the_cidr_is_an_error(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provider.kubernetes,provisioner.ipalloc"}
        ipam: {ipalloc: {network_cidr: 10.0.0.0/24, ip_start: 10.0.1.5, ip_end: 10.0.2.1}}
    """)
    found = problems(path)
    assert any(p.startswith("ipam.ipalloc.ip_start:") and "outside" in p for p in found)
    assert any(p.startswith("ipam.ipalloc.ip_end:") and "outside" in p for p in found)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, """
        core:
          workflowSteps: provider.kubernetes
          listenPort: [8080
    """)
    assert any("YAML syntax error" in p and "line" in p for p in problems(path))


def test_unknown_keys_are_warnings_naming_the_key_path(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provider.kubernetes,provisioner.ipalloc", colour: blue}
        ipam: {ipalloc: {network_cidr: 10.0.0.0/24, dbfile: x}}
        extra: {}
    """)
    paths = {w.path for w in read_config(str(path)).warnings}
    assert {"core.colour", "ipam.ipalloc.dbfile", "extra"} <= paths


def test_secrets_come_from_env_and_files_and_are_not_echoed(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("s3cret-from-file\n")
    monkeypatch.setenv("CONSUL_TOKEN_TEST", "tok-from-env")
    from controller.config import Report, Section

    report = Report()
    section = Section({"token": "${CONSUL_TOKEN_TEST}", "passwordFile": str(tmp_path / "pw")}, "x", report)
    assert section.secret("token") == "tok-from-env"
    assert section.secret("password") == "s3cret-from-file"
    assert not report.errors


def test_unset_env_reference_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    path = write(tmp_path, """
        core: {workflowSteps: "provider.kubernetes,provisioner.ipalloc"}
        ipam: {ipalloc: {network_cidr: "${NOPE_NOT_SET}"}}
    """)
    assert any("NOPE_NOT_SET" in p for p in problems(path))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller", *args], cwd=ROOT, capture_output=True, text=True)


def test_check_config_prints_the_resolved_workflow():
    result = run_cli("check-config", str(GO_CONFIG))
    assert result.returncode == 0, result.stderr
    assert "provisioner.ipalloc" in result.stdout and "ipam.ipalloc" in result.stdout


def test_check_config_exits_2_with_key_path_and_reason(tmp_path):
    path = write(tmp_path, """
        core: {workflowSteps: "provider.kubernetes,provisioner.ipalloc"}
        ipam: {ipalloc: {network_cidr: nonsense}}
    """)
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert "ipam.ipalloc.network_cidr" in result.stderr


def test_the_embedded_default_config_is_valid():
    result = run_cli("check-config", str(ROOT / "config.yml"))
    assert result.returncode == 0, result.stderr
    assert "provider.kubernetes" in result.stdout and "provisioner.ipalloc" in result.stdout


# Every backend URL goes through one rule (controller/config.py Section.url).
BACKEND_URLS = {
    "lb.f5ltm.httpEndpoint": ("lb:\n  f5ltm: {{httpEndpoint: '{url}', username: admin, password: pw}}\n",
                              "provisioner.f5ltm"),
    "lb.kemplm.endpoint": ("lb:\n  kemplm: {{endpoint: '{url}', username: bal, password: pw}}\n",
                           "provisioner.kemplm"),
    "dns.consul.url": ("dns:\n  consul: {{url: '{url}', token: secret-token}}\n", "provisioner.consul"),
    "provider.swarm.endpoint": ("provider:\n  swarm: {{endpoint: '{url}'}}\n", "provider.swarm"),
}


def backend_config(tmp_path: Path, key: str, url: str) -> Path:
    section, step = BACKEND_URLS[key]
    provider = "provider.swarm" if step != "provider.swarm" else ""
    steps = ",".join(s for s in (provider, step) if s)
    swarm = "provider:\n  swarm: {endpoint: 'unix:///var/run/docker.sock'}\n" if provider else ""
    path = tmp_path / "config.yml"
    path.write_text(f"core: {{workflowSteps: '{steps}'}}\n{swarm}{section.format(url=url)}")
    return path


@pytest.mark.parametrize("key", sorted(BACKEND_URLS))
def test_credentials_in_any_backend_url_are_refused_and_never_echoed(tmp_path, key):
    scheme = "tcp" if key.startswith("provider.swarm") else "https"
    found = problems(backend_config(tmp_path, key, f"{scheme}://admin:hunter2@backend.example:8443"))
    mine = [p for p in found if p.startswith(f"{key}: ")]
    assert mine and "must not carry credentials" in mine[0], found
    assert not any("hunter2" in p or "admin:" in p for p in found)


@pytest.mark.parametrize("key", sorted(k for k in BACKEND_URLS if not k.startswith("provider.swarm")))
def test_plain_http_to_another_machine_is_a_warning(tmp_path, key):
    config = read_config(str(backend_config(tmp_path, key, "http://backend.example:8080")))
    assert any(w.path == key and "plain http://" in w.reason for w in config.warnings), config.warnings


def test_plain_http_to_a_local_agent_is_not_warned_about(tmp_path):
    config = read_config(str(backend_config(tmp_path, "dns.consul.url", "http://127.0.0.1:8500")))
    assert not [w for w in config.warnings if w.path == "dns.consul.url"]


def test_a_bad_url_is_reported_with_its_user_part_masked(tmp_path):
    found = problems(backend_config(tmp_path, "lb.f5ltm.httpEndpoint", "https://root:hunter2@bigip:port"))
    assert "lb.f5ltm.httpEndpoint: not a valid URL: 'https://***@bigip:port'" in found

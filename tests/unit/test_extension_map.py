"""The known-extensions map: one entry per extension, Go aliases, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.extension import PROVIDER, PROVISIONER
from extensions import KNOWN_EXTENSIONS, ExtensionSpec, extension_map, resolve

ROOT = Path(__file__).resolve().parents[2]
GO_CONFIG = ROOT / "tests/fixtures/configs/go-interlook.yml"


@pytest.mark.parametrize("name", sorted(KNOWN_EXTENSIONS))
def test_every_known_extension_loads_and_declares_the_role_its_name_announces(name):
    spec = KNOWN_EXTENSIONS[name]
    config_class, extension_class = spec.load()
    assert callable(config_class.from_section)
    assert spec.kind == (PROVIDER if name.startswith("provider.") else PROVISIONER)
    assert extension_class.sets_public_ip == (name == "provisioner.ipalloc")


@pytest.mark.parametrize("alias, name", [("ipam.ipalloc", "provisioner.ipalloc"), ("dns.consul", "provisioner.consul"),
                                         ("lb.f5ltm", "provisioner.f5ltm"), ("lb.kemplm", "provisioner.kemplm")])
def test_the_go_step_names_resolve_to_the_same_extension(alias, name):
    assert resolve(alias) is resolve(name) is KNOWN_EXTENSIONS[name]


def test_an_unknown_step_resolves_to_nothing():
    assert resolve("provisioner.nope") is None


def test_a_step_name_registered_twice_is_refused():
    twin = ExtensionSpec("provisioner.other", section="other", module="m", config_class="C", extension_class="E",
                         aliases=("dns.consul",))
    with pytest.raises(ValueError, match="'dns.consul' is already registered"):
        extension_map(*KNOWN_EXTENSIONS.values(), twin)


def test_a_swarm_only_config_never_imports_the_kubernetes_provider():
    # A fresh interpreter: this test process may have imported it already.
    script = ("import sys; from controller.app import build_app; build_app(sys.argv[1]); "
              "print(any(m.startswith('extensions.providers.kubernetes') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script, str(GO_CONFIG)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"

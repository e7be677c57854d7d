"""The known-extensions map: every extension Interlook can run, by name.

One explicit dict, no plugin scanning.  Adding an extension is one folder
(its config class and its extension class), one config section, one line
here.  Modules are imported when a workflow uses them, so a Swarm-only
deployment never imports the Kubernetes client and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from controller.config import Section
from controller.extension import BaseExtension, ExtensionContext

Loader = Callable[[], tuple[Any, Any]]


@dataclass(frozen=True)
class ExtensionSpec:
    name: str           # canonical step name, e.g. provisioner.ipalloc
    section: str        # where its config lives, e.g. ipam.ipalloc (the Go program's path)
    load: Loader        # -> (ConfigClass, ExtensionClass)
    needs_section: bool = True

    @property
    def kind(self) -> str:
        return self.name.split(".", 1)[0]

    def parse_config(self, section: Section) -> Any:
        config_class, _ = self.load()
        return config_class.from_section(section)

    def build(self, config: Any, context: ExtensionContext) -> BaseExtension:
        _, extension_class = self.load()
        return extension_class(config, context)


def _kubernetes() -> tuple[Any, Any]:
    from extensions.providers.kubernetes import KubernetesConfig, KubernetesProvider
    return KubernetesConfig, KubernetesProvider


def _swarm() -> tuple[Any, Any]:
    from extensions.providers.swarm import SwarmConfig, SwarmProvider
    return SwarmConfig, SwarmProvider


def _ipalloc() -> tuple[Any, Any]:
    from extensions.provisioners.ipalloc import IPAllocConfig, IPAllocProvisioner
    return IPAllocConfig, IPAllocProvisioner


def _consul() -> tuple[Any, Any]:
    from extensions.provisioners.consul import ConsulConfig, ConsulProvisioner
    return ConsulConfig, ConsulProvisioner


def _f5ltm() -> tuple[Any, Any]:
    from extensions.provisioners.f5ltm import F5Config, F5Provisioner
    return F5Config, F5Provisioner


def _kemplm() -> tuple[Any, Any]:
    from extensions.provisioners.kemplm import KempConfig, KempProvisioner
    return KempConfig, KempProvisioner


KNOWN_EXTENSIONS: dict[str, ExtensionSpec] = {
    "provider.kubernetes": ExtensionSpec("provider.kubernetes", "provider.kubernetes", _kubernetes,
                                         needs_section=False),
    "provider.swarm": ExtensionSpec("provider.swarm", "provider.swarm", _swarm, needs_section=False),
    "provisioner.ipalloc": ExtensionSpec("provisioner.ipalloc", "ipam.ipalloc", _ipalloc),
    "provisioner.consul": ExtensionSpec("provisioner.consul", "dns.consul", _consul),
    "provisioner.f5ltm": ExtensionSpec("provisioner.f5ltm", "lb.f5ltm", _f5ltm),
    "provisioner.kemplm": ExtensionSpec("provisioner.kemplm", "lb.kemplm", _kemplm),
}

# Step names of the Go Interlook, so its configs load unchanged.
ALIASES: dict[str, str] = {
    "ipam.ipalloc": "provisioner.ipalloc",
    "dns.consul": "provisioner.consul",
    "lb.f5ltm": "provisioner.f5ltm",
    "lb.kemplm": "provisioner.kemplm",
}


def resolve(step: str) -> ExtensionSpec | None:
    """The spec for a workflow step name or alias, or None when unknown."""
    return KNOWN_EXTENSIONS.get(ALIASES.get(step, step))


def is_provider(name: str) -> bool:
    return name.startswith("provider.")


def is_ipam(name: str) -> bool:
    return name in ("provisioner.ipalloc",) or name.startswith("ipam.")

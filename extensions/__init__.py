"""The known-extensions map: every extension Interlook can run, by name.

One explicit map, no plugin scanning.  Registering an extension is one
:class:`ExtensionSpec` in :data:`KNOWN_EXTENSIONS`: its step name, the Go
aliases it answers to, its config section, and where its config class and
extension class live.  Modules are imported only when a workflow uses them,
so a Swarm-only deployment never imports the Kubernetes client and the other
way round.  A test (or an embedding program) runs an extra extension by
passing its own map, built with :func:`extension_map`, to
``controller.app.read_config`` and ``build_app``; see docs/EXTENDING.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from controller.config import Section
from controller.extension import BaseExtension, ExtensionContext, Kind


@dataclass(frozen=True)
class ExtensionSpec:
    """Everything the program needs to find, configure and build one extension."""

    # The step name in ``core.workflowSteps``; the core runs the extension
    # under this name, whatever name its class carries.
    name: str
    # Where its config lives, dotted (``ipam.ipalloc`` is ``ipam: {ipalloc: ...}``);
    # a section under the step name itself is accepted too.
    section: str
    # The module holding both classes, imported on first use.
    module: str
    # In ``module``: a class with ``from_section(Section)``, and the
    # extension class, built as ``extension_class(config, context)``.
    config_class: str
    extension_class: str
    # Other step names that mean this one (the Go Interlook's).
    aliases: tuple[str, ...] = ()
    # False: a workflow may use it without a section (its defaults).
    needs_section: bool = True

    def load(self) -> tuple[Any, Any]:
        """(config class, extension class), importing their module now."""
        module = importlib.import_module(self.module)
        return getattr(module, self.config_class), getattr(module, self.extension_class)

    @property
    def kind(self) -> Kind:
        """The role the extension class declares (controller/extension.py)."""
        return self.load()[1].kind

    def parse_config(self, section: Section) -> Any:
        config_class, _ = self.load()
        return config_class.from_section(section)

    def build(self, config: Any, context: ExtensionContext) -> BaseExtension:
        _, extension_class = self.load()
        extension: BaseExtension = extension_class(config, context)
        return extension


def extension_map(*specs: ExtensionSpec) -> dict[str, ExtensionSpec]:
    """A known-extensions map keyed by step name; a name or alias given twice is refused."""
    known: dict[str, ExtensionSpec] = {}
    taken: set[str] = set()
    for spec in specs:
        names = {spec.name, *spec.aliases}
        clash = sorted(names & taken)
        if clash:
            raise ValueError(f"extension {spec.name}: step name {clash[0]!r} is already registered")
        taken |= names
        known[spec.name] = spec
    return known


KNOWN_EXTENSIONS: Mapping[str, ExtensionSpec] = extension_map(
    ExtensionSpec("provider.kubernetes", section="provider.kubernetes", module="extensions.providers.kubernetes",
                  config_class="KubernetesConfig", extension_class="KubernetesProvider", needs_section=False),
    ExtensionSpec("provider.swarm", section="provider.swarm", module="extensions.providers.swarm",
                  config_class="SwarmConfig", extension_class="SwarmProvider", needs_section=False),
    ExtensionSpec("provisioner.ipalloc", section="ipam.ipalloc", module="extensions.provisioners.ipalloc",
                  config_class="IPAllocConfig", extension_class="IPAllocProvisioner", aliases=("ipam.ipalloc",)),
    ExtensionSpec("provisioner.consul", section="dns.consul", module="extensions.provisioners.consul",
                  config_class="ConsulConfig", extension_class="ConsulProvisioner", aliases=("dns.consul",)),
    ExtensionSpec("provisioner.f5ltm", section="lb.f5ltm", module="extensions.provisioners.f5ltm",
                  config_class="F5Config", extension_class="F5Provisioner", aliases=("lb.f5ltm",)),
    ExtensionSpec("provisioner.kemplm", section="lb.kemplm", module="extensions.provisioners.kemplm",
                  config_class="KempConfig", extension_class="KempProvisioner", aliases=("lb.kemplm",)),
)


def resolve(step: str, known: Mapping[str, ExtensionSpec] = KNOWN_EXTENSIONS) -> ExtensionSpec | None:
    """The spec for a workflow step name or alias, or None when unknown."""
    spec = known.get(step)
    if spec is not None:
        return spec
    return next((s for s in known.values() if step in s.aliases), None)

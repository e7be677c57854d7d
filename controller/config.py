"""The YAML configuration, read into typed objects and validated before anything starts.

The Go Interlook's shape is kept so its config files load unchanged: a ``core``
section plus one nested section per extension (``ipam: {ipalloc: ...}``).
Every problem is reported with the key path it was found at; errors stop
start-up, unknown keys and missing files are warnings.
"""

from __future__ import annotations

import builtins
import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence
from urllib.parse import SplitResult, urlsplit, urlunsplit

import yaml

from controller.admission import Rules
from controller.durations import DurationError, parse_duration
from controller.extension import PROVIDER
from controller.instance import instance_id_problem
from controller.selectors import LabelSelector

log = logging.getLogger(__name__)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass
class Report:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, path: str, reason: str) -> None:
        self.errors.append(Problem(path, reason))

    def warn(self, path: str, reason: str) -> None:
        self.warnings.append(Problem(path, reason))


_MISSING = object()


class Section:
    """Typed, path-aware reads from one mapping of the config.

    Each read records the key as known; ``finish()`` warns about the others.
    A bad value is recorded as an error and the default is returned, so that
    one run reports every problem at once.
    """

    def __init__(self, data: Mapping[str, Any] | None, path: builtins.str, report: Report,
                 base_dir: Path | None = None):
        self.data: Mapping[str, Any] = data or {}
        self.path = path
        self.report = report
        self.base_dir = base_dir or Path.cwd()
        self._known: set[builtins.str] = set()

    # -- plumbing -------------------------------------------------------
    def key_path(self, key: builtins.str) -> builtins.str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self.data and self.data[key] is not None

    def _raw(self, key: builtins.str) -> Any:
        self._known.add(key)
        value = self.data.get(key, _MISSING)
        return _MISSING if value is None else value

    def error(self, key: builtins.str, reason: builtins.str) -> None:
        self.report.error(self.key_path(key), reason)

    def warn(self, key: builtins.str, reason: builtins.str) -> None:
        self.report.warn(self.key_path(key), reason)

    def sub(self, key: builtins.str) -> Section:
        raw = self._raw(key)
        if raw is _MISSING:
            raw = {}
        if not isinstance(raw, Mapping):
            self.error(key, f"must be a mapping, got {type(raw).__name__}")
            raw = {}
        return Section(raw, self.key_path(key), self.report, self.base_dir)

    def finish(self) -> None:
        for key in self.data:
            if key not in self._known:
                self.report.warn(self.key_path(str(key)), "unknown key (ignored)")

    # -- typed reads ----------------------------------------------------
    def expand_env(self, key: builtins.str, value: builtins.str) -> builtins.str:
        def sub(match: re.Match[builtins.str]) -> builtins.str:
            name = match.group(1)
            if name not in os.environ:
                self.error(key, f"environment variable {name} is not set")
                return ""
            return os.environ[name]

        return _ENV_REF.sub(sub, value)

    def str(self, key: builtins.str, default: builtins.str = "", *, required: builtins.bool = False,
            choices: Sequence[builtins.str] | None = None) -> builtins.str:
        raw = self._raw(key)
        if raw is _MISSING or raw == "":
            if required:
                self.error(key, "is required")
            return default
        if isinstance(raw, (Mapping, list)):
            self.error(key, f"must be a string, got {type(raw).__name__}")
            return default
        value = self.expand_env(key, str(raw))
        if choices is not None and value not in choices:
            self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def int(self, key: builtins.str, default: builtins.int = 0, *, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> builtins.int:
        raw = self._raw(key)
        if raw is _MISSING or raw == "":
            return default
        if isinstance(raw, str):
            raw = self.expand_env(key, raw)
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = int(raw)
        except (TypeError, ValueError):
            self.error(key, f"must be an integer, got {raw!r}")
            return default
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            self.error(key, f"must be {bounds}, got {value}")
            return default
        return value

    def port(self, key: builtins.str, default: builtins.int = 0) -> builtins.int:
        return self.int(key, default, minimum=0, maximum=65535)

    def bool(self, key: builtins.str, default: builtins.bool = False) -> builtins.bool:
        raw = self._raw(key)
        if raw is _MISSING or raw == "":
            return default
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        self.error(key, f"must be true or false, got {raw!r}")
        return default

    def duration(self, key: builtins.str, default: float) -> float:
        raw = self._raw(key)
        if raw is _MISSING or raw == "":
            return default
        try:
            return parse_duration(raw)
        except DurationError as exc:
            self.error(key, str(exc))
            return default

    def str_list(self, key: builtins.str) -> list[builtins.str]:
        raw = self._raw(key)
        if raw is _MISSING or raw == "":
            return []
        if isinstance(raw, str):
            return [s.strip() for s in raw.split(",") if s.strip()]
        if not isinstance(raw, list) or not all(isinstance(x, (str, int)) for x in raw):
            self.error(key, "must be a list of strings")
            return []
        return [self.expand_env(key, str(x)) for x in raw]

    def file(self, key: builtins.str) -> builtins.str:
        """A path to a file; a missing file is a warning (it may exist where we run)."""
        value = self.str(key)
        if value and not (self.base_dir / value).exists():
            self.warn(key, f"file {value} does not exist here")
        return str(self.base_dir / value) if value and not os.path.isabs(value) else value

    def secret(self, key: builtins.str) -> builtins.str:
        """A credential from ``key`` (``${ENV}`` allowed) or from the file named by ``keyFile``.

        The value itself is never put in a message, a warning or a log line.
        """
        file_key = f"{key}File"
        inline = self.str(key)
        path = self.str(file_key)
        if inline and path:
            self.error(file_key, f"set either {key} or {file_key}, not both")
        if not path:
            return inline
        full = self.base_dir / path if not os.path.isabs(path) else Path(path)
        try:
            return full.read_text().strip()
        except OSError as exc:
            self.warn(file_key, f"cannot read {path}: {exc.strerror or exc}")
            return ""

    def cidr(self, key: builtins.str, *,
             required: builtins.bool = False) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        value = self.str(key, required=required)
        if not value:
            return None
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            self.error(key, f"not a valid CIDR: {exc}")
            return None

    def ip(self, key: builtins.str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        value = self.str(key)
        if not value:
            return None
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            self.error(key, f"not a valid IP address: {value!r}")
            return None


    def selector(self, key: builtins.str) -> LabelSelector:
        """A label selector, in its string or matchLabels/matchExpressions form (controller/selectors.py)."""
        raw = self._raw(key)
        try:
            return LabelSelector.parse(None if raw is _MISSING else raw)
        except ValueError as exc:
            self.error(key, f"not a valid label selector: {exc}")
            return LabelSelector()

    def items(self, key: builtins.str) -> list[Section]:
        """A list of mappings, each read as a section at ``key[index]``; anything else is an error."""
        raw = self._raw(key)
        if raw is _MISSING or raw == []:
            return []
        if not isinstance(raw, list):
            self.error(key, f"must be a list, got {type(raw).__name__}")
            return []
        out = []
        for index, item in enumerate(raw):
            path = f"{self.key_path(key)}[{index}]"
            if not isinstance(item, Mapping):
                self.report.error(path, f"must be a mapping, got {type(item).__name__}")
                continue
            out.append(Section(item, path, self.report, self.base_dir))
        return out

    def url(self, key: builtins.str, default: builtins.str = "", *, schemes: Sequence[builtins.str],
            example: builtins.str, bare_scheme: builtins.str = "", sends: builtins.str = "its credentials",
            user_schemes: Sequence[builtins.str] = (), secret_sent: builtins.bool = True) -> builtins.str:
        """A backend's URL: credentials in it are refused, plain http:// to another machine is warned about.

        A password in a URL ends up wherever the URL is shown (a connection
        error on a Service's annotations and Events, a log line), so the
        config refuses it and says where the credential goes instead; error
        messages show the URL with its user part masked.  ``bare_scheme``
        is put in front of a bare ``host[:port]`` (what the Go clients
        accepted); ``user_schemes`` may name a user (``ssh://deploy@host``),
        never a password.  ``secret_sent`` False (e.g. Consul without an ACL
        token): nothing secret travels, so plain http is not warned about.
        """
        value = self.str(key, default)
        if not value:
            return value
        if "://" not in value and bare_scheme:
            value = f"{bare_scheme}://{value}"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            self.error(key, f"not a valid URL: {redact_url(value)!r}")
            return value
        if parts.password is not None or (parts.username is not None and parts.scheme not in user_schemes):
            self.error(key, f"must not carry credentials ({redact_url(value)!r}): a URL is shown in errors and "
                            f"logs; give them in the section's own keys (username, password or passwordFile, token)")
            return value
        if parts.scheme not in schemes or (parts.scheme not in ("unix", "npipe") and not parts.hostname):
            self.error(key, f"must be a URL like {example}, got {redact_url(value)!r}")
            return value
        if parts.scheme == "http" and secret_sent and not _is_loopback(parts.hostname or ""):
            self.warn(key, f"plain http:// sends {sends} unencrypted over the network; prefer https://")
        return value.rstrip("/")


def redact_url(url: builtins.str) -> builtins.str:
    """The URL with whatever stands before ``@`` in its authority masked, for messages."""
    try:
        parts: SplitResult = urlsplit(url)
    except ValueError:
        return re.sub(r"(://)[^/@]*@", r"\1***@", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _is_loopback(host: builtins.str) -> builtins.bool:
    """Traffic to this host never leaves the machine (a local Consul agent, a tunnel)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# core section


@dataclass(frozen=True)
class CoreConfig:
    log_level: str = "INFO"
    listen_port: int = 8080
    log_file: str = ""
    workflow_steps: tuple[str, ...] = ()
    workflow_entries_file: str = ""
    activity_interval: float = 3.0
    housekeeper_interval: float = 10.0
    service_wip_timeout: float = 90.0
    service_max_last_updated: float = 300.0
    clean_undeployed_after: float = 3600.0
    retry_backoff_base: float = 1.0
    retry_backoff_max: float = 300.0
    listen_address: str = "0.0.0.0"
    # Which Interlook this is (controller/instance.py); empty: derived at start-up.
    instance_id: str = ""
    # Who may publish which names, and how many (controller/admission.py).
    rules: Rules = Rules()


_LOG_LEVELS = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")


class ExtensionSpecLike(Protocol):
    """What the config loader needs to know of an extension (see extensions/__init__.py)."""

    @property
    def name(self) -> str: ...

    @property
    def section(self) -> str: ...

    @property
    def needs_section(self) -> bool: ...

    @property
    def kind(self) -> str: ...

    def parse_config(self, section: Section) -> Any: ...


ResolveStep = Callable[[str], "ExtensionSpecLike | None"]


@dataclass(frozen=True)
class Config:
    core: CoreConfig
    # canonical extension name -> its typed config object
    extensions: Mapping[str, Any]
    warnings: tuple[Problem, ...] = ()
    source: str = ""

    @property
    def workflow(self) -> tuple[str, ...]:
        return self.core.workflow_steps


def _parse_core(section: Section, resolve: ResolveStep) -> tuple[CoreConfig, list[ExtensionSpecLike]]:
    level = section.str("logLevel", "INFO").upper()
    if level not in _LOG_LEVELS:
        section.error("logLevel", f"must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
        level = "INFO"
    steps_raw = section.str("workflowSteps", required=True)
    if section.has("workflow") and not steps_raw:
        steps_raw = section.str("workflow")
    names = [s.strip() for s in steps_raw.split(",") if s.strip()]
    specs: list[ExtensionSpecLike] = []
    canonical: list[str] = []
    for index, name in enumerate(names):
        spec = resolve(name)
        if spec is None:
            section.error("workflowSteps", f"unknown step {name!r} (step {index + 1})")
            continue
        if spec.name in canonical:
            section.error("workflowSteps", f"step {name!r} appears twice")
            continue
        specs.append(spec)
        canonical.append(spec.name)
    if names and not any(spec.kind == PROVIDER for spec in specs):
        section.error("workflowSteps", "the workflow has no provider (add provider.kubernetes or provider.swarm)")
    instance_id = section.str("instanceId").strip()
    if instance_id and (problem := instance_id_problem(instance_id)):
        section.error("instanceId", f"{problem}, got {instance_id!r}")
        instance_id = ""
    core = CoreConfig(
        instance_id=instance_id,
        log_level="WARNING" if level == "WARN" else level,
        listen_port=section.port("listenPort", 8080),
        listen_address=section.str("listenAddress", "0.0.0.0"),
        log_file=section.str("logFile"),
        workflow_steps=tuple(canonical),
        workflow_entries_file=section.str("workflowEntriesFile"),
        activity_interval=section.duration("workflowActivityLauncherInterval", 3.0) or 3.0,
        housekeeper_interval=section.duration("workflowHousekeeperInterval", 10.0) or 10.0,
        service_wip_timeout=section.duration("serviceWIPTimeout", 90.0) or 90.0,
        service_max_last_updated=section.duration("serviceMaxLastUpdated", 300.0) or 300.0,
        clean_undeployed_after=section.duration("cleanUndeployedServiceAfter", 3600.0),
        retry_backoff_base=section.duration("retryBackoffBase", 1.0) or 1.0,
        retry_backoff_max=section.duration("retryBackoffMax", 300.0) or 300.0,
        rules=Rules.from_section(section.sub("rules")),
    )
    section.finish()
    return core, specs


def _section_at(root: Section, dotted: str) -> Section | None:
    """The nested section ``a.b`` of the root, or None when absent."""
    current = root
    for part in dotted.split("."):
        if not current.has(part):
            current._known.add(part)
            return None
        current = current.sub(part)
    return current


def parse_config(data: Any, resolve: ResolveStep, *, source: str = "",
                 base_dir: Path | None = None,
                 all_sections: Sequence[ExtensionSpecLike] = ()) -> Config:
    """Validate a loaded YAML document; raise ConfigError listing every problem."""
    report = Report()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([Problem("", f"the top level must be a mapping, got {type(data).__name__}")])
    root = Section(data, "", report, base_dir)
    core, specs = _parse_core(root.sub("core"), resolve)
    extensions: dict[str, Any] = {}
    used_sections = set()
    for spec in specs:
        section = _section_at(root, spec.section)
        alt = _section_at(root, spec.name) if spec.name != spec.section else None
        if section is None and alt is not None:
            section = alt
        if section is None:
            if getattr(spec, "needs_section", True):
                report.error(spec.section, f"section is missing (needed by workflow step {spec.name})")
                continue
            section = Section({}, spec.section, report, base_dir)
        used_sections.add(spec.section)
        extensions[spec.name] = spec.parse_config(section)
        section.finish()
    # Sections of extensions that are not in the workflow are fine (a
    # config can carry every section); still read their path so they are
    # not reported as unknown.
    for spec in all_sections:
        if spec.section not in used_sections:
            _section_at(root, spec.section)
            if spec.name != spec.section:
                _section_at(root, spec.name)
    _warn_unknown_top_level(root, {s.section.split(".")[0] for s in all_sections}
                            | {s.name.split(".")[0] for s in all_sections} | {"core"})
    if report.errors:
        raise ConfigError(report.errors)
    return Config(core=core, extensions=extensions, warnings=tuple(report.warnings), source=source)


def _warn_unknown_top_level(root: Section, known: set[str]) -> None:
    for key in root.data:
        if key not in known:
            root.report.warn(str(key), "unknown section (ignored)")


def load_yaml(text: str, source: str = "config") -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([Problem("", f"YAML syntax error in {source} at {where}: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"YAML error in {source}: {exc}")]) from None


def load_config(path: str | os.PathLike[str], resolve: ResolveStep,
                all_sections: Sequence[ExtensionSpecLike] = ()) -> Config:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read config file {file}: {exc.strerror or exc}")]) from None
    data = load_yaml(text, str(file))
    # Relative paths are relative to the working directory, as in the Go program.
    return parse_config(data, resolve, source=str(file), base_dir=Path.cwd(),
                        all_sections=all_sections)


def iter_problems(problems: Sequence[Problem]) -> Iterator[str]:
    for p in problems:
        yield str(p)

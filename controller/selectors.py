"""Label selectors, as Kubernetes writes them, for rules that pick namespaces and Services.

Pools and name rules say who they admit with selectors on the labels of a
Namespace or of a Service.  Users know the Kubernetes forms, so both are
read: the string form of ``kubectl -l`` (``team=a,tier in (web,api),!legacy``)
and the ``matchLabels``/``matchExpressions`` mapping of a ``LabelSelector``.
Pure data: no client; the config parsers turn a bad selector into a
``ValueError`` that names what is wrong.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# What a Message carries: label pairs, sorted, hashable (frozen Service).
Labels = tuple[tuple[str, str], ...]

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SET = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*(?:(notin|in)\s*\(([^)]*)\)|(==|=|!=)\s*([^\s,()]*))?\s*$")


def labels_of(mapping: Mapping[str, Any] | None) -> Labels:
    """Labels as a Message carries them: sorted pairs, strings interned (thousands of Services share them)."""
    if not mapping:
        return ()
    return tuple(sorted((sys.intern(str(k)), sys.intern(str(v))) for k, v in mapping.items()))


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # one of _OPERATORS
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if len(self.values) == 1:
            return f"{self.key}{'=' if self.operator == 'In' else '!='}{self.values[0]}"
        return f"{self.key} {self.operator.lower()} ({','.join(self.values)})"


@dataclass(frozen=True)
class LabelSelector:
    """Every requirement must hold; no requirement selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | Labels) -> bool:
        found = dict(labels) if not isinstance(labels, Mapping) else labels
        return all(r.matches(found) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    @classmethod
    def parse(cls, raw: Any) -> LabelSelector:
        """A selector from its string or ``LabelSelector`` mapping form; ValueError when malformed."""
        if raw is None or raw == "" or raw == {}:
            return cls()
        if isinstance(raw, str):
            return cls(tuple(_parse_string(raw)))
        if isinstance(raw, Mapping):
            return cls(tuple(_parse_mapping(raw)))
        raise ValueError(f"a selector is a string like 'team=a' or a mapping with matchLabels/matchExpressions, "
                         f"not {type(raw).__name__}")


def _check_key(key: str) -> str:
    if not _KEY.match(key) or len(key) > 317:
        raise ValueError(f"{key!r} is not a valid label key")
    return key


def _check_values(values: Iterable[Any]) -> tuple[str, ...]:
    out = []
    for value in values:
        text = str(value)
        if not _VALUE.match(text):
            raise ValueError(f"{text!r} is not a valid label value")
        out.append(text)
    return tuple(out)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in selector {text!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ValueError(f"unbalanced '(' in selector {text!r}")
    return parts + [current]


def _parse_string(text: str) -> list[Requirement]:
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        if not part.strip():
            raise ValueError(f"empty requirement in selector {text!r}")
        match = _SET.match(part)
        if not match:
            raise ValueError(f"cannot read {part.strip()!r} in selector {text!r}")
        negated, key, set_op, set_values, eq_op, eq_value = match.groups()
        _check_key(key)
        if negated and (set_op or eq_op):
            raise ValueError(f"'!' only goes before a bare key, not in {part.strip()!r}")
        if set_op:
            values = _check_values(v.strip() for v in set_values.split(",") if v.strip())
            if not values:
                raise ValueError(f"{part.strip()!r} lists no values")
            requirements.append(Requirement(key, "In" if set_op == "in" else "NotIn", values))
        elif eq_op:
            requirements.append(Requirement(key, "NotIn" if eq_op == "!=" else "In", _check_values([eq_value])))
        else:
            requirements.append(Requirement(key, "DoesNotExist" if negated else "Exists"))
    return requirements


def _parse_mapping(raw: Mapping[str, Any]) -> list[Requirement]:
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ValueError(f"unknown selector key(s) {', '.join(sorted(map(str, unknown)))} "
                         "(expected matchLabels, matchExpressions)")
    requirements: list[Requirement] = []
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise ValueError("matchLabels must be a mapping of label key to value")
    for key, value in labels.items():
        requirements.append(Requirement(_check_key(str(key)), "In", _check_values([value])))
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise ValueError("matchExpressions must be a list")
    for index, expression in enumerate(expressions):
        if not isinstance(expression, Mapping):
            raise ValueError(f"matchExpressions[{index}] must be a mapping with key, operator, values")
        key = _check_key(str(expression.get("key", "")))
        operator = str(expression.get("operator", ""))
        if operator not in _OPERATORS:
            raise ValueError(f"matchExpressions[{index}].operator {operator!r} is not one of {', '.join(_OPERATORS)}")
        values = expression.get("values") or []
        if not isinstance(values, list):
            raise ValueError(f"matchExpressions[{index}].values must be a list")
        checked = _check_values(values)
        if operator in ("In", "NotIn") and not checked:
            raise ValueError(f"matchExpressions[{index}]: {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and checked:
            raise ValueError(f"matchExpressions[{index}]: {operator} takes no values")
        requirements.append(Requirement(key, operator, checked))
    return requirements

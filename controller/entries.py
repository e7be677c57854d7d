"""Workflow entries: one per published service, and the table that holds them.

An entry records where a service is in the workflow (``state``), where it
should end (``expected_state``), whether a step is working on it, and the
last error.  The JSON shape is the Go program's, so its entries files and
``/services`` consumers keep working.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Mapping

from controller.files import write_atomic
from controller.messages import Service
from controller.status import DEPLOYED, UNDEPLOYED, EntryStatus, WorkflowPosition

__all__ = ["DEPLOYED", "UNDEPLOYED", "Entry", "dump_entries", "load_entries", "save_entries"]

_ZERO_TIME = "0001-01-01T00:00:00Z"


def _iso(ts: float) -> str:
    if not ts:
        return _ZERO_TIME
    if not math.isfinite(ts):
        # A timestamp that cannot be written would make /services and the
        # entries file fail for every entry: refuse it where it is made visible.
        raise ValueError(f"timestamp {ts!r} is not a point in time")
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _from_iso(text: Any) -> float:
    if not text or text == _ZERO_TIME or str(text).startswith("0001-"):
        return 0.0
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@dataclass(slots=True)  # one per Service, kept for its life: no per-object __dict__
class Entry(WorkflowPosition):
    name: str
    service: Service
    state: str = UNDEPLOYED
    expected_state: str = DEPLOYED
    work_in_progress: bool = False
    wip_time: float = 0.0
    error: str = ""
    info: str = ""
    time_detected: float = field(default_factory=time.time)
    last_update: float = field(default_factory=time.time)
    close_time: float = 0.0
    # Bumped whenever the entry is sent down the workflow again, so a late
    # reply to an earlier round is recognised and ignored.
    generation: int = 0
    attempts: int = 0
    # When the housekeeper retries the failed step; 0 when no retry is
    # scheduled: a provider's error waits for the provider to send the
    # service again (its input changed), never for a clock.
    next_retry: float = 0.0
    refresh_sent: float = 0.0
    error_step: str = ""
    # Its retry was already brought forward once because its step recovered
    # (core._step_recovered); not again until it gets past that step.
    retry_brought_forward: bool = False

    def snapshot(self) -> Entry:
        return replace(self)

    def status(self) -> EntryStatus:
        """The read-only view status sinks get (controller/status.py): its fields, copied."""
        return EntryStatus(**{name: getattr(self, name) for name in _STATUS_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return {
            "work_in_progress": self.work_in_progress,
            "wip_time": _iso(self.wip_time),
            "state": self.state,
            "expected_state": self.expected_state,
            "info": self.info,
            "error": self.error,
            "time_detected": _iso(self.time_detected),
            "last_update": _iso(self.last_update),
            "close_time": _iso(self.close_time),
            "service": self.service.to_dict(),
            "attempts": self.attempts,
            "error_step": self.error_step if self.error else "",
            "next_retry": _iso(self.next_retry) if self.error else _ZERO_TIME,
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Entry:
        service = Service.from_dict(data.get("service") or {"name": name})
        if not service.name:
            service = replace(service, name=name)
        return cls(
            name=name,
            service=service,
            state=str(data.get("state") or UNDEPLOYED),
            expected_state=str(data.get("expected_state") or DEPLOYED),
            work_in_progress=bool(data.get("work_in_progress", False)),
            wip_time=_from_iso(data.get("wip_time")),
            error=str(data.get("error") or ""),
            info=str(data.get("info") or ""),
            time_detected=_from_iso(data.get("time_detected")) or time.time(),
            last_update=_from_iso(data.get("last_update")) or time.time(),
            close_time=_from_iso(data.get("close_time")),
            attempts=int(data.get("attempts") or 0),
            error_step=str(data.get("error_step") or "") if data.get("error") else "",
            next_retry=_from_iso(data.get("next_retry")) if data.get("error") else 0.0,
        )


def dump_entries(entries: Mapping[str, Entry]) -> dict[str, Any]:
    return {name: entry.to_dict() for name, entry in sorted(entries.items())}


def save_entries(path: str, entries: Mapping[str, Entry]) -> None:
    write_atomic(path, json.dumps(dump_entries(entries), indent=1).encode())


def load_entries(path: str) -> dict[str, Entry]:
    """Entries from a file written by us or by the Go program; a missing file is empty."""
    try:
        raw = json.loads(Path(path).read_text() or "{}")
    except FileNotFoundError:
        return {}
    if isinstance(raw, dict) and "entries" in raw and isinstance(raw["entries"], dict):
        raw = raw["entries"]
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of entries")
    return {str(name): Entry.from_dict(str(name), data) for name, data in raw.items() if isinstance(data, dict)}


# What status() copies (computed once: fields() scans the class on every call).
_STATUS_FIELDS = tuple(f.name for f in fields(EntryStatus))

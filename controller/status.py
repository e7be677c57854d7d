"""What a status sink is told about an entry: a read-only view, and nothing of the core.

The core keeps one mutable entry per service and notifies *status sinks*
(the Kubernetes write-back, a test's journal) whenever one changes.  A sink
must neither change the entry behind the core's back nor depend on the
core's bookkeeping, so it gets an :class:`EntryStatus`: a frozen copy of what
the entry shows, taken when it changed.  Like ``messages``, this module knows
nothing of the core, so that extensions may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.messages import Service

# The two states that end a round of the workflow; any other state is the
# name of the step in progress (or the step that failed).
DEPLOYED = "deployed"
UNDEPLOYED = "undeployed"


class WorkflowPosition:
    """What follows from where an entry stands: the same for the core's entry and for its status."""

    __slots__ = ()  # the core's entries keep theirs: no per-object __dict__

    state: str
    expected_state: str
    work_in_progress: bool

    @property
    def reverse(self) -> bool:
        """True while the workflow walks the steps back (the service is going away)."""
        return self.expected_state == UNDEPLOYED

    @property
    def closed(self) -> bool:
        """No step is working on it and it reached an end of the workflow."""
        return self.state in (DEPLOYED, UNDEPLOYED) and not self.work_in_progress

    @property
    def undone(self) -> bool:
        """Every step has been undone: what a finalizer waits for."""
        return self.state == UNDEPLOYED and self.expected_state == UNDEPLOYED and not self.work_in_progress


@dataclass(frozen=True)
class EntryStatus(WorkflowPosition):
    """Where one service stands in the workflow, as of one change."""

    name: str
    service: Service
    state: str = UNDEPLOYED
    expected_state: str = DEPLOYED
    work_in_progress: bool = False
    error: str = ""
    # The step that failed (a provider step: its input is wrong), "" without error.
    error_step: str = ""
    info: str = ""
    wip_time: float = 0.0
    time_detected: float = 0.0
    last_update: float = 0.0
    close_time: float = 0.0
    attempts: int = 0

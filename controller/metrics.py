"""Prometheus metrics of one core: entries by state, messages and errors per extension, step latency."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """A registry per core, so that tests (and several cores in one process) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.entries = Gauge("interlook_entries", "Workflow entries by state", ["state"], registry=self.registry)
        self.messages = Counter("interlook_messages_total", "Messages received from each extension",
                                ["extension", "action"], registry=self.registry)
        self.errors = Counter("interlook_errors_total", "Messages that came back with an error",
                              ["extension"], registry=self.registry)
        self.extension_crashes = Counter("interlook_extension_crashes_total", "Extensions that stopped unexpectedly",
                                         ["extension"], registry=self.registry)
        self.core_task_crashes = Counter("interlook_core_task_crashes_total",
                                         "Background tasks of the core that ended unexpectedly and were restarted",
                                         ["task"], registry=self.registry)
        self.step_latency = Histogram(
            "interlook_step_duration_seconds", "Time a workflow step took to answer", ["step", "direction"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry)

        # The labelled children, looked up once: prometheus_client's labels() validates and locks on every call.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered (a few extensions, steps and actions)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)

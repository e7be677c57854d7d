"""The controller's log lines read exactly as logging.Formatter would write them (controller/app.py).

Its formatter keeps the date and time of the current second instead of
formatting them for every line; what it writes must not change.
"""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from controller.app import _Formatter
from controller.metrics import Metrics

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@given(st.lists(st.floats(min_value=1.6e9, max_value=2.2e9, allow_nan=False), min_size=1, max_size=20))
def test_each_line_reads_as_the_standard_formatter_writes_it(times: list[float]) -> None:
    ours, standard = _Formatter(FORMAT), logging.Formatter(FORMAT)
    for created in sorted(times) + times:  # forwards, then jumping back and forth between seconds
        record = logging.LogRecord("interlook.core", logging.INFO, "", 0, "web is %s", ("deployed",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)


def test_a_labelled_metric_is_looked_up_once_and_counts_as_labels_would() -> None:
    metrics = Metrics()
    first = metrics.child(metrics.messages, "provisioner.consul", "add")
    assert metrics.child(metrics.messages, "provisioner.consul", "add") is first
    first.inc()
    metrics.child(metrics.messages, "provisioner.consul", "delete").inc(2)
    assert metrics.messages.labels("provisioner.consul", "add")._value.get() == 1  # noqa: SLF001
    assert metrics.messages.labels("provisioner.consul", "delete")._value.get() == 2  # noqa: SLF001
    assert b'interlook_messages_total{action="add",extension="provisioner.consul"} 1.0' in metrics.render()

"""The core: drives every service entry through the workflow of extensions.

It owns the entries table, one listener per extension, the housekeeper and
the persistence of entries.  It knows nothing of Kubernetes: results leave
through *status sinks*, callbacks notified with a copy of every changed entry.

Workflow semantics (DESIGN.md): an ``add`` walks the provisioners forwards,
a ``delete`` walks them backwards starting with the step in progress; provider
steps are never sent messages; an error stops the flow at its step and is
retried with capped exponential backoff; nothing is ``deployed`` unless every
step said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any, Awaitable, Callable, Mapping

from controller.admission import RULES_STEP
from controller.config import CoreConfig
from controller.entries import Entry, load_entries, save_entries
from controller.extension import PROVIDER, PROVISIONER, BaseExtension, ExtensionStartError, MessageQueue
from controller.instance import Identity
from controller.messages import Action, Message, Service
from controller.metrics import Metrics
from controller.status import DEPLOYED, UNDEPLOYED, EntryStatus

log = logging.getLogger("interlook.core")

StatusSink = Callable[[EntryStatus], Any]


class Core:
    def __init__(self, config: CoreConfig, extensions: Mapping[str, BaseExtension], *,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None):
        self.config = config
        self.steps: tuple[str, ...] = config.workflow_steps
        missing = [s for s in self.steps if s not in extensions]
        if missing:
            raise ValueError(f"no extension instance for workflow steps {missing}")
        self.extensions = dict(extensions)
        undeclared = [s for s in self.steps if getattr(self.extensions[s], "kind", None) not in (PROVIDER, PROVISIONER)]
        if undeclared:
            raise ValueError(f"extensions {undeclared} declare no kind (PROVIDER or PROVISIONER on their class)")
        # Roles are what each extension declares (controller/extension.py), never guessed from its name.
        self.providers: tuple[str, ...] = tuple(s for s in self.steps if self.extensions[s].kind == PROVIDER)
        self.provisioners: tuple[str, ...] = tuple(s for s in self.steps if s not in self.providers)
        self._public_ip_steps = frozenset(s for s in self.provisioners if self.extensions[s].sets_public_ip)
        self.entries: dict[str, Entry] = {}
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._to_ext: dict[str, MessageQueue] = {n: asyncio.Queue() for n in self.extensions}
        self._from_ext: dict[str, MessageQueue] = {n: asyncio.Queue() for n in self.extensions}
        self._sinks: list[StatusSink] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._ext_tasks: dict[str, asyncio.Task[Any]] = {}
        self._ext_restarts: dict[str, int] = {n: 0 for n in self.extensions}
        self._ext_status: dict[str, str] = {n: "stopped" for n in self.extensions}
        self._dirty = asyncio.Event()
        self._stopping = False
        self._sent_at: dict[tuple[str, int, str], float] = {}
        self._failing_steps: set[str] = set()  # steps that failed since they last worked
        # Background tasks of the core that are not doing their job (crashed
        # and waiting to restart, or failing each round): task -> reason.
        # /health answers 503 while this is not empty.
        self._task_problems: dict[str, str] = {}
        self._task_failures: dict[str, int] = {}
        self.started = False
        # A standby replica (kopf peering) runs nothing; the API says so.
        self.standby = False
        self.identity: Identity | None = None

    # ------------------------------------------------------------------ life
    def add_status_sink(self, sink: StatusSink) -> None:
        self._sinks.append(sink)

    async def start(self) -> None:
        """Start every extension; raise ExtensionStartError naming the first that refuses.

        A core stopped as a standby starts again from nothing: the entries
        (unless an entries file holds them) come back from the providers.
        """
        self._reset()
        if self.config.workflow_entries_file:
            try:
                self.entries = load_entries(self.config.workflow_entries_file)
            except (ValueError, OSError) as exc:
                raise RuntimeError(f"cannot load {self.config.workflow_entries_file}: {exc}") from exc
            for entry in self.entries.values():
                # Whatever was in flight died with the previous process: resend it.
                if entry.work_in_progress:
                    entry.work_in_progress = False
                    entry.next_retry = 0.0
                    entry.error = entry.error or "interrupted by a restart"
            log.info("loaded %d entries from %s", len(self.entries), self.config.workflow_entries_file)
        try:
            for name in self.steps:
                await self._start_extension(name)
        except BaseException:
            await self._stop_extensions()
            raise
        for name in self.steps:
            self._spawn(f"listener {name}", functools.partial(self._listen, name))
        self._spawn("housekeeper", self._housekeeper)
        if self.config.workflow_entries_file:
            self._spawn("persister", self._persister)
        self.started = True
        self._update_gauges()
        # Entries restored from disk that are not where they should be get going again.
        for entry in list(self.entries.values()):
            if entry.state != entry.expected_state and not entry.error:
                self._dispatch_current(entry)

    def _reset(self) -> None:
        self._stopping = False
        self.entries = {}
        self._to_ext = {n: asyncio.Queue() for n in self.extensions}
        self._from_ext = {n: asyncio.Queue() for n in self.extensions}
        self._sent_at.clear()
        self._failing_steps.clear()
        self._task_problems.clear()
        self._task_failures.clear()
        self._dirty.clear()

    async def _start_extension(self, name: str) -> None:
        ext = self.extensions[name]
        task = asyncio.create_task(ext.start(self._to_ext[name], self._from_ext[name]), name=f"ext-{name}")
        ready = asyncio.create_task(ext.wait_ready())
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done and ready.exception() is None:
            self._ext_tasks[name] = task
            self._ext_status[name] = "running"
            task.add_done_callback(functools.partial(self._on_extension_exit, name))
            log.info("extension %s started", name)
            return
        ready.cancel()
        reason = ""
        if ready in done and ready.exception() is not None:
            exc = ready.exception()
            reason = exc.reason if isinstance(exc, ExtensionStartError) else str(exc)
        if task.done():
            exc2 = task.exception() if not task.cancelled() else None
            reason = reason or (str(exc2) if exc2 else "start() returned before it was ready")
        else:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._ext_status[name] = "failed"
        raise ExtensionStartError(name, reason or "unknown reason")

    def _on_extension_exit(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._stopping:
            return
        exc = task.exception() if not task.cancelled() else None
        reason = f"{type(exc).__name__}: {exc}" if exc else "stopped unexpectedly"
        log.error("extension %s crashed: %s", name, reason)
        self._ext_status[name] = f"crashed: {reason}"
        self.metrics.extension_crashes.labels(name).inc()
        for entry in self.entries.values():
            if entry.work_in_progress and entry.state == name:
                self._fail(entry, f"extension {name} crashed: {reason}")
        restart = asyncio.create_task(self._restart_extension(name), name=f"restart {name}")
        restart.add_done_callback(functools.partial(self._on_task_end, f"restart {name}"))
        self._tasks.append(restart)

    async def _restart_extension(self, name: str) -> None:
        while not self._stopping:
            self._ext_restarts[name] += 1
            await asyncio.sleep(self.backoff(self._ext_restarts[name]))
            if self._stopping:
                return
            try:
                await self._start_extension(name)
                return
            except ExtensionStartError as exc:
                log.error("restart of %s failed: %s", name, exc.reason)

    def backoff(self, attempt: int) -> float:
        """base·2^(attempt-1), capped; the exponent too, so a years-long outage cannot overflow a float."""
        exponent = min(max(attempt - 1, 0), 64)
        return float(min(self.config.retry_backoff_base * 2 ** exponent, self.config.retry_backoff_max))

    # ------------------------------------------------------- background tasks
    def _spawn(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._supervise(name, body), name=name)
        task.add_done_callback(functools.partial(self._on_task_end, name))
        self._tasks.append(task)

    async def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run one background task of the core for as long as the core runs.

        Each of them (listeners, housekeeper, persister) loops forever: one
        that ends is a defect, and without it entries stop moving or stop
        being saved while everything looks fine.  So an unexpected end is
        logged with its reason, shown on /health, and the task restarted
        with backoff.
        """
        while True:
            try:
                await body()
                reason = "returned"
            except Exception as exc:
                log.exception("core task %s crashed", name)
                reason = f"{type(exc).__name__}: {exc}"
            if self._stopping:
                return
            self._task_failures[name] = self._task_failures.get(name, 0) + 1
            delay = self.backoff(self._task_failures[name])
            self._task_problems[name] = f"ended unexpectedly ({reason}); restarted in {delay:g}s"
            self.metrics.core_task_crashes.labels(name).inc()
            log.error("core task %s ended unexpectedly (%s); restarting it in %gs", name, reason, delay)
            await asyncio.sleep(delay)

    def _task_ok(self, name: str) -> None:
        """The task did its job once: it is healthy again."""
        if name in self._task_problems:
            del self._task_problems[name]
            self._task_failures.pop(name, None)
            log.info("core task %s works again", name)

    def _task_failing(self, name: str, reason: str) -> None:
        """The task runs but cannot do its job (e.g. the disk is full): say so on /health."""
        self._task_problems[name] = reason

    def _on_task_end(self, name: str, task: asyncio.Task[Any]) -> None:
        """Last resort: a task that escaped its supervisor (cancelled, BaseException) is never silent."""
        if self._stopping:
            return
        exc = None if task.cancelled() else task.exception()
        if exc is None and not task.cancelled():
            return  # finished its job (a restart that succeeded)
        reason = "cancelled" if task.cancelled() else f"{type(exc).__name__}: {exc}"
        log.error("core task %s died: %s", name, reason)
        self._task_problems[name] = f"died: {reason}"

    def health_problems(self) -> dict[str, str]:
        """What keeps this core from doing its job: extension or task -> reason; empty when healthy."""
        problems = {name: s["status"] for name, s in self.extension_status().items() if s["status"] != "running"}
        problems.update(self._task_problems)
        if not self.started:
            problems["core"] = "not started"
        return problems

    async def stop(self, *, abandon: bool = False) -> None:
        """Stop the extensions (letting in-flight steps finish), or cut them short with ``abandon``."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        if abandon:
            for task in self._ext_tasks.values():
                task.cancel()
        await self._stop_extensions()
        if self.config.workflow_entries_file:
            await asyncio.to_thread(save_entries, self.config.workflow_entries_file, self._copy_entries())
        if abandon:
            self.entries = {}  # a standby shows nothing: the active replica's view is the true one
        self.started = False

    async def _stop_extensions(self) -> None:
        for name in reversed(self.steps):
            ext = self.extensions[name]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ext.stop(), timeout=15)
            task = self._ext_tasks.pop(name, None)
            if task and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self._ext_status[name] = "stopped"

    # -------------------------------------------------------------- inbound
    def submit(self, message: Message) -> None:
        """Feed a message as if the extension ``message.sender`` had sent it."""
        self._from_ext[message.sender].put_nowait(message)

    async def _listen(self, name: str) -> None:
        queue = self._from_ext[name]
        while True:
            self._task_ok(f"listener {name}")  # waiting for work is its job
            # The listener tags every message with the extension it came
            # from: whatever an extension wrote there is not trusted.
            message = (await queue.get()).sent_by(name)
            try:
                self.handle_message(message)
            except Exception:  # a bad message must not kill the listener
                log.exception("cannot handle message from %s: %s", name, message)

    def handle_message(self, message: Message) -> None:
        metrics = self.metrics
        metrics.child(metrics.messages, message.sender, message.action.value).inc()
        if message.error:
            metrics.child(metrics.errors, message.sender).inc()
        if self.is_provider(message.sender):
            self._from_provider(message)
        else:
            self._from_provisioner(message)

    def _from_provider(self, message: Message) -> None:
        name = message.service.name
        if not name:
            log.warning("provider %s sent a service without a name", message.sender)
            return
        entry = self.entries.get(name)
        now = self.clock()
        service = message.service.but(provider=message.service.provider or message.sender)
        if message.action in (Action.ADD, Action.UPDATE):
            if message.error:
                # The provider could not read the service (bad annotation...):
                # keep it visible as an error entry, do not provision anything.
                self._refuse(entry, service, message.error, message.sender, message.info, now)
                return
            refusal = self.config.rules.check(service)
            if refusal:
                # Outside what its namespace may publish, or too many names:
                # refused before any step writes anything, for every provider.
                self._refuse(entry, service, refusal, RULES_STEP, "", now)
                return
            self._provider_add(entry, service, now)
        elif message.action == Action.DELETE:
            self._provider_delete(entry, service, now)
        else:
            log.debug("ignoring %s from provider %s", message.action, message.sender)

    def _refuse(self, entry: Entry | None, service: Service, error: str, step: str, info: str, now: float) -> None:
        """The service cannot be published as it is: show why, send nothing to any step.

        ``step`` is the provider that could not read it, or RULES_STEP.  What an
        earlier, valid version of it published stays (nothing is lost on a bad
        edit); no retry is scheduled: the refusal holds until the provider sends
        the service again changed (its input, or its namespace's labels).
        """
        if entry is None:
            entry = Entry(name=service.name, service=service, time_detected=now, last_update=now)
            self.entries[service.name] = entry
        entry.last_update = now
        entry.refresh_sent = 0.0
        if entry.expected_state == UNDEPLOYED and entry.state == UNDEPLOYED:
            # The service is back (with bad input): it is wanted again, so it
            # must not be cleaned up as a closed entry.
            entry.expected_state = DEPLOYED
            entry.close_time = 0.0
        if entry.error != error or entry.error_step != step:
            entry.error = error
            entry.error_step = step
            entry.info = info
            entry.next_retry = 0.0
            self._changed(entry)

    def _provider_add(self, entry: Entry | None, service: Service, now: float) -> None:
        if entry is None:
            entry = Entry(name=service.name, service=service, time_detected=now, last_update=now)
            self.entries[service.name] = entry
            self._start_round(entry, DEPLOYED)
            return
        entry.last_update = now
        entry.refresh_sent = 0.0
        same = entry.service.same_definition(service)
        if same and entry.expected_state == DEPLOYED and not self.refused(entry):
            if entry.state == DEPLOYED and not entry.work_in_progress:
                log.debug("%s unchanged and deployed: refreshed", entry.name)
                return
            if entry.work_in_progress or entry.error:
                return  # already on its way; the retry loop handles errors
        entry.service = entry.service.with_provider_fields(service)
        self._start_round(entry, DEPLOYED)

    def _provider_delete(self, entry: Entry | None, service: Service, now: float) -> None:
        if entry is None:
            # A service we never saw (deleted while we were down, entries not
            # kept): it may have been deployed by an earlier run, so walk every
            # step back.  Steps are idempotent: undoing what is not there is a no-op.
            entry = Entry(name=service.name, service=service, state=DEPLOYED, expected_state=DEPLOYED,
                          time_detected=now, last_update=now)
            self.entries[service.name] = entry
        entry.last_update = now
        if entry.expected_state == UNDEPLOYED and (entry.work_in_progress or entry.state == UNDEPLOYED):
            if entry.state == UNDEPLOYED and not entry.work_in_progress:
                self._changed(entry)  # tell sinks again: a finalizer may be waiting for it
            return
        self._start_round(entry, UNDEPLOYED)

    def _start_round(self, entry: Entry, expected: str) -> None:
        """Send the entry down the workflow again towards ``expected``."""
        entry.expected_state = expected
        entry.error = ""
        entry.error_step = ""
        entry.attempts = 0
        entry.next_retry = 0.0
        entry.retry_brought_forward = False
        entry.close_time = 0.0
        entry.generation += 1
        if expected == DEPLOYED:
            first = self.provisioners[0] if self.provisioners else None
            if first is None:
                self._close(entry)
                return
            entry.state = first
        else:
            # Walk back from the last step, whatever step is in progress: a
            # later step may still hold what an earlier round (or an earlier
            # process, before a restart) put there.  Undoing what is not there
            # is a no-op, so this costs a read, never a wrong delete.
            if not self.provisioners:
                self._close(entry)
                return
            entry.state = self.provisioners[-1]
        self._send(entry)

    def _from_provisioner(self, message: Message) -> None:
        entry = self.entries.get(message.service.name)
        step = message.sender
        if entry is None:
            log.debug("reply from %s for unknown entry %s", step, message.service.name)
            return
        current = message.extra.get("generation") == str(entry.generation)
        if not entry.work_in_progress or entry.state != step or not current:
            log.debug("stale reply from %s for %s ignored", step, entry.name)
            return
        self._observe_latency(entry, step)
        if message.error:
            self._fail(entry, message.error)
            return
        entry.work_in_progress = False
        entry.wip_time = 0.0
        if not self.refused(entry):
            # A refusal that came while this round was in flight is about the
            # newest input: the round's success does not answer it.
            entry.error = ""
            entry.error_step = ""
        entry.attempts = 0
        entry.retry_brought_forward = False
        entry.info = message.info or entry.info
        if step in self._failing_steps:
            self._failing_steps.discard(step)
            self._step_recovered(step)
        if step in self._public_ip_steps:
            entry.service = entry.service.but(public_ip="" if entry.reverse else message.service.public_ip)
        self._advance(entry)

    def _step_recovered(self, step: str) -> None:
        """A step that failed works again: retry now the entries waiting out a backoff on it.

        After an outage of a backend (Consul down, an appliance rebooting) the
        entries that failed meanwhile would each wait out their own doubling
        delay, up to ``retryBackoffMax``; the first success says the backend
        is back.  Each entry is brought forward once until it gets past the
        step, so one that fails for its own reason (a bad name, a conflict)
        keeps its normal backoff and no success of another entry can make it
        retry in a loop.
        """
        now = self.clock()
        brought = 0
        for entry in self.entries.values():
            if (entry.error and entry.error_step == step and not entry.work_in_progress
                    and not entry.retry_brought_forward and entry.next_retry > now):
                entry.next_retry = now
                entry.retry_brought_forward = True
                brought += 1
        if brought:
            log.info("%s works again: retrying now the %d entries that failed on it", step, brought)

    def _observe_latency(self, entry: Entry, step: str) -> None:
        if entry.wip_time:
            metrics = self.metrics
            metrics.child(metrics.step_latency, step, "delete" if entry.reverse else "add").observe(
                max(self.clock() - entry.wip_time, 0.0))

    def _advance(self, entry: Entry) -> None:
        index = self.provisioners.index(entry.state)
        nxt = index - 1 if entry.reverse else index + 1
        if 0 <= nxt < len(self.provisioners):
            entry.state = self.provisioners[nxt]
            self._send(entry)
        else:
            self._close(entry)

    def _close(self, entry: Entry) -> None:
        entry.state = entry.expected_state
        entry.work_in_progress = False
        entry.wip_time = 0.0
        entry.close_time = self.clock()
        log.info("%s is %s", entry.name, entry.state)
        if entry.state == UNDEPLOYED and self.refused(entry):
            # Walked back, but the provider has since asked for it (refused):
            # it is wanted, as _refuse makes a closed entry, not one to clean up.
            entry.expected_state = DEPLOYED
            entry.close_time = 0.0
        self._changed(entry)

    def _send(self, entry: Entry) -> None:
        step = entry.state
        entry.work_in_progress = True
        entry.wip_time = self.clock()
        action = Action.DELETE if entry.reverse else Action.ADD
        message = Message(action=action, service=entry.service, sender="core", destination=step,
                          extra={"generation": str(entry.generation)})
        self._to_ext[step].put_nowait(message)
        self._changed(entry)

    def _fail(self, entry: Entry, error: str) -> None:
        entry.work_in_progress = False
        entry.wip_time = 0.0
        entry.error = error
        entry.error_step = entry.state
        entry.attempts += 1
        self._failing_steps.add(entry.state)
        delay = self.backoff(entry.attempts)
        entry.next_retry = self.clock() + delay
        entry.generation += 1  # a late reply to the failed attempt is stale
        log.warning("%s failed at %s (attempt %d, retry in %.0fs): %s",
                    entry.name, entry.state, entry.attempts, delay, error)
        self._changed(entry)

    def _dispatch_current(self, entry: Entry) -> None:
        """(Re)send the entry to the step it is at; used by retries and after a reload."""
        if entry.state in self.provisioners:
            entry.generation += 1
            self._send(entry)
        elif entry.state in (DEPLOYED, UNDEPLOYED) and entry.state != entry.expected_state:
            self._start_round(entry, entry.expected_state)

    # -------------------------------------------------------------- housekeeper
    async def _housekeeper(self) -> None:
        period = min(self.config.activity_interval, self.config.housekeeper_interval, 1.0)
        while True:
            await asyncio.sleep(period)
            try:
                self.housekeep()
            except Exception as exc:
                log.exception("housekeeper pass failed")
                self._task_failing("housekeeper", f"a pass failed: {type(exc).__name__}: {exc}")
                continue
            self._task_ok("housekeeper")

    def housekeep(self) -> None:
        """One pass: time out stuck steps, retry errors, refresh stale entries, drop old ones."""
        now = self.clock()
        for entry in list(self.entries.values()):
            if entry.work_in_progress:
                if now - entry.wip_time > self.config.service_wip_timeout:
                    self._fail(entry, f"step {entry.state} did not answer within "
                                      f"{self.config.service_wip_timeout:g}s")
                continue
            if entry.error:
                if now >= entry.next_retry and not self.refused(entry):
                    log.info("retrying %s at %s (attempt %d)", entry.name, entry.state, entry.attempts + 1)
                    self._dispatch_current(entry)
                continue
            if entry.state == DEPLOYED and entry.expected_state == DEPLOYED:
                if (now - entry.last_update > self.config.service_max_last_updated
                        and now - entry.refresh_sent > self.config.service_max_last_updated):
                    self._send_refresh(entry)
            elif entry.state == UNDEPLOYED and entry.expected_state == UNDEPLOYED:
                if entry.close_time and now - entry.close_time > self.config.clean_undeployed_after:
                    log.info("removing closed entry %s", entry.name)
                    del self.entries[entry.name]
                    self._mark_dirty()
        self._update_gauges()

    def _send_refresh(self, entry: Entry) -> None:
        provider = entry.service.provider if entry.service.provider in self._to_ext else None
        if provider is None or not self.is_provider(provider):
            provider = self.providers[0] if self.providers else None
        if provider is None:
            return
        entry.refresh_sent = self.clock()
        self._to_ext[provider].put_nowait(
            Message(action=Action.REFRESH, service=entry.service, sender="core", destination=provider))

    # -------------------------------------------------------------- outbound
    def _changed(self, entry: Entry) -> None:
        self._mark_dirty()
        if not self._sinks:
            return
        status = entry.status()
        for sink in self._sinks:
            try:
                result = sink(status)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    task.add_done_callback(_log_sink_error)
            except Exception:
                log.exception("status sink failed for %s", entry.name)

    def _mark_dirty(self) -> None:
        self._dirty.set()

    def _copy_entries(self) -> dict[str, Entry]:
        return {name: entry.snapshot() for name, entry in self.entries.items()}

    async def _persister(self) -> None:
        """Write the entries file after every change; bursts of changes coalesce into one write.

        A write that fails (disk full, an entry that cannot be written) is
        retried with backoff and shown on /health until one succeeds: the
        file is the only state of a Swarm-only deployment.
        """
        path = self.config.workflow_entries_file
        failures = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await asyncio.to_thread(save_entries, path, self._copy_entries())
            except Exception as exc:
                failures += 1
                if isinstance(exc, OSError):
                    log.error("cannot write %s: %s", path, exc)
                else:  # not the disk: an entry the file cannot hold, a defect
                    log.exception("cannot write %s", path)
                self._task_failing("persister", f"cannot write {path}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(self.backoff(failures))
                self._dirty.set()
                continue
            failures = 0
            self._task_ok("persister")

    def _update_gauges(self) -> None:
        counts: dict[str, int] = {}
        for entry in self.entries.values():
            key = "error" if entry.error else entry.state if entry.state in (DEPLOYED, UNDEPLOYED) else "in_progress"
            counts[key] = counts.get(key, 0) + 1
        for state in ("deployed", "undeployed", "in_progress", "error"):
            self.metrics.entries.labels(state).set(counts.get(state, 0))

    # -------------------------------------------------------------- views
    def is_provider(self, step: str) -> bool:
        return step in self.providers

    def refused(self, entry: Entry) -> bool:
        """Its error is about the input (unreadable, or refused by the rules): only a new input clears it."""
        return bool(entry.error) and (self.is_provider(entry.error_step) or entry.error_step == RULES_STEP)

    def extension_status(self) -> dict[str, dict[str, Any]]:
        return {name: {"status": self._ext_status[name], "restarts": self._ext_restarts[name],
                       "kind": self.extensions[name].kind}
                for name in self.steps}

    def live_services(self) -> dict[str, Service]:
        """Services whose entry still wants to be deployed (for orphan clean-up)."""
        return {n: e.service for n, e in self.entries.items()
                if e.expected_state == DEPLOYED or e.state != UNDEPLOYED}

    def entry(self, name: str) -> Entry | None:
        return self.entries.get(name)


def _log_sink_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("status sink failed: %s", task.exception())

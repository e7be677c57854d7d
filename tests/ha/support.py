"""What the HA tests share: replicas told apart, and every record Interlook keeps, read to compare.

A :class:`Replica` is one controller process with its own API user (its
requests stand apart in the audit log) and its own recording proxies in front
of Consul and the F5 simulator (tests/ha/proxy.py), so each of its writes, to
any backend, is attributed to it.

:func:`records` reads everything an instance keeps outside the Service:
IPAllocation objects (with their resourceVersion), Consul nodes with their
services and checks (with their ModifyIndex), F5 virtual servers, pools,
members and nodes (with their generation).  Two reads compare equal exactly
when nothing was written in between; :func:`changes` says what differs.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from extensions.kit.ownership import parse_text
from extensions.provisioners.consul.records import INSTANCE_KEY, MANAGED_KEY
from tests.chaos.harness import ConsulServer, Controller, ControlPlane, F5Process, Kube, Request, read_audit
from tests.ha.proxy import RecordingProxy

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
PEERINGS = "clusterkopfpeerings"
CONSUL_SWEEP = "/v1/catalog/nodes"   # what a Consul sweep pass lists (node-meta interlook-instance)
F5_SWEEP = "/mgmt/tm/ltm/pool"       # what an F5 sweep pass lists


@dataclass
class Replica:
    """One controller process: its API user, its proxies to Consul and the F5, its HTTP API."""

    user: str
    controller: Controller
    consul: RecordingProxy
    f5: RecordingProxy
    started: float = 0.0          # epoch seconds of its (last) start

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.controller.listen_port}"

    def version(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api}/version", timeout=5).json())

    def role(self) -> str:
        """``active`` / ``standby``, or "" when the process does not answer (dead, starting)."""
        if not self.controller.alive:
            return ""
        try:
            return str(self.version().get("role", ""))
        except (httpx.HTTPError, ValueError):
            return ""

    def start(self, wait: bool = True) -> None:
        self.started = time.time()
        self.controller.start(wait=wait)

    def kill(self) -> None:
        self.controller.kill()

    def log_tail(self, size: int = 5000) -> str:
        text = self.controller.log_file.read_text(errors="replace") if self.controller.log_file.exists() else ""
        return f"--- {self.user} log tail ({self.controller.log_file}) ---\n{text[-size:]}"


async def wait_role(replica: Replica, role: str, timeout: float) -> None:
    """Wait until ``replica`` says ``role`` (a deadline, not a measure)."""
    deadline = time.monotonic() + timeout
    while replica.role() != role:
        if not replica.controller.alive:
            raise AssertionError(f"{replica.user} exited ({replica.controller.returncode})\n{replica.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{replica.user} is not {role} after {timeout:.0f}s (it says "
                                 f"{replica.role()!r})\n{replica.log_tail()}")
        await asyncio.sleep(0.5)


async def wait_sweeps(replica: Replica, passes: int, since: float, timeout: float) -> None:
    """Wait until ``replica`` has run ``passes`` Consul and F5 sweep passes since ``since``, seen on its proxies.

    The ipalloc sweep costs no request (it reads its in-memory table): it
    runs on the same interval, so the same wait covers as many of its passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        consul = replica.consul.count("GET", CONSUL_SWEEP, since)
        f5 = replica.f5.count("GET", F5_SWEEP, since)
        if consul >= passes and f5 >= passes:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{replica.user}: {consul} Consul and {f5} F5 sweep passes after {timeout:.0f}s, "
                                 f"{passes} wanted\n{replica.log_tail()}")
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------ the audit log


async def audit_barrier(plane: ControlPlane, admin: Kube, timeout: float = 30) -> None:
    """Return once every request the API server received so far is in its audit log.

    An admin GET of a unique name, then wait for it in the log: the log is
    written in order, so whatever came before it is there too.
    """
    name = f"ha-barrier-{uuid.uuid4().hex[:8]}"
    await admin.request("GET", f"/api/v1/namespaces/default/configmaps/{name}", ok=(404,))
    deadline = time.monotonic() + timeout
    while not any(r.name == name for r in read_audit(plane.audit_log)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the audit log did not show the barrier request within {timeout:.0f}s")
        await asyncio.sleep(0.2)


def is_peering_keepalive(request: Request) -> bool:
    """kopf's own keepalive: a PATCH of the peering object's status, which every peer makes, standby or not."""
    return request.verb == "patch" and request.resource == PEERINGS


def api_writes(plane: ControlPlane, user: str, since: float = 0.0) -> list[Request]:
    """``user``'s write requests received from ``since`` on, kopf's peering keepalives apart."""
    return [r for r in read_audit(plane.audit_log)
            if r.user == user and r.time >= since and r.verb in WRITE_VERBS and not is_peering_keepalive(r)]


def describe(requests: list[Request]) -> str:
    return "\n".join(f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''} {r.name}"
                     for r in requests[:30])


# ------------------------------------------------------------------ every record, to compare


@dataclass
class Records:
    allocations: dict[str, Any] = field(default_factory=dict)   # IPAllocation name -> metadata + spec
    consul: dict[str, Any] = field(default_factory=dict)        # node -> node, services, checks
    f5: dict[str, Any] = field(default_factory=dict)            # kind + path -> object

    def __len__(self) -> int:
        return len(self.allocations) + len(self.consul) + len(self.f5)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def _consul_records(consul: ConsulServer, instance: str | None) -> dict[str, Any]:
    meta = f"{INSTANCE_KEY}:{instance}" if instance is not None else f"{MANAGED_KEY}:true"
    nodes = _get_json(f"{consul.url}/v1/catalog/nodes?node-meta={urllib.parse.quote(meta)}")
    out: dict[str, Any] = {}
    for node in nodes:
        name = urllib.parse.quote(node["Node"])
        out[node["Node"]] = {"catalog": _get_json(f"{consul.url}/v1/catalog/node/{name}"),
                             "checks": _get_json(f"{consul.url}/v1/health/node/{name}")}
    return out


def _f5_records(f5: F5Process, instance: str | None) -> dict[str, Any]:
    state = f5._sim("state")  # noqa: SLF001 -- the harness's own /__sim reader

    def ours(obj: dict[str, Any]) -> bool:
        mark = parse_text(obj.get("description"))
        return mark is not None and (instance is None or mark.instance == instance)

    out: dict[str, Any] = {}
    for kind in ("virtuals", "pools", "nodes"):
        for path, obj in (state.get(kind) or {}).items():
            if ours(obj):
                out[f"{kind} {path}"] = obj
    for pool, members in (state.get("members") or {}).items():
        if f"pools {pool}" in out:
            out[f"members {pool}"] = members
    return out


async def records(kube: Kube, consul: ConsulServer, f5: F5Process, instance: str | None = None) -> Records:
    """Every record Interlook keeps (of ``instance`` when given) in the cluster, Consul and the F5."""
    allocations = {}
    for item in await kube.ip_allocations():
        spec = item.get("spec") or {}
        if instance is None or spec.get("instance") == instance:
            meta = item["metadata"]
            allocations[meta["name"]] = {"resourceVersion": meta["resourceVersion"], "labels": meta.get("labels"),
                                         "spec": spec}
    return Records(allocations=allocations,
                   consul=await asyncio.to_thread(_consul_records, consul, instance),
                   f5=await asyncio.to_thread(_f5_records, f5, instance))


def changes(before: Records, after: Records) -> list[str]:
    """What differs between two reads: records gone, new, or rewritten."""
    out: list[str] = []
    for where in ("allocations", "consul", "f5"):
        old, new = getattr(before, where), getattr(after, where)
        out += [f"{where}: {key} removed" for key in sorted(set(old) - set(new))]
        out += [f"{where}: {key} appeared" for key in sorted(set(new) - set(old))]
        out += [f"{where}: {key} rewritten" for key in sorted(set(old) & set(new)) if old[key] != new[key]]
    return out

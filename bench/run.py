"""`make bench`: how fast Interlook publishes, deletes and idles, measured in one run.

Starts its own private components (tests/chaos/harness.py): etcd +
kube-apiserver with an audit log, a Consul server, the F5 simulator; runs the
controller as ``kopf run --standalone -A controller/main.py`` with the workflow
``provider.kubernetes,provisioner.ipalloc,provisioner.consul,provisioner.f5ltm``
and measures, in this order:

floor     the latency of one merge-PATCH of a Service's annotations (sequential)
burst     BENCH_SERVICES Services (each with an EndpointSlice on BENCH_NODES
          Nodes) created at BENCH_RATE per second; per Service, from its
          create call returning to the watch event showing
          ``interlook.io/state: deployed``
delete    all of them deleted at once; until every finalizer is released and
          nothing is left in Consul, on the simulator, or in IPAllocations
cost      the controller's API requests (audit log, its own client certificate)
          per Service during burst and delete; its CPU seconds and peak RSS
scale     BENCH_IDLE Services created and deployed, then BENCH_STEADY_S seconds
          of idling: RSS, CPU per minute, API requests (and LISTs) per minute
restart   with those BENCH_IDLE Services deployed: the controller stopped with
          SIGTERM then started, then SIGKILLed and started (nothing changed
          meanwhile), then SIGKILLed again while BENCH_RESTART_CHANGED
          Services change (new host names, endpoints moved): until the
          controller confirms every entry ``deployed`` (its /metrics), the
          writes to the API server (audit log), to Consul (a counting proxy
          in front of it) and to the F5 simulator, the requests to Consul and
          the F5, CPU seconds and peak RSS of the new process; then that the
          changed Services were repaired

Writes bench/results/bench-<time>.json, bench/results/bench-<time>.png (and
``latest.*`` copies); the last line printed is one JSON object of headline figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.chaos.harness import (
    DRIVER_USER,
    PREFIX,
    ROOT,
    STATE_KEY,
    ConsulServer,
    Controller,
    ControlPlane,
    F5Process,
    Kube,
    annotations_of,
    classify,
    free_port,
    read_audit,
    service_body,
    write_config,
)

RESULTS = ROOT / "bench" / "results"
# A fixed piece of the controller's kind of work (JSON of a Service, dict walks, small calls), timed in CPU.
CALIBRATION = """
import json, time
body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-00001", "namespace": "bench",
        "uid": "2f1c", "resourceVersion": "1234", "annotations": {f"interlook.io/k{i}": "v" * 40 for i in range(8)},
        "managedFields": [{"manager": f"m{i}", "operation": "Update", "fieldsV1": {f"f:{j}": {} for j in range(20)}}
                          for i in range(3)]},
        "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
text = json.dumps(body)
def summary(b):
    meta = b.get("metadata") or {}
    return {"name": meta.get("name"), "annotations": {k: v for k, v in meta["annotations"].items()
                                                      if k.startswith("interlook.io/")}}
start = time.process_time()
for _ in range(20000):
    summary(json.loads(text))
    json.dumps(body["metadata"]["annotations"])
print((time.process_time() - start) * 1000)
"""
NAMESPACE = "bench"
IDLE_NAMESPACE = "bench-idle"
# BENCH_IDLE (10,000) Services live in one namespace: far over the default
# ipam.ipalloc.maxAddressesPerNamespace (256), which is a guard for shared sites.
NO_LIMIT = 0
# The controller runs as users run it: with the image's package set (scripts/bench.sh makes
# .venv-runtime with `pip install -c constraints.txt -e .`: no test or bench packages, no
# official Kubernetes client), while the driver uses the suite's .venv.
CONTROLLER_VENV = Path(os.environ.get("BENCH_CONTROLLER_VENV") or ROOT / ".venv")


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class CountingProxy:
    """Consul behind a counter: every request the controller sends, by method, then passed on as it is."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.by_method: dict[str, int] = {}
        self.port = 0
        self._runner: Any = None
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        return sum(self.by_method.values())

    @property
    def writes(self) -> int:
        return sum(n for method, n in self.by_method.items() if method != "GET")

    def reset(self) -> None:
        self.by_method.clear()

    async def start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._client = aiohttp.ClientSession(auto_decompress=False)

        async def forward(request: web.Request) -> web.StreamResponse:
            self.by_method[request.method] = self.by_method.get(request.method, 0) + 1
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            async with self._client.request(request.method, self.upstream + request.path_qs, data=body or None,
                                            headers=headers) as answer:
                content = await answer.read()
                keep = {k: v for k, v in answer.headers.items()
                        if k.lower() in ("content-type", "x-consul-index", "x-consul-knownleader",
                                         "x-consul-lastcontact", "content-encoding")}
                return web.Response(status=answer.status, body=content, headers=keep)

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


class DeployWatch:
    """Follows one namespace's Services: when each was first seen deployed, and when each disappeared."""

    def __init__(self, kube: Kube, namespace: str):
        self.kube = kube
        self.namespace = namespace
        self.deployed_at: dict[str, float] = {}
        self.deleted_at: dict[str, float] = {}
        self.errors_seen: set[str] = set()
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = await self.kube.get(f"/api/v1/namespaces/{self.namespace}/services?limit=1")
        rv = listing["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._run(rv))

    async def _run(self, rv: str) -> None:
        async for now, kind, obj in self.kube.watch(f"/api/v1/namespaces/{self.namespace}/services", rv):
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self.deleted_at.setdefault(name, now)
            else:
                state = annotations_of(obj).get(STATE_KEY)
                if state == "deployed":
                    self.deployed_at.setdefault(name, now)
                elif state == "error":
                    self.errors_seen.add(name)
            self.changed.set()

    async def until(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                pass
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class Bench:
    def __init__(self) -> None:
        self.services = env_int("BENCH_SERVICES", 1000)
        self.rate = env_float("BENCH_RATE", 50.0)
        self.idle = env_int("BENCH_IDLE", 10000)
        self.steady_s = env_float("BENCH_STEADY_S", 120.0)
        self.node_count = env_int("BENCH_NODES", 3)
        self.floor_samples = env_int("BENCH_FLOOR_SAMPLES", 200)
        self.restart_changed = env_int("BENCH_RESTART_CHANGED", 6)
        self.restart = env_int("BENCH_RESTART", 1)
        self.listen_port = 0
        self.state = Path(tempfile.mkdtemp(prefix="interlook-bench-"))
        self.plane = ControlPlane(self.state / "kube", audit=True)
        self.consul = ConsulServer(self.state / "consul", dev=True)
        self.f5 = F5Process(self.state / "f5")
        self.controller: Controller | None = None
        self.windows: dict[str, tuple[float, float]] = {}
        self.result: dict[str, Any] = {}
        self.cpu_marks: dict[str, float] = {}

    # -- components ---------------------------------------------------------------
    def start_components(self) -> None:
        log(f"starting etcd + kube-apiserver (audit log), Consul, the F5 simulator under {self.state}")
        self.plane.start()
        self.consul.start()
        self.f5.start()
        port = self.listen_port = free_port()
        config = write_config(self.state / "config.yml", consul_url=self.consul.url, f5=self.f5,
                              namespaces=(NAMESPACE, IDLE_NAMESPACE), listen_port=port,
                              max_addresses_per_namespace=NO_LIMIT)
        self.controller = Controller(config, self.plane.kubeconfig("interlook-controller"),
                                     self.state / "controller.log", port, venv=CONTROLLER_VENV)

    def stop_components(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.f5.stop()
        self.consul.stop()
        self.plane.stop()

    def cpu(self) -> float:
        assert self.controller is not None
        return self.controller.cpu_seconds()

    # -- phases -----------------------------------------------------------------------
    async def floor(self, kube: Kube) -> None:
        """One merge-PATCH of a Service's annotations, sequentially, on an unmanaged Service."""
        body = service_body("floor", hosts=None, port=None, service_type="ClusterIP")
        await kube.create(f"/api/v1/namespaces/{NAMESPACE}/services", body)
        samples = []
        await asyncio.sleep(1)  # its ADDED event is handled before the count starts
        cpu0 = self.cpu()
        for i in range(self.floor_samples):
            started = time.perf_counter()
            await kube.patch(f"/api/v1/namespaces/{NAMESPACE}/services/floor",
                             {"metadata": {"annotations": {"bench/n": str(i)}}})
            samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(1)  # the last event is handled
        # What one watch event costs the controller when it has nothing to do (kopf + our handler's no-op).
        event_cpu_ms = (self.cpu() - cpu0) * 1000 / max(1, len(samples))
        await kube.delete(f"/api/v1/namespaces/{NAMESPACE}/services/floor")
        self.result["floor"] = {"samples": len(samples), "p50_ms": percentile(samples, 0.5),
                                "controller_cpu_ms_per_event": event_cpu_ms,
                                "p95_ms": percentile(samples, 0.95), "mean_ms": statistics.fmean(samples)}
        log(f"floor: one annotation PATCH p50 {self.result['floor']['p50_ms']:.1f} ms; "
            f"controller CPU per event of an unmanaged Service {event_cpu_ms:.2f} ms")

    async def burst(self, kube: Kube, nodes: list[str]) -> None:
        watch = DeployWatch(kube, NAMESPACE)
        await watch.start()
        names = [f"svc-{i:05d}" for i in range(self.services)]
        created: dict[str, float] = {}
        cpu0 = self.cpu()
        t0_wall, t0 = time.time(), time.monotonic()

        async def create(i: int, name: str) -> None:
            await asyncio.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))
            await kube.create(f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
                              _slice(name, nodes))
            await kube.create(f"/api/v1/namespaces/{NAMESPACE}/services",
                              service_body(name, hosts=f"{name}.bench.example.com", port="http"))
            created[name] = time.monotonic()

        log(f"burst: creating {self.services} Services at {self.rate:g}/s")
        await asyncio.gather(*(create(i, n) for i, n in enumerate(names)))
        last_created = time.monotonic()
        log(f"burst: all created in {last_created - t0:.1f}s; waiting for deployed")
        done = await watch.until(lambda: len(watch.deployed_at) >= len(names),
                                 timeout=float(os.environ.get("BENCH_DEPLOY_TIMEOUT", 600)))
        all_deployed = max(watch.deployed_at.values(), default=time.monotonic())
        await asyncio.sleep(5)  # trailing writes (Events) belong to the burst's cost
        self.windows["burst"] = (t0_wall, time.time())
        self.cpu_marks["burst"] = self.cpu() - cpu0
        await watch.stop()
        latencies = [(watch.deployed_at[n] - created[n]) * 1000 for n in names if n in watch.deployed_at]
        self.result["burst"] = {
            "services": len(names), "rate_per_s": self.rate, "deployed": len(latencies), "complete": done,
            "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95),
            "p99_ms": percentile(latencies, 0.99), "max_ms": max(latencies, default=float("nan")),
            "creation_s": last_created - t0,
            "all_deployed_s": all_deployed - t0,
            "all_deployed_after_last_creation_s": all_deployed - last_created,
            "errors_seen": len(watch.errors_seen),
            "controller_cpu_s": self.cpu_marks["burst"],
            "latencies_ms": latencies,
            "created_offsets_s": sorted(c - t0 for c in created.values()),
            "deployed_offsets_s": sorted(d - t0 for d in watch.deployed_at.values()),
        }
        b = self.result["burst"]
        log(f"burst: {b['deployed']}/{len(names)} deployed; p50 {b['p50_ms']:.0f} ms, p95 {b['p95_ms']:.0f} ms, "
            f"p99 {b['p99_ms']:.0f} ms, max {b['max_ms']:.0f} ms; all deployed at {b['all_deployed_s']:.1f}s")

    async def delete_all(self, kube: Kube) -> None:
        names = [f"svc-{i:05d}" for i in range(self.services)]
        watch = DeployWatch(kube, NAMESPACE)
        await watch.start()
        cpu0 = self.cpu()
        t0_wall, t0 = time.time(), time.monotonic()
        gate = asyncio.Semaphore(32)

        async def delete(name: str) -> None:
            async with gate:
                await kube.delete(f"/api/v1/namespaces/{NAMESPACE}/services/{name}")

        log(f"delete: deleting {len(names)} Services")
        await asyncio.gather(*(delete(n) for n in names))
        requested = time.monotonic()
        await watch.until(lambda: all(n in watch.deleted_at for n in names),
                          timeout=float(os.environ.get("BENCH_DEPLOY_TIMEOUT", 600)))
        finalizers_released = max(watch.deleted_at.values(), default=time.monotonic())
        await watch.stop()
        left: dict[str, int] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            left = await self.leftovers(kube)
            if not any(left.values()):
                break
            await asyncio.sleep(0.5)
        clean = time.monotonic()
        await asyncio.sleep(3)
        self.windows["delete"] = (t0_wall, time.time())
        self.cpu_marks["delete"] = self.cpu() - cpu0
        self.result["delete"] = {
            "services": len(names), "gone": sum(1 for n in names if n in watch.deleted_at),
            "requests_sent_s": requested - t0,
            "finalizers_released_s": finalizers_released - t0,
            "delete_all_s": clean - t0, "left_over": left,
            "controller_cpu_s": self.cpu_marks["delete"],
        }
        gate2 = asyncio.Semaphore(32)

        async def delete_slice(name: str) -> None:
            async with gate2:
                await kube.delete(f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices/{name}-ep")

        await asyncio.gather(*(delete_slice(n) for n in names))
        d = self.result["delete"]
        log(f"delete: finalizers released at {d['finalizers_released_s']:.1f}s, everything clean at "
            f"{d['delete_all_s']:.1f}s; left over: {left}")

    async def leftovers(self, kube: Kube) -> dict[str, int]:
        consul = await asyncio.to_thread(self.consul.owned_nodes)
        f5 = await asyncio.to_thread(self.f5.owned_objects)
        allocations = await kube.ip_allocations()
        return {"consul_nodes": sum(len(v) for v in consul.values()),
                "f5_objects": sum(len(v) for v in f5.values()),
                "ip_allocations": len(allocations)}

    async def scale(self, kube: Kube, nodes: list[str]) -> None:
        assert self.controller is not None
        if self.idle <= 0:
            return
        await kube.ensure_namespace(IDLE_NAMESPACE)
        watch = DeployWatch(kube, IDLE_NAMESPACE)
        await watch.start()
        names = [f"idle-{i:05d}" for i in range(self.idle)]
        gate = asyncio.Semaphore(24)
        t0 = time.monotonic()

        async def create(name: str) -> None:
            async with gate:
                await kube.create(f"/apis/discovery.k8s.io/v1/namespaces/{IDLE_NAMESPACE}/endpointslices",
                                  _slice(name, nodes), retry_for=60)
                await kube.create(f"/api/v1/namespaces/{IDLE_NAMESPACE}/services",
                                  service_body(name, hosts=f"{name}.idle.example.com", port="http"), retry_for=60)

        log(f"scale: creating {self.idle} Services as fast as the API server takes them")
        await asyncio.gather(*(create(n) for n in names))
        created_s = time.monotonic() - t0
        log(f"scale: created in {created_s:.0f}s; waiting for deployed")
        done = await watch.until(lambda: len(watch.deployed_at) >= len(names),
                                 timeout=float(os.environ.get("BENCH_IDLE_TIMEOUT", 1800)))
        deployed_s = time.monotonic() - t0
        await watch.stop()
        log(f"scale: {len(watch.deployed_at)}/{len(names)} deployed at {deployed_s:.0f}s; settling 30s, "
            f"then {self.steady_s:.0f}s of steady state")
        await asyncio.sleep(30)
        cpu0, wall0 = self.cpu(), time.time()
        rss_samples = []
        while time.time() - wall0 < self.steady_s:
            rss_samples.append(self.controller.memory_mb()[0])
            await asyncio.sleep(5)
        minutes = (time.time() - wall0) / 60
        self.windows["steady"] = (wall0, time.time())
        self.result["scale"] = {
            "services": len(names), "deployed": len(watch.deployed_at), "complete": done,
            "created_s": created_s, "all_deployed_s": deployed_s, "errors_seen": len(watch.errors_seen),
            "steady_s": minutes * 60,
            "rss_mb": statistics.fmean(rss_samples) if rss_samples else float("nan"),
            "rss_mb_max": max(rss_samples, default=float("nan")),
            "cpu_s_per_min": (self.cpu() - cpu0) / minutes,
        }

    async def restarts(self, kube: Kube, nodes: list[str]) -> None:
        """SIGTERM and SIGKILL restarts with the idle Services deployed; then one with changes made while down."""
        if self.idle <= 0 or not self.restart:
            return
        proxy = CountingProxy(self.consul.url)
        await proxy.start()
        try:
            config = write_config(self.state / "config-restart.yml", consul_url=proxy.url, f5=self.f5,
                                  namespaces=(NAMESPACE, IDLE_NAMESPACE), listen_port=self.listen_port,
                                  max_addresses_per_namespace=NO_LIMIT)
            runs = {}
            for mode, changed in (("sigterm", 0), ("sigkill", 0), ("sigkill_changed", self.restart_changed)):
                runs[mode] = await self.one_restart(kube, nodes, proxy, config, mode, changed)
            self.result["restart"] = runs
            # What the process keeps once the resync is over (the controller gives freed memory back every 30 s).
            settle = env_float("BENCH_RESTART_SETTLE_S", 45)
            await asyncio.sleep(settle)
            assert self.controller is not None
            self.result["restart_settled"] = {"after_s": settle, "rss_mb": self.controller.memory_mb()[0]}
            log(f"restart: RSS {self.result['restart_settled']['rss_mb']:.0f} MB {settle:g}s after the last resync")
        finally:
            await proxy.stop()

    async def one_restart(self, kube: Kube, nodes: list[str], proxy: CountingProxy, config: Path, mode: str,
                          changed: int) -> dict[str, Any]:
        assert self.controller is not None
        old = self.controller
        t0_wall = time.time()
        log(f"restart ({mode}): stopping the controller with {'SIGTERM' if mode == 'sigterm' else 'SIGKILL'}")
        stopped = time.monotonic()
        await asyncio.to_thread(old.stop if mode == "sigterm" else old.kill)
        stop_s = time.monotonic() - stopped
        changes = await self.change_while_down(kube, nodes, changed)
        f5_before = await asyncio.to_thread(self.f5.stats)
        proxy.reset()
        new = Controller(config, old.kubeconfig, old.log_file, old.listen_port, venv=old.venv)
        self.controller = new
        started = time.monotonic()
        await asyncio.to_thread(new.start)
        healthy_s = time.monotonic() - started
        confirmed = await self.until_confirmed(new, self.idle, timeout=env_float("BENCH_RESTART_TIMEOUT", 600))
        confirm_s = time.monotonic() - started
        cpu_s, (rss, peak) = new.cpu_seconds(), new.memory_mb()
        repaired = await self.repaired(changes) if changes else {}
        await asyncio.sleep(5)  # late writes (Events) count too
        self.windows[f"restart_{mode}"] = (t0_wall, time.time())
        f5_after = await asyncio.to_thread(self.f5.stats)
        consul_writes, consul_requests = proxy.writes, proxy.requests
        run = {
            "mode": mode, "services": self.idle, "changed_while_down": len(changes), "stop_s": stop_s,
            "healthy_s": healthy_s, "confirmed": confirmed, "confirm_s": confirm_s,
            "consul_requests": consul_requests, "consul_writes": consul_writes,
            "consul_by_method": dict(proxy.by_method),
            "f5_requests": f5_after["requests"] - f5_before["requests"],
            "f5_writes": f5_after["writes"] - f5_before["writes"],
            "controller_cpu_s": cpu_s, "rss_mb": rss, "peak_rss_mb": peak, "repaired": repaired,
        }
        log(f"restart ({mode}): every entry confirmed deployed {confirm_s:.1f}s after the start "
            f"(healthy at {healthy_s:.1f}s); Consul {consul_requests} requests / {consul_writes} writes, "
            f"F5 {run['f5_requests']} / {run['f5_writes']}; CPU {cpu_s:.1f}s, peak RSS {peak:.0f} MB"
            + (f"; repaired {repaired}" if changes else ""))
        return run

    async def change_while_down(self, kube: Kube, nodes: list[str], count: int) -> dict[str, str]:
        """Change ``count`` idle Services while no controller runs: half get new host names, half lose endpoints."""
        changes: dict[str, str] = {}
        for i in range(min(count, self.idle)):
            name = f"idle-{i * max(self.idle // max(count, 1), 1):05d}"
            if i % 2 == 0:
                await kube.patch(f"/api/v1/namespaces/{IDLE_NAMESPACE}/services/{name}",
                                 {"metadata": {"annotations": {f"{PREFIX}/hosts": f"{name}-v2.idle.example.com"}}})
                changes[name] = "hosts"
            else:
                await kube.patch(f"/apis/discovery.k8s.io/v1/namespaces/{IDLE_NAMESPACE}/endpointslices/{name}-ep",
                                 {"endpoints": _slice(name, nodes[:1])["endpoints"]})
                changes[name] = "endpoints"
        return changes

    async def repaired(self, changes: dict[str, str]) -> dict[str, int]:
        """How many of the changed Services Consul and the F5 now show as changed."""
        consul = await asyncio.to_thread(self.consul.owned_nodes)
        nodes = {node for names in consul.values() for node in names}
        f5 = await asyncio.to_thread(self.f5.state)
        members = f5.get("members") or {}
        out = {"hosts_changed": 0, "hosts_repaired": 0, "endpoints_changed": 0, "endpoints_repaired": 0}
        for name, what in changes.items():
            out[f"{what}_changed"] += 1
            if what == "hosts":
                ok = f"{name}-v2.idle.example.com" in nodes and f"{name}.idle.example.com" not in nodes
            else:
                pools = [m for path, m in members.items() if path.endswith(f"_{IDLE_NAMESPACE}_{name}")]
                ok = len(pools) == 1 and len(pools[0]) == 1
            out[f"{what}_repaired"] += int(ok)
        return out

    async def until_confirmed(self, controller: Controller, count: int, timeout: float) -> bool:
        """Until the controller's own gauges show ``count`` entries deployed and none in progress or failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            gauges = await asyncio.to_thread(_entry_gauges, controller.listen_port)
            if gauges.get("deployed", 0) >= count and not gauges.get("in_progress") and not gauges.get("error"):
                return True
            await asyncio.sleep(0.25)
        return False

    # -- the machine's speed now --------------------------------------------------------
    def calibrate(self) -> None:
        """The CPU time of a fixed piece of Python work, in the controller's interpreter, right now.

        This machine's speed drifts through the day (shared cores): the same
        code measured 5.6 ms per Service at one hour and 6.3 to 6.9 ms at
        another.  CPU per Service divided by this figure compares runs made at
        different times (``cpu_per_service_in_calibrations``).
        """
        samples = []
        for _ in range(3):
            out = subprocess.run([str(CONTROLLER_VENV / "bin/python"), "-c", CALIBRATION], check=True,
                                 capture_output=True, text=True).stdout
            samples.append(float(out.strip()))
        self.result["calibration"] = {"ms": min(samples), "samples_ms": samples}
        log(f"calibration: {min(samples):.1f} ms of CPU for the fixed work (best of 3: {samples})")

    # -- the run ----------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        assert self.controller is not None
        kube = Kube(self.plane, DRIVER_USER)
        try:
            await kube.ensure_namespace(NAMESPACE)
            nodes = await kube.ensure_nodes(self.node_count)
            started, started_wall = time.monotonic(), time.time()
            await asyncio.to_thread(self.controller.start)
            self.result["controller_start_s"] = time.monotonic() - started
            await asyncio.sleep(2)
            self.windows["startup"] = (started_wall, time.time())
            await self.floor(kube)
            await asyncio.to_thread(self.calibrate)
            await self.burst(kube, nodes)
            await self.delete_all(kube)
            await self.scale(kube, nodes)
            await self.restarts(kube, nodes)
            rss, peak = self.controller.memory_mb()
            self.result["controller"] = {"cpu_s_total": self.cpu(), "rss_mb_end": rss, "peak_rss_mb": peak,
                                         "alive": self.controller.alive}
        finally:
            await kube.close()
        return self.result

    def costs(self) -> None:
        requests = read_audit(self.plane.audit_log)
        for phase, (start, end) in self.windows.items():
            self.result.setdefault("api", {})[phase] = classify(requests, start, end)
        api = self.result.get("api", {})
        n = max(self.services, 1)
        if "burst" in api:
            b = api["burst"]
            self.result["cost"] = {
                "writes_per_service": b["writes"] / n, "reads_per_service": b["reads"] / n,
                "lists_per_service": b["lists"] / n, "requests_per_service": b["total"] / n,
            }
        if "delete" in api:
            d = api["delete"]
            self.result.setdefault("cost", {}).update({
                "delete_writes_per_service": d["writes"] / n, "delete_reads_per_service": d["reads"] / n,
                "delete_lists_per_service": d["lists"] / n})
        restart = self.result.get("restart") or {}
        for mode, run in restart.items():
            costs = api.get(f"restart_{mode}") or {}
            run["api_writes"] = costs.get("writes", 0)
            run["api_requests"] = costs.get("total", 0)
            run["api_by_verb_resource"] = costs.get("by_verb_resource", {})
            run["writes"] = run["api_writes"] + run["consul_writes"] + run["f5_writes"]
            run["backend_requests"] = run["consul_requests"] + run["f5_requests"]
        if "steady" in api and "scale" in self.result:
            s, minutes = api["steady"], self.result["scale"]["steady_s"] / 60
            self.result["scale"].update({"api_requests_per_min": s["total"] / minutes,
                                         "api_lists_per_min": s["lists"] / minutes,
                                         "api_writes_per_min": s["writes"] / minutes,
                                         "api_reads_per_min": s["reads"] / minutes})

    def headline(self) -> dict[str, Any]:
        r = self.result
        burst, delete, scale = r.get("burst", {}), r.get("delete", {}), r.get("scale", {})
        restart = r.get("restart") or {}
        unchanged = [run for mode, run in restart.items() if not run.get("changed_while_down")]
        cost, controller = r.get("cost", {}), r.get("controller", {})

        def rounded(value: Any, digits: int = 1) -> Any:
            return round(value, digits) if isinstance(value, float) else value

        return {
            "services": self.services,
            "rate_per_s": self.rate,
            "p50_ms": rounded(burst.get("p50_ms")),
            "p95_ms": rounded(burst.get("p95_ms")),
            "p99_ms": rounded(burst.get("p99_ms")),
            "max_ms": rounded(burst.get("max_ms")),
            "all_deployed_s": rounded(burst.get("all_deployed_s"), 2),
            "all_deployed_after_last_creation_s": rounded(burst.get("all_deployed_after_last_creation_s"), 2),
            "delete_all_s": rounded(delete.get("delete_all_s"), 2),
            "api_writes_per_service": rounded(cost.get("writes_per_service"), 2),
            "api_reads_per_service": rounded(cost.get("reads_per_service"), 2),
            "api_lists_per_service": rounded(cost.get("lists_per_service"), 3),
            "controller_cpu_s_burst": rounded(burst.get("controller_cpu_s"), 1),
            "controller_peak_rss_mb": rounded(controller.get("peak_rss_mb")),
            "idle_services": scale.get("deployed", 0),
            "rss_mb_idle_10k": rounded(scale.get("rss_mb")),
            "cpu_s_per_min_idle": rounded(scale.get("cpu_s_per_min"), 2),
            "api_requests_steady_per_min": rounded(scale.get("api_requests_per_min"), 2),
            "api_lists_steady_per_min": rounded(scale.get("api_lists_per_min"), 2),
            "patch_floor_ms": rounded(r.get("floor", {}).get("p50_ms"), 2),
            "cpu_ms_per_unmanaged_event": rounded(r.get("floor", {}).get("controller_cpu_ms_per_event"), 3),
            "cpu_ms_per_service": rounded(burst["controller_cpu_s"] * 1000 / burst["services"], 2)
            if burst.get("services") else None,
            "calibration_ms": rounded(r.get("calibration", {}).get("ms"), 1),
            "cpu_per_service_in_calibrations": rounded(
                burst["controller_cpu_s"] * 1000 / burst["services"] / r["calibration"]["ms"], 4)
            if burst.get("services") and r.get("calibration") else None,
            "restart_services": self.idle if restart else 0,
            # SIGTERM and SIGKILL restarts with nothing changed: the slower one, and sums.
            "restart_confirm_s": rounded(max((run["confirm_s"] for run in unchanged), default=None), 1),
            "restart_writes": sum(run.get("writes", 0) for run in unchanged) if unchanged else None,
            "restart_backend_requests": sum(run["backend_requests"] for run in unchanged) if unchanged else None,
            "restart_cpu_s": rounded(max((run["controller_cpu_s"] for run in unchanged), default=None), 1),
            "restart_peak_rss_mb": rounded(max((run["peak_rss_mb"] for run in unchanged), default=None)),
            "restart_settled_rss_mb": rounded((r.get("restart_settled") or {}).get("rss_mb")),
            "restart_repaired": (restart.get("sigkill_changed") or {}).get("repaired"),
        }


def _entry_gauges(port: int) -> dict[str, float]:
    """``interlook_entries{state=...}`` from the controller's /metrics (0 values while it starts)."""
    import re
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^interlook_entries\{state="([a-z_]+)"\} ([0-9.e+]+)$', text, re.M)}


def _slice(name: str, nodes: list[str]) -> dict[str, Any]:
    from tests.chaos.harness import endpoint_slice_body

    return endpoint_slice_body(name, nodes)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    burst = result.get("burst") or {}
    latencies = burst.get("latencies_ms") or []
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if latencies:
        left.hist(latencies, bins=50, color="#3b6ea8")
        for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
            value = percentile(latencies, q)
            left.axvline(value, color="black", linestyle=style, label=f"p{int(q * 100)} {value:.0f} ms")
        left.legend()
    left.set_title(f"creation → deployed, {burst.get('services', 0)} Services at {burst.get('rate_per_s', 0):g}/s")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("Services")
    created, deployed = burst.get("created_offsets_s") or [], burst.get("deployed_offsets_s") or []
    right.step(created, range(1, len(created) + 1), where="post", label="created")
    right.step(deployed, range(1, len(deployed) + 1), where="post", label="deployed")
    right.set_title("Services over time")
    right.set_xlabel("seconds since the first creation")
    right.set_ylabel("Services")
    right.legend()
    fig.suptitle(f"Interlook bench — PATCH floor {result.get('floor', {}).get('p50_ms', 0):.1f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    memory_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gb": round(memory_gb, 1), "python": platform.python_version(),
            "kernel": platform.release(), "machine": platform.machine(),
            # What the measured process carried: the image's package set has no official client.
            "controller_venv": CONTROLLER_VENV.name,
            "controller_has_kubernetes_client": any(CONTROLLER_VENV.glob("lib/python*/site-packages/kubernetes"))}


def main() -> int:
    bench = Bench()
    bench.start_components()
    try:
        asyncio.run(bench.run())
    finally:
        bench.stop_components()
    bench.costs()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    bench.result["headline"] = bench.headline()
    bench.result["machine"] = machine()
    bench.result["config"] = {"services": bench.services, "rate": bench.rate, "idle": bench.idle,
                              "steady_s": bench.steady_s, "nodes": bench.node_count,
                              "workflow": "provider.kubernetes,provisioner.ipalloc,provisioner.consul,"
                                          "provisioner.f5ltm"}
    json_path, png_path = RESULTS / f"bench-{stamp}.json", RESULTS / f"bench-{stamp}.png"
    json_path.write_text(json.dumps(bench.result, indent=2))
    try:
        chart(bench.result, png_path)
        shutil.copy(png_path, RESULTS / "latest.png")
    except ImportError:
        log("matplotlib missing (pip install -e '.[bench]'): no chart")
    shutil.copy(json_path, RESULTS / "latest.json")
    log(f"results: {json_path}; components' logs kept in {bench.state}")
    print(json.dumps(bench.headline()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

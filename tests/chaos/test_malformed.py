"""Generated malformed Services: each gets an error and a Warning Event, the controller never dies.

Hypothesis generates what users get wrong: ports the Service does not have
(or that are no ports at all), empty and huge host lists, host names with odd
unicode or control characters, TLS flags that are not booleans, requested
IPs that are not addresses or lie outside the pool.  They are created with
well-formed Services in between, in one stream, against one controller
process; afterwards every malformed one shows ``state: error`` with the
reason and has a ``Warning ProvisioningFailed`` Event, every well-formed one
is deployed, and the controller is still the process that was started.
Count: CHAOS_MALFORMED (default 200, as the issue asks).

While the malformed Services exist, what the controller shows and keeps must
still work: ``/services`` lists each with its error, ``/health`` is 200, and
the entries file holds them and loads unchanged in a new process.  The same
is checked on Docker Swarm with malformed labels (``python -m controller
run``, Swarm-only, where the entries file is the only state):
CHAOS_MALFORMED_SWARM (default 40).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.checks import converge, summary
from tests.chaos.conftest import CHAOS_CORE, chaos_int
from tests.chaos.harness import (
    CONTROLLER_USER,
    ERROR_KEY,
    ROOT,
    STATE_KEY,
    ConsulServer,
    Controller,
    ControlPlane,
    F5Process,
    Kube,
    annotations_of,
    free_port,
    write_config,
)
from tests.swarm.conftest import ServiceFactory, SwarmEnv

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(600)]

POOL = ipaddress.ip_network("10.200.0.0/16")  # harness.write_config's default pool
NAME = "{name}"  # replaced by the Service's name, so DNS names never collide between Services
VALID_BOOLS = {"true", "yes", "1", "on", "false", "no", "0", "off", ""}


def _is_the_services_port(raw: str) -> bool:
    wanted = raw.strip()
    if wanted == "http":
        return True
    try:
        return wanted.isdigit() and int(wanted) == 80
    except ValueError:
        return False


def _odd_char(c: str) -> bool:
    """A character no DNS label may hold, even after lower-casing and stripping."""
    return not c.isspace() and c != "," and not all(x.isascii() and (x.isalnum() or x in "-.*") for x in c.lower())


odd_chars = st.characters(blacklist_categories=("Cs",)).filter(_odd_char)
labels = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)

bad_ports = st.one_of(
    st.integers(-10**6, 0).map(str),
    st.integers(65536, 10**9).map(str),
    st.sampled_from(["", " ", "https", "HTTP", "8080", "²", "80x", "http,https", "0x50", "+80"]),
    st.text(max_size=20),
).filter(lambda p: not _is_the_services_port(p))

empty_hosts = st.text(alphabet=" ,\t", max_size=12)


@st.composite
def huge_hosts(draw: Any) -> str:
    count = draw(st.integers(50, 400))
    hosts = [f"h{i}.{NAME}.chaos.example" for i in range(count)]
    bad = draw(st.one_of(
        st.integers(64, 120).map(lambda n: "a" * n + ".chaos.example"),        # a label over 63
        st.integers(254, 400).map(lambda n: ("a" * 60 + ".") * (n // 61 + 1) + "x"),  # a name over 253
    ))
    hosts.insert(draw(st.integers(0, count)), bad)
    return ",".join(hosts)


@st.composite
def unicode_hosts(draw: Any) -> str:
    odd = draw(st.text(odd_chars, min_size=1, max_size=4))
    host = f"{draw(labels)}{odd}{draw(labels)}.{NAME}.chaos.example"
    others = [f"ok{i}.{NAME}.chaos.example" for i in range(draw(st.integers(0, 3)))]
    return ",".join(others + [host])


outside_pool = st.one_of(
    st.ip_addresses(v=4).filter(lambda ip: ip not in POOL),
    st.ip_addresses(v=6),
    st.sampled_from([POOL.network_address, POOL.broadcast_address]),
).map(str)

not_an_ip = st.one_of(
    st.sampled_from(["999.1.1.1", "10.200.1", "10.200.0.1/32", "localhost", "10.200.0.1 x"]),
    st.text(min_size=1, max_size=20),
).filter(lambda s: s.strip() and not _parses_as_ip(s))


def _parses_as_ip(raw: str) -> bool:
    try:
        ipaddress.ip_address(raw.strip())
        return True
    except ValueError:
        return False


def _case(kind: str, hosts: str = f"www.{NAME}.chaos.example", port: str = "http", tls: str | None = None,
          ip: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "hosts": hosts, "port": port, "tls": tls, "ip": ip}


malformed = st.one_of(
    bad_ports.map(lambda p: _case("bad port", port=p)),
    empty_hosts.map(lambda h: _case("empty hosts", hosts=h)),
    huge_hosts().map(lambda h: _case("huge hosts", hosts=h)),
    unicode_hosts().map(lambda h: _case("odd unicode host", hosts=h)),
    st.text(max_size=10).filter(lambda t: t.strip().lower() not in VALID_BOOLS).map(lambda t: _case("bad tls", tls=t)),
    outside_pool.map(lambda ip: _case("IP outside the pool", ip=ip)),
    not_an_ip.map(lambda ip: _case("not an IP", ip=ip)),
)


def _parses_as_a_port(raw: str) -> bool:
    try:
        return 0 < int(raw.strip()) < 65536
    except ValueError:
        return False


# Swarm labels: the provider reads them (a bad one is its error); host names
# are not checked without a DNS step, so only what the provider refuses.
swarm_malformed = st.one_of(
    bad_ports.filter(lambda p: not _parses_as_a_port(p)).map(lambda p: _case("bad port", port=p)),
    st.integers(1, 19999).filter(lambda p: p != 80).map(lambda p: _case("port not published", port=str(p))),
    empty_hosts.map(lambda h: _case("empty hosts", hosts=h)),
    st.text(max_size=10).filter(lambda t: t.strip().lower() not in VALID_BOOLS).map(lambda t: _case("bad tls", tls=t)),
)


def generate(count: int, strategy: st.SearchStrategy[dict[str, Any]] = malformed) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case: dict[str, Any]) -> None:
        if len(cases) < count:
            cases.append(case)

    collect()
    return cases


# ------------------------------------------------------------------ what is shown and kept


def get_json(url: str) -> tuple[int, Any]:
    """(status, body) of a GET; an error status is an answer here, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]


def load_in_a_new_process(path: Path) -> Any:
    """The entries file as a fresh interpreter loads it (what a restarted controller starts from)."""
    code = ("import json, sys; from controller.entries import dump_entries, load_entries; "
            "print(json.dumps(dump_entries(load_entries(sys.argv[1]))))")
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode != 0:
        return f"cannot load it: {result.stderr.strip()[-500:]}"
    return json.loads(result.stdout)


def shown_and_kept_problems(api: str, entries_file: Path, erroneous: set[str], tmp_path: Path) -> list[str]:
    """What is wrong with /health, /services and the entries file while ``erroneous`` entries exist."""
    out: list[str] = []
    status, body = get_json(f"{api}/health")
    if status != 200:
        out.append(f"/health answered {status}: {body}")
    status, shown = get_json(f"{api}/services")
    if status != 200:
        return out + [f"/services answered {status}: {shown}"]
    out += [f"{name}: not in /services with its error" for name in sorted(erroneous)
            if not (shown.get(name) or {}).get("error")]
    # A copy: the controller rewrites the file after every change.
    snapshot = tmp_path / "entries-snapshot.json"
    try:
        snapshot.write_bytes(entries_file.read_bytes())
        kept = json.loads(snapshot.read_text())
    except (OSError, ValueError) as exc:
        return out + [f"entries file unreadable: {exc}"]
    out += [f"{name}: not in the entries file with its error" for name in sorted(erroneous)
            if not (kept.get(name) or {}).get("error")]
    reloaded = load_in_a_new_process(snapshot)
    if reloaded != kept:
        out.append(f"the entries file does not load unchanged in a new process: {str(reloaded)[:300]}")
    return out


async def poll_until_clean(check: Any, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found: list[str] = await asyncio.to_thread(check)
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(2)


# ------------------------------------------------------------------ Kubernetes


@pytest.fixture
def controller(control_plane: ControlPlane, consul_server: ConsulServer, f5: F5Process, namespace: str,
               tmp_path: Path) -> Iterator[Controller]:
    """conftest's controller plus an entries file (optional under Kubernetes; here it must hold the bad ones)."""
    port = free_port()
    core = {**CHAOS_CORE, "workflowEntriesFile": str(tmp_path / "entries.json")}
    config = write_config(tmp_path / "config.yml", consul_url=consul_server.url, f5=f5, namespaces=(namespace,),
                          listen_port=port, extra_core=core, consul_reconcile="5s")
    process = Controller(config, control_plane.kubeconfig(CONTROLLER_USER), tmp_path / "controller.log", port)
    try:
        yield process
    finally:
        process.stop()


async def test_malformed_services_get_errors_and_the_controller_survives(
        kube: Kube, namespace: str, nodes: list[str], controller: Controller, consul_server: ConsulServer,
        f5: F5Process, report, tmp_path: Path) -> None:
    count = chaos_int("CHAOS_MALFORMED", 200)
    cases = generate(count)
    await asyncio.to_thread(controller.start)
    pid = controller.pid
    bad: dict[str, dict[str, Any]] = {}
    good: set[str] = set()
    started = time.monotonic()
    for i, case in enumerate(cases):
        name = f"bad-{i:03d}"
        fill = {k: (v.replace(NAME, name) if isinstance(v, str) else v) for k, v in case.items() if k != "kind"}
        await kube.create_published(namespace, name, nodes, **fill)
        bad[name] = case
        if i % 5 == 4:  # a well-formed Service every fifth
            ok = f"good-{i:03d}"
            await kube.create_published(namespace, ok, nodes, hosts=f"{ok}.{namespace}.chaos.example")
            good.add(ok)

    def malformed_problems(services: dict[str, dict[str, Any]], warned: set[str]) -> list[str]:
        out = []
        for name, case in bad.items():
            notes = annotations_of(services.get(name) or {})
            if notes.get(STATE_KEY) != "error" or not notes.get(ERROR_KEY):
                out.append(f"{name} ({case['kind']}: {_short(case)}): state {notes.get(STATE_KEY)!r}")
            elif name not in warned:
                out.append(f"{name} ({case['kind']}): error shown but no Warning Event")
        return out

    deadline = time.monotonic() + 90
    while True:
        services = {o["metadata"]["name"]: o for o in await kube.services(namespace)}
        warned = {e["involvedObject"]["name"] for e in await kube.events(namespace)
                  if e.get("type") == "Warning" and e.get("reason") == "ProvisioningFailed"}
        found = malformed_problems(services, warned)
        if not found or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    took = time.monotonic() - started
    api = f"http://127.0.0.1:{controller.listen_port}"
    erroneous = {f"{namespace}/{name}" for name in bad}
    kept_found = await poll_until_clean(
        lambda: shown_and_kept_problems(api, tmp_path / "entries.json", erroneous, tmp_path), timeout=60)
    _, world, good_found, duplicates = await converge(kube, namespace, consul_server, f5, good, set(), timeout=120)
    good_found = [p for p in good_found if not p.startswith("orphan") or "good-" in p]
    kinds: dict[str, int] = {}
    for case in cases:
        kinds[case["kind"]] = kinds.get(case["kind"], 0) + 1
    report("malformed", generated=len(cases), kinds=kinds, errors_shown=len(bad) - len(found),
           well_formed_deployed=len(good) - len({p.split(':')[0] for p in good_found}), well_formed=len(good),
           controller_alive=controller.alive, same_process=controller.alive and controller.pid == pid,
           time_to_converge_s=round(took, 1), duplicates_found=duplicates, shown_and_kept_problems=len(kept_found))
    assert controller.alive and controller.pid == pid and controller.starts == 1, "the controller died"
    assert not found, f"malformed Services without an error and a Warning Event:\n{summary(found)}"
    assert not kept_found, f"/health, /services or the entries file wrong:\n{summary(kept_found)}"
    assert not good_found, f"well-formed Services not deployed:\n{summary(good_found)}"


def _short(case: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in case.items() if k != "kind" and v is not None)
    return text if len(text) < 160 else text[:160] + "..."


# ------------------------------------------------------------------ Docker Swarm

SWARM_CONFIG = """\
core:
  listenAddress: 127.0.0.1
  listenPort: {port}
  workflowSteps: provider.swarm,provisioner.ipalloc
  workflowEntriesFile: {entries}
  workflowHousekeeperInterval: 1s
provider:
  swarm:
    endpoint: {endpoint}
    labelSelector:
      - {selector}
    pollInterval: 5s
ipam:
  ipalloc:
    network_cidr: 198.51.100.0/24
    db_file: {db}
"""


class SwarmOnly:
    """``python -m controller run`` (no Kubernetes) as a process."""

    def __init__(self, config: Path, log: Path, port: int):
        self.config, self.log, self.api = config, log, f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "KUBERNETES_"))}
        env.update(INTERLOOK_CONFIG=str(self.config), PYTHONUNBUFFERED="1")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "controller", "run"], cwd=ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while get_json_or_none(f"{self.api}/health") != 200:
            assert self.alive, f"interlook exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no healthy /health:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def get_json_or_none(url: str) -> int | None:
    try:
        return get_json(url)[0]
    except OSError:
        return None


async def test_malformed_swarm_services_are_shown_and_kept_and_the_controller_survives(
        swarm: SwarmEnv, services: ServiceFactory, tmp_path: Path, report) -> None:
    count = chaos_int("CHAOS_MALFORMED_SWARM", 40)
    cases = generate(count, swarm_malformed)
    entries_file = tmp_path / "entries.json"
    config = tmp_path / "interlook.yml"
    port = free_port()
    config.write_text(SWARM_CONFIG.format(port=port, entries=entries_file, endpoint=swarm.docker_host,
                                          selector=services.selector, db=tmp_path / "ipalloc.json"))
    controller = SwarmOnly(config, tmp_path / "interlook.log", port)
    await asyncio.to_thread(controller.start)
    try:
        bad: dict[str, dict[str, Any]] = {}
        good: set[str] = set()
        for i, case in enumerate(cases):
            base = f"bad-{i:03d}"
            # No replicas: the labels are read before any task matters, and 40 containers would cost minutes.
            await asyncio.to_thread(services.create, base, hosts=case["hosts"].replace(NAME, base),
                                    port=case["port"], ssl=case["tls"], replicas=0)
            bad[services.name(base)] = case
            if i % 10 == 9:
                ok = f"good-{i:03d}"
                # Host mode: ingress needs the swarm's vxlan interface, which
                # several daemons sharing one kernel (other checkouts) fight over.
                await asyncio.to_thread(services.create, ok, hosts=f"{ok}.chaos.example", mode="host")
                good.add(services.name(ok))

        def problems() -> list[str]:
            out = shown_and_kept_problems(controller.api, entries_file, set(bad), tmp_path)
            status, shown = get_json(f"{controller.api}/services")
            if status == 200:
                out += [f"{name}: not deployed ({(shown.get(name) or {}).get('error')!r})" for name in sorted(good)
                        if (shown.get(name) or {}).get("state") != "deployed"]
            return out

        found = await poll_until_clean(problems, timeout=120)
        pid = controller.process.pid if controller.process else None
        alive = controller.alive
    finally:
        code = controller.stop()
    # The file a clean stop leaves is what the next process starts from.
    restarted = SwarmOnly(config, tmp_path / "interlook-2.log", port)
    await asyncio.to_thread(restarted.start)
    try:
        reloaded_found = await poll_until_clean(
            lambda: shown_and_kept_problems(restarted.api, entries_file, set(bad), tmp_path), timeout=60)
    finally:
        restarted_code = restarted.stop()
    kinds: dict[str, int] = {}
    for case in cases:
        kinds[case["kind"]] = kinds.get(case["kind"], 0) + 1
    report("malformed-swarm", generated=len(cases), kinds=kinds, problems=len(found),
           problems_after_reload=len(reloaded_found), controller_alive=alive, pid=pid,
           exit_codes=(code, restarted_code))
    assert alive and code == 0, "the controller died"
    assert not found, f"malformed Swarm services not shown or kept:\n{summary(found)}"
    assert not reloaded_found, f"after a restart on the same entries file:\n{summary(reloaded_found)}"
    assert restarted_code == 0

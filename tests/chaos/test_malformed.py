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
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.checks import converge, summary
from tests.chaos.conftest import chaos_int
from tests.chaos.harness import ERROR_KEY, STATE_KEY, ConsulServer, Controller, F5Process, Kube, annotations_of

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


def generate(count: int) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(malformed)
    def collect(case: dict[str, Any]) -> None:
        if len(cases) < count:
            cases.append(case)

    collect()
    return cases


async def test_malformed_services_get_errors_and_the_controller_survives(
        kube: Kube, namespace: str, nodes: list[str], controller: Controller, consul_server: ConsulServer,
        f5: F5Process, report) -> None:
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
    _, world, good_found, duplicates = await converge(kube, namespace, consul_server, f5, good, set(), timeout=120)
    good_found = [p for p in good_found if not p.startswith("orphan") or "good-" in p]
    kinds: dict[str, int] = {}
    for case in cases:
        kinds[case["kind"]] = kinds.get(case["kind"], 0) + 1
    report("malformed", generated=len(cases), kinds=kinds, errors_shown=len(bad) - len(found),
           well_formed_deployed=len(good) - len({p.split(':')[0] for p in good_found}), well_formed=len(good),
           controller_alive=controller.alive, same_process=controller.alive and controller.pid == pid,
           time_to_converge_s=round(took, 1), duplicates_found=duplicates)
    assert controller.alive and controller.pid == pid and controller.starts == 1, "the controller died"
    assert not found, f"malformed Services without an error and a Warning Event:\n{summary(found)}"
    assert not good_found, f"well-formed Services not deployed:\n{summary(good_found)}"


def _short(case: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in case.items() if k != "kind" and v is not None)
    return text if len(text) < 160 else text[:160] + "..."

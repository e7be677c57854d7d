"""The BIG-IP simulator answers the documented examples (tests/fixtures/f5/*.json) as the appliance does.

The provisioner's tests are only as good as the simulator, so its fidelity
is tested on its own: each fixture file is a documented sequence of requests
and answers, replayed in order against a fresh simulator over HTTPS.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "f5"
ANY = "<any>"


def _matches(expected: Any, actual: Any, where: str = "$") -> list[str]:
    """Subset match: every expected key is there with a matching value; ``<any>`` is a wildcard."""
    if expected == ANY:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = []
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{where}.{key}: missing")
            else:
                problems += _matches(value, actual[key], f"{where}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {actual!r}"]
        pairs = enumerate(zip(expected, actual, strict=True))
        return [problem for i, (e, a) in pairs for problem in _matches(e, a, f"{where}[{i}]")]
    if isinstance(expected, str) and ANY in expected and isinstance(actual, str):
        pattern = ".*".join(re.escape(part) for part in expected.split(ANY))
        return [] if re.fullmatch(pattern, actual) else [f"{where}: {actual!r} does not match {expected!r}"]
    return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]


def test_matcher_is_strict_where_it_must_be():
    assert _matches({"a": 1}, {"a": 1, "b": 2}) == []
    assert _matches({"a": 1}, {"a": 2})
    assert _matches([{"a": 1}], [{"a": 1}, {"a": 2}])
    assert _matches("x?ver=<any>", "x?ver=15.1") == []
    assert _matches("x?ver=<any>", "y?ver=15.1")


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
async def test_simulator_answers_like_the_documentation(fixture: Path, sim_tls):
    scenario = json.loads(fixture.read_text())
    simulator = F5Simulator(tls=sim_tls)
    for policy in scenario.get("setup", {}).get("policies", []):
        simulator.state.add_policy(policy)
    url = await simulator.start()
    try:
        async with httpx.AsyncClient(base_url=url, verify=sim_tls.client_context()) as client:
            login = await client.post("/mgmt/shared/authn/login",
                                      json={"username": "admin", "password": "admin", "loginProviderName": "tmos"})
            token = login.json()["token"]["token"]
            for number, exchange in enumerate(scenario["exchanges"], 1):
                request, expected = exchange["request"], exchange["response"]
                headers = {}
                auth = request.get("auth", "token")
                if auth == "token":
                    headers["X-F5-Auth-Token"] = token
                elif auth == "bogus":
                    headers["X-F5-Auth-Token"] = "NOTATOKEN"
                elif auth == "basic":
                    headers["Authorization"] = "Basic " + base64.b64encode(b"admin:admin").decode()
                path = request["path"].replace("{token}", token)
                response = await client.request(request["method"], path, headers=headers,
                                                json=request.get("body"))
                label = f"{fixture.name} #{number} {request['method']} {path}"
                statuses = expected.get("status_any_of") or [expected["status"]]
                assert response.status_code in statuses, f"{label}: {response.status_code} {response.text}"
                if "body" in expected:
                    problems = _matches(expected["body"], response.json())
                    assert not problems, f"{label}: {problems}"
    finally:
        await simulator.stop()


async def test_simulator_counts_writes_and_injects_faults_over_http(sim_tls):
    async with F5Simulator(tls=sim_tls) as simulator, httpx.AsyncClient(
            base_url=simulator.url, verify=sim_tls.client_context(), auth=("admin", "admin")) as client:
        await client.post("/mgmt/tm/ltm/pool", json={"name": "p"})
        await client.get("/mgmt/tm/ltm/pool")
        assert (await client.get("/__sim/stats")).json()["writes"] == 1

        await client.post("/__sim/faults", json={"error_rate": 1.0, "error_status": 500})
        failed = await client.get("/mgmt/tm/ltm/pool")
        assert failed.status_code == 500 and failed.json()["code"] == 500

        await client.post("/__sim/faults", json={"clear": True})
        assert (await client.get("/mgmt/tm/ltm/pool")).status_code == 200

        await client.post("/__sim/faults", json={"down": True})
        with pytest.raises(httpx.HTTPError):
            await client.get("/mgmt/tm/ltm/pool")
        await client.post("/__sim/faults", json={"down": False})

        state = (await client.get("/__sim/state")).json()
        assert list(state["pools"]) == ["/Common/p"]

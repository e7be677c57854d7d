"""The simulator answers like the documented LoadMaster (fixtures in tests/fixtures/kemp/)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.kemp.conftest import PASSWORD, USERNAME, Sim

pytestmark = pytest.mark.integration

EXAMPLES = json.loads((Path(__file__).parents[1] / "fixtures" / "kemp" / "examples.json").read_text())["examples"]


def leaves(element: ET.Element, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every leaf element, paths like Success/Data/VS/VSPort."""
    for child in element:
        path = f"{prefix}{child.tag}"
        if len(child):
            yield from leaves(child, path + "/")
        else:
            yield path, (child.text or "").strip()


def all_leaves(element: ET.Element) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, text in leaves(element):
        found.setdefault(path, []).append(text)
    return found


async def get(sim: Sim, request: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sim.url, verify=str(sim.ca_file)) as client:
        return await client.get(request, **({"auth": (USERNAME, PASSWORD)} | kwargs))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
async def test_documented_example(sim: Sim, example: dict[str, Any]):
    for request in example["setup"]:
        setup = await get(sim, request)
        assert setup.status_code == 200, (request, setup.text)

    response = await get(sim, example["request"])

    assert response.status_code == example["status"]
    assert response.text.startswith('<?xml version="1.0" encoding="ISO-8859-1"?>')
    documented, simulated = ET.fromstring(example["response"].encode()), ET.fromstring(response.content)
    assert (simulated.tag, simulated.attrib) == (documented.tag, documented.attrib)
    if not len(documented):
        assert (simulated.text or "") == (documented.text or "")
    got = all_leaves(simulated)
    for path, text in leaves(documented):
        if path in example["ignore"]:
            assert path in got, path
            continue
        assert text in got.get(path, []), f"{path}: documented {text!r}, simulator {got.get(path)!r}"


async def test_bad_credentials_are_refused_with_401(sim: Sim):
    response = await get(sim, "/access/listvs", auth=(USERNAME, "wrong"))
    assert response.status_code == 401
    assert ET.fromstring(response.content).attrib == {"stat": "401", "code": "fail"}


async def test_no_credentials_are_refused_with_401(sim: Sim):
    response = await get(sim, "/access/listvs", auth=None)
    assert response.status_code == 401


async def test_parameters_may_be_posted_as_a_form(sim: Sim):
    async with httpx.AsyncClient(base_url=sim.url, verify=str(sim.ca_file), auth=(USERNAME, PASSWORD)) as client:
        response = await client.post("/access/addvs", data={"vs": "10.0.0.7", "port": "80", "prot": "tcp"})
    assert response.status_code == 200
    assert await sim.writes() == 1


async def test_modvs_moves_the_port_and_refuses_a_taken_one(sim: Sim):
    await get(sim, "/access/addvs?vs=10.0.0.7&port=80&prot=tcp")
    await get(sim, "/access/addvs?vs=10.0.0.7&port=8080&prot=tcp")

    moved = await get(sim, "/access/modvs?vs=1&vsport=443")
    taken = await get(sim, "/access/modvs?vs=1&vsport=8080")

    assert moved.status_code == 200
    assert ET.fromstring(moved.content).findtext("Success/Data/VSPort") == "443"
    assert taken.status_code == 422


async def test_counts_only_successful_writes(sim: Sim):
    await get(sim, "/access/addvs?vs=10.0.0.7&port=80&prot=tcp")
    await get(sim, "/access/addvs?vs=10.0.0.7&port=80&prot=tcp")  # duplicate: 422
    await get(sim, "/access/listvs")
    stats = await sim.stats()
    assert (stats["writes"], stats["failures"]) == (1, 1)


async def test_injected_server_errors_until_cleared(sim: Sim):
    await sim.faults(error_rate=1.0, error_status=500)
    assert (await get(sim, "/access/listvs")).status_code == 500
    await sim.clear_faults()
    assert (await get(sim, "/access/listvs")).status_code == 200


async def test_down_drops_connections(sim: Sim):
    await sim.faults(down=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await get(sim, "/access/listvs")
    await sim.clear_faults()
    assert (await get(sim, "/access/listvs")).status_code == 200


async def test_nicknames_keep_to_the_documented_characters(sim: Sim):
    taken = await sim.access("addvs", vs="10.0.0.9", port=80, prot="tcp", nickname="interlook_site-a_shop.web")
    refused = await sim.access("addvs", vs="10.0.0.9", port=81, prot="tcp", nickname="interlook:shop/web")
    leading = await sim.access("modvs", vs=1, nickname="-web")

    assert taken.status_code == 200
    assert refused.status_code == 422 and "Invalid nickname: interlook:shop/web" in refused.text
    assert leading.status_code == 422

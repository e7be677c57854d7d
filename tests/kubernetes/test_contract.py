"""Unit tests (no cluster): a Service and its index data -> what the workflow publishes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.messages import Action, Service, Target
from controller.status import DEPLOYED, UNDEPLOYED, EntryStatus
from extensions.providers.kubernetes.contract import (
    NO_READY_ENDPOINTS,
    Scope,
    Selector,
    is_managed,
    marked_keys,
    read_service,
    summarize_endpoint_slice,
    summarize_service,
)
from extensions.providers.kubernetes.provider import _message_for
from extensions.providers.kubernetes.writeback import StatusWriter, events_between, present

SCOPE = Scope()


def svc(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
        type: str = "NodePort", ports: list[dict[str, Any]] | None = None, namespace: str = "shop") -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": namespace, "annotations": annotations or {},
                         "labels": labels or {}},
            "spec": {"type": type, "ports": ports or [{"name": "http", "port": 80, "nodePort": 30080},
                                                      {"name": "https", "port": 443, "nodePort": 30443}]}}


def slice_(*endpoints: tuple[str, bool, str]) -> Any:
    return summarize_endpoint_slice({"metadata": {"name": "s1"}, "endpoints": [
        {"addresses": [addr], "nodeName": node, "conditions": {"ready": ready}} for node, ready, addr in endpoints]})


ANN = {"interlook.io/hosts": "a.example.com, B.example.com", "interlook.io/port": "https"}
NODES = {"n1": "10.0.0.1", "n2": "10.0.0.2"}


def test_targets_are_nodes_with_ready_endpoints_weighted_on_the_node_port() -> None:
    reading = read_service(svc(ANN), SCOPE, [slice_(("n1", True, "p1"), ("n1", True, "p2"), ("n2", True, "p3"),
                                                    ("n2", False, "p4"))], NODES)
    assert reading.publishable
    assert reading.service == Service(name="shop/web", provider="provider.kubernetes", port=443,
                                      dns_names=("a.example.com", "b.example.com"),
                                      targets=(Target("10.0.0.1", 30443, 2), Target("10.0.0.2", 30443, 1)))


def test_an_endpoint_in_two_slices_counts_once() -> None:
    one = summarize_endpoint_slice({"endpoints": [{"addresses": ["a"], "nodeName": "n1",
                                                   "targetRef": {"uid": "pod-1"}}]})
    two = summarize_endpoint_slice({"endpoints": [{"addresses": ["fd00::1"], "nodeName": "n1",
                                                   "targetRef": {"uid": "pod-1"}}]})
    assert read_service(svc(ANN), SCOPE, [one, two], NODES).service.targets == (Target("10.0.0.1", 30443, 1),)


def test_no_ready_endpoint_is_not_published_and_says_why() -> None:
    reading = read_service(svc(ANN), SCOPE, [slice_(("n1", False, "p1"))], NODES)
    assert reading.info == NO_READY_ENDPOINTS
    assert _message_for(reading).action == Action.DELETE


@pytest.mark.parametrize("annotations,words", [
    ({"interlook.io/port": "ftp"}, "port 'ftp' is not a port"),
    ({"interlook.io/hosts": " , "}, "hosts is empty"),
    ({"interlook.io/hosts": "bad_name.example.com"}, "invalid host name"),
    ({"interlook.io/tls": "maybe"}, "true or false"),
    ({"interlook.io/ip": "10.0.0"}, "not an IP address"),
    ({"interlook.io/pool": "Team_A"}, "pool 'Team_A' is not a pool name"),
    ({"interlook.io/pool": "a" * 64}, "is not a pool name"),
])
def test_malformed_input_is_an_error(annotations: dict[str, str], words: str) -> None:
    reading = read_service(svc({**ANN, **annotations}), SCOPE, [slice_(("n1", True, "p1"))], NODES)
    assert words in reading.error
    message = _message_for(reading)
    assert message.action == Action.ADD and message.error


def test_port_by_number_tls_and_requested_ip() -> None:
    ann = {**ANN, "interlook.io/port": "80", "interlook.io/tls": "true", "interlook.io/ip": "198.51.100.7"}
    service = read_service(svc(ann), SCOPE, [slice_(("n1", True, "p1"))], NODES).service
    assert (service.port, service.targets[0].port, service.tls, service.requested_ip) == (80, 30080, True,
                                                                                        "198.51.100.7")


def test_the_pool_the_labels_and_the_namespace_labels_are_read() -> None:
    body = svc({**ANN, "interlook.io/pool": " team-a "}, labels={"tier": "web", "app": "shop"})
    service = read_service(summarize_service(body, SCOPE, "interlook.io/finalizer"), SCOPE,
                           [slice_(("n1", True, "p1"))], NODES, namespace_labels=(("team", "a"),)).service
    assert service.pool == "team-a"
    assert service.labels == (("app", "shop"), ("tier", "web"))  # every label, sorted, even after summarising
    assert service.namespace_labels == (("team", "a"),)
    assert service.namespace == "shop"


def test_the_pool_annotation_is_an_input_never_cleaned_off() -> None:
    assert marked_keys({"interlook.io/pool": "a", "interlook.io/state": "deployed"}, SCOPE) == ["interlook.io/state"]


def test_legacy_labels_are_read() -> None:
    body = svc(labels={"interlook.hosts": "old.example.com", "interlook.port": "http", "interlook.ssl": "true"})
    assert is_managed(body, SCOPE)
    service = read_service(body, SCOPE, [slice_(("n1", True, "p1"))], NODES).service
    assert (service.dns_names, service.port, service.tls) == (("old.example.com",), 80, True)


def test_what_is_managed() -> None:
    assert is_managed(svc(ANN), SCOPE)
    assert is_managed(svc(ANN, type="LoadBalancer"), SCOPE)
    assert not is_managed(svc(ANN, type="ClusterIP"), SCOPE)
    assert not is_managed(svc({"interlook.io/hosts": "a.example.com"}), SCOPE)
    assert not is_managed(svc(), SCOPE)
    scoped = Scope(selector=Selector.parse(["team=web", "!legacy"]), namespaces=("shop",))
    assert is_managed(svc(ANN, labels={"team": "web"}), scoped)
    assert not is_managed(svc(ANN, labels={"team": "db"}), scoped)
    assert not is_managed(svc(ANN, labels={"team": "web", "legacy": ""}), scoped)
    assert not is_managed(svc(ANN, labels={"team": "web"}, namespace="other"), scoped)
    custom = Scope(prefix="lb.example.org")
    assert not is_managed(svc(ANN), custom)


def entry(state: str, expected: str = DEPLOYED, *, wip: bool = False, error: str = "", ip: str = "") -> EntryStatus:
    return EntryStatus(name="shop/web", service=Service(name="shop/web", public_ip=ip, dns_names=("a.example.com",)),
                 state=state, expected_state=expected, work_in_progress=wip, error=error,
                 error_step="provisioner.ipalloc" if error else "")


def test_presentation_of_each_state() -> None:
    def shown(e: EntryStatus, pending: str = "") -> dict[str, str | None]:
        p = present(e, SCOPE, pending)
        assert p is not None
        return {k.split("/", 1)[1]: v for k, v in p.annotations if v is not None}

    assert shown(entry("provisioner.ipalloc", wip=True)) == {"state": "deploying", "step": "provisioner.ipalloc"}
    assert shown(entry(DEPLOYED, ip="198.51.100.1")) == {"state": "deployed", "public-ip": "198.51.100.1"}
    assert shown(entry("provisioner.ipalloc", UNDEPLOYED, wip=True))["state"] == "undeploying"
    assert shown(entry("provisioner.ipalloc", error="pool empty")) == {
        "state": "error", "error": "pool empty", "step": "provisioner.ipalloc"}
    assert shown(entry(UNDEPLOYED, UNDEPLOYED), pending="no ready endpoints") == {
        "state": "pending", "info": "no ready endpoints"}
    assert present(entry(UNDEPLOYED, UNDEPLOYED), SCOPE) is None


def test_events_are_posted_on_transitions_only() -> None:
    deploying, done = entry("provisioner.ipalloc", wip=True), entry(DEPLOYED, ip="198.51.100.1")
    assert [e.reason for e in events_between(deploying, done)] == ["Provisioned"]
    assert events_between(done, done) == []
    failed = entry("provisioner.ipalloc", error="boom")
    assert [(e.type, e.reason) for e in events_between(deploying, failed)] == [("Warning", "ProvisioningFailed")]
    assert events_between(failed, failed) == []
    gone = entry(UNDEPLOYED, UNDEPLOYED)
    assert [e.reason for e in events_between(entry("provisioner.ipalloc", UNDEPLOYED, wip=True), gone)] == [
        "Deprovisioned"]


@pytest.mark.parametrize("port", ["²", "٣", "8O"])
def test_a_port_that_only_looks_numeric_is_a_clear_error(port):
    from extensions.providers.kubernetes.contract import InvalidService, select_port

    with pytest.raises(InvalidService, match="not a port of the Service"):
        select_port({"ports": [{"name": "http", "port": 80, "nodePort": 30080}]}, port)


class RecordingApi:
    """Stands in for KubeApi: records the PATCHes the writer sends."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch(self, path: str, body: dict[str, Any], content_type: str = "", *,
                    decode: bool = True) -> dict[str, Any]:
        self.patches.append(body["metadata"]["annotations"])
        return {}

    async def close(self) -> None:
        pass


def states_written(api: RecordingApi) -> list[str | None]:
    return [p.get("interlook.io/state") for p in api.patches]


async def test_a_quick_deploy_is_one_write_of_its_result() -> None:
    body = svc(ANN)
    api = RecordingApi()
    writer = StatusWriter(api, SCOPE, lambda ns, n: body, settle=0.2)  # type: ignore[arg-type]
    for step in ("provisioner.ipalloc", "provisioner.consul"):
        writer.show("shop/web", present(entry(step, wip=True), SCOPE))
        await asyncio.sleep(0.01)
    writer.show("shop/web", present(entry(DEPLOYED, ip="198.51.100.1"), SCOPE))
    await writer.idle()
    assert states_written(api) == ["deployed"]
    assert api.patches[0]["interlook.io/public-ip"] == "198.51.100.1"


async def test_a_step_that_lasts_is_shown_then_the_result() -> None:
    body = svc(ANN)
    api = RecordingApi()
    writer = StatusWriter(api, SCOPE, lambda ns, n: body, settle=0.05)  # type: ignore[arg-type]
    writer.show("shop/web", present(entry("provisioner.consul", wip=True), SCOPE))
    await asyncio.sleep(0.2)
    assert states_written(api) == ["deploying"]
    assert api.patches[0]["interlook.io/step"] == "provisioner.consul"
    writer.show("shop/web", present(entry(DEPLOYED, ip="198.51.100.1"), SCOPE))
    await writer.idle()
    assert states_written(api) == ["deploying", "deployed"]
    assert api.patches[1]["interlook.io/step"] is None  # removed once done


async def test_an_error_is_written_at_once_and_old_bookkeeping_goes_with_it() -> None:
    body = svc({**ANN, "interlook.io/last-handled-configuration": "{}"})
    api = RecordingApi()
    writer = StatusWriter(api, SCOPE, lambda ns, n: body, settle=60)  # type: ignore[arg-type]
    writer.show("shop/web", present(entry("provisioner.ipalloc", wip=True), SCOPE))
    writer.show("shop/web", present(entry("provisioner.ipalloc", error="pool empty"), SCOPE))
    await writer.idle()
    assert states_written(api) == ["error"]
    assert "interlook.io/last-handled-configuration" in api.patches[0]
    assert api.patches[0]["interlook.io/last-handled-configuration"] is None

"""manifests/ on a real node: two replicas, one active, publishing; least privilege from inside the Pod."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.consul.agent import ConsulAgent
from tests.incluster.conftest import NAMESPACE, SWEEP_S, Kubectl, backend, published_service, ready, service, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

PEERING = "interlook"


def peers(kubectl: Kubectl) -> dict[str, int]:
    """Pod name -> kopf peering priority, for the peers kopf lists and whose Pod still exists."""
    status = kubectl.json("get", "clusterkopfpeering", PEERING).get("status") or {}
    alive = {p["metadata"]["name"] for p in kubectl.pods()}
    return {name: int(info["priority"]) for name, info in status.items()
            if name in alive and isinstance(info, dict) and "priority" in info}


def active_pod(kubectl: Kubectl) -> str:
    """The replica kopf lets run: the highest priority of the two live peers."""
    known = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(peers(kubectl)), "two live peers in the peering")
    return max(known, key=lambda name: known[name])


def annotations(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    return kubectl.json("-n", namespace, "get", "service", name)["metadata"].get("annotations") or {}


def deployed_ip(kubectl: Kubectl, namespace: str, name: str) -> str:
    def done() -> str | None:
        found = annotations(kubectl, namespace, name)
        return found.get("interlook.io/public-ip") if found.get("interlook.io/state") == "deployed" else None
    return str(wait_for(done, f"{namespace}/{name} deployed"))


def consul_address(consul: ConsulAgent, host: str) -> str | None:
    answer = httpx.get(f"{consul.url}/v1/catalog/node/{host}", timeout=5)
    if answer.status_code != 200 or answer.json() is None:
        return None
    return str(answer.json()["Node"]["Address"])


def events(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    items = kubectl.json("-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [(e["type"], e["reason"]) for e in items]


def allocations(kubectl: Kubectl) -> dict[str, str]:
    return {i["spec"]["ip"]: i["spec"]["owner"] for i in kubectl.json("get", "ipallocations")["items"]}


def no_denials(kubectl: Kubectl, pods: list[str]) -> None:
    for pod in pods:
        log = kubectl.logs(pod)
        for sign in ("Forbidden", " 403", "Not enough permissions"):
            assert sign not in log, f"{pod} was denied something:\n{log[-3000:]}"


ENTRIES = r"""
import json, urllib.request
print(json.dumps(sorted(json.load(urllib.request.urlopen("http://127.0.0.1:8080/services", timeout=10)))))
"""


def entries(kubectl: Kubectl, pod: str) -> list[str]:
    """The workflow entries one replica holds (its own HTTP API, from inside its container)."""
    return list(json.loads(kubectl.exec_python(pod, ENTRIES)))


def test_both_replicas_are_running_and_ready_and_one_is_active(deployed: Kubectl, namespace: str) -> None:
    pods = wait_for(lambda: (lambda p: p if len(p) == 2 and all(map(ready, p)) else None)(deployed.pods()),
                    "two Running and Ready replicas")
    known = peers(deployed)
    assert sorted(known) == sorted(p["metadata"]["name"] for p in pods)
    assert len(set(known.values())) == 2, "equal priorities would pause both"
    active = active_pod(deployed)
    standby = next(name for name in known if name != active)

    published_service(deployed, namespace, "one", f"one-{uuid.uuid4().hex[:6]}.incluster.example.com")
    deployed_ip(deployed, namespace, "one")
    # Only the active replica took the Service in; the standby holds nothing.
    assert f"{namespace}/one" in entries(deployed, active)
    assert entries(deployed, standby) == []


def test_a_service_gets_its_ip_annotations_and_events(deployed: Kubectl, namespace: str, consul: ConsulAgent) -> None:
    host = f"web-{uuid.uuid4().hex[:6]}.incluster.example.com"
    published_service(deployed, namespace, "web", host)

    ip = deployed_ip(deployed, namespace, "web")
    found = annotations(deployed, namespace, "web")
    assert found.get("interlook.io/error", "") == ""
    ingress = deployed.json("-n", namespace, "get", "service", "web")["status"]["loadBalancer"]["ingress"]
    assert [i["ip"] for i in ingress] == [ip]
    wait_for(lambda: ("Normal", "Provisioned") in events(deployed, namespace, "web"), "a Normal Provisioned Event")
    assert wait_for(lambda: consul_address(consul, host), f"{host} in Consul") == ip
    assert allocations(deployed)[ip] == f"{namespace}/web"
    no_denials(deployed, [p["metadata"]["name"] for p in deployed.pods()])


def test_the_standby_leaves_the_active_replicas_records_alone(deployed: Kubectl, namespace: str,
                                                              consul: ConsulAgent) -> None:
    host = f"kept-{uuid.uuid4().hex[:6]}.incluster.example.com"
    published_service(deployed, namespace, "kept", host)
    ip = deployed_ip(deployed, namespace, "kept")
    # Several orphan-sweep rounds of both replicas (SWEEP_S): DESIGN.md says a standby
    # does nothing, no step, no sweep, no write, until it becomes the active one.
    time.sleep(5 * SWEEP_S)
    assert consul_address(consul, host) == ip
    assert allocations(deployed).get(ip) == f"{namespace}/kept"


def test_the_standby_takes_over_without_losing_a_record(deployed: Kubectl, namespace: str,
                                                        consul: ConsulAgent) -> None:
    before_host = f"before-{uuid.uuid4().hex[:6]}.incluster.example.com"
    published_service(deployed, namespace, "before", before_host)
    before_ip = deployed_ip(deployed, namespace, "before")
    active = active_pod(deployed)
    standby = next(name for name in peers(deployed) if name != active)

    after_host = f"after-{uuid.uuid4().hex[:6]}.incluster.example.com"
    backend(deployed, namespace, "after")
    deployed("-n", namespace, "wait", "--for=condition=Ready", "pod/after", "--timeout=120s")

    # Cordoned, the node cannot start the active's replacement: the standby must take over.
    deployed("cordon", "interlook-node")
    try:
        deployed("-n", NAMESPACE, "delete", "pod", active, "--wait=true", "--timeout=120s")
        service(deployed, namespace, "after", after_host)
        after_ip = deployed_ip(deployed, namespace, "after")
        # It resumed everything from the cluster, and nothing published before was lost.
        assert {f"{namespace}/before", f"{namespace}/after"} <= set(entries(deployed, standby))
        assert annotations(deployed, namespace, "before").get("interlook.io/public-ip") == before_ip
        assert wait_for(lambda: consul_address(consul, before_host), f"{before_host} in Consul") == before_ip
        assert consul_address(consul, after_host) == after_ip
        held = allocations(deployed)
        assert held.get(before_ip) == f"{namespace}/before" and held.get(after_ip) == f"{namespace}/after"
    finally:
        deployed("uncordon", "interlook-node")
    wait_for(lambda: len([p for p in deployed.pods() if ready(p)]) == 2, "two Ready replicas again")


# What the controller calls (controller/main.py, extensions/kube_api.py users, kopf), as
# SelfSubjectAccessReview attributes; manifests/10-rbac.yaml must allow exactly these.
NEEDED = [
    ("", "services", "", verb) for verb in ("get", "list", "watch", "patch")
] + [
    ("", "services", "status", "patch"),
    ("discovery.k8s.io", "endpointslices", "", "list"), ("discovery.k8s.io", "endpointslices", "", "watch"),
    ("", "nodes", "", "list"), ("", "nodes", "", "watch"),
    ("", "events", "", "create"),
] + [
    ("interlook.io", "ipallocations", "", verb) for verb in ("get", "list", "create", "delete", "patch")
] + [
    ("", "namespaces", "", "get", "kube-system"),  # the cluster id, for the default instance id
    ("", "namespaces", "", "list"), ("", "namespaces", "", "watch"),  # their labels, for pools and name rules
    ("apiextensions.k8s.io", "customresourcedefinitions", "", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "", "watch"),
] + [
    ("kopf.dev", "clusterkopfpeerings", "", verb) for verb in ("list", "watch", "patch")
]
NOT_GRANTED = [
    ("", "secrets", "", "get"), ("", "secrets", "", "list"), ("", "services", "", "delete"),
    ("", "services", "", "create"), ("", "events", "", "patch"), ("events.k8s.io", "events", "", "create"),
    ("interlook.io", "ipallocations", "", "watch"), ("interlook.io", "ipallocations", "", "update"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "", "get"), ("", "pods", "", "list"),
    ("", "configmaps", "", "get"), ("", "namespaces", "", "get", "default"), ("", "namespaces", "", "patch"),
]

# Runs inside the controller's container with its own ServiceAccount token.
IN_POD = r'''
import json, os, ssl, sys, urllib.error, urllib.request
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
BASE = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
CTX = ssl.create_default_context(cafile=SA + "/ca.crt")

def call(method, path, body=None):
    token = open(SA + "/token").read().strip()
    request = urllib.request.Request(BASE + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=CTX, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}

def allowed(group, resource, subresource, verb, name=""):
    attributes = {"group": group, "resource": resource, "subresource": subresource, "verb": verb, "name": name}
    status, review = call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                          {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                           "spec": {"resourceAttributes": attributes}})
    return status == 201 and review["status"]["allowed"]

namespace, service, checks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(json.dumps({
    "allowed": [allowed(*c) for c in checks],
    "list_secrets": call("GET", "/api/v1/namespaces/%s/secrets" % namespace)[0],
    "delete_service": call("DELETE", "/api/v1/namespaces/%s/services/%s" % (namespace, service))[0],
    "list_services": call("GET", "/api/v1/namespaces/%s/services" % namespace)[0],
}))
'''


def test_the_pods_service_account_can_do_its_job_and_no_more(deployed: Kubectl, namespace: str) -> None:
    published_service(deployed, namespace, "victim", f"victim-{uuid.uuid4().hex[:6]}.incluster.example.com")
    pod = deployed.pods()[0]["metadata"]["name"]
    checks: list[Any] = [list(c) for c in NEEDED + NOT_GRANTED]
    answer = json.loads(deployed.exec_python(pod, IN_POD, namespace, "victim", json.dumps(checks)))

    granted = dict(zip(map(tuple, checks), answer["allowed"], strict=True))
    assert [c for c in NEEDED if not granted[c]] == [], "the ServiceAccount lacks what the code calls"
    assert [c for c in NOT_GRANTED if granted[c]] == [], "the ServiceAccount has more than the code calls"
    assert answer["list_services"] == 200
    assert answer["list_secrets"] == 403
    assert answer["delete_service"] == 403
    assert deployed.json("-n", namespace, "get", "service", "victim")["metadata"]["name"] == "victim"


CONTAINER_FACTS = r'''
import json, os
facts = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
for path in ("/app/written-by-test", "/etc/interlook/written-by-test", "/opt/interlook/written-by-test"):
    try:
        open(path, "w").close()
        facts[path] = "written"
    except OSError as error:
        facts[path] = error.strerror
with open("/tmp/written-by-test", "w") as scratch:
    scratch.write("x")
facts["/tmp"] = "written"
print(json.dumps(facts))
'''


def test_the_container_runs_non_root_on_a_read_only_root_filesystem(deployed: Kubectl) -> None:
    pod = deployed.pods()[0]["metadata"]["name"]
    facts = json.loads(deployed.exec_python(pod, CONTAINER_FACTS))
    assert (facts["uid"], facts["gid"], facts["euid"]) == (10001, 10001, 10001)
    assert facts["/app/written-by-test"] == "Read-only file system"
    assert facts["/opt/interlook/written-by-test"] == "Read-only file system"
    assert facts["/etc/interlook/written-by-test"] == "Read-only file system"
    assert facts["/tmp"] == "written"  # the emptyDir the manifest gives it

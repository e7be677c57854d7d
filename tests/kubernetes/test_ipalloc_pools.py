"""Several IP pools and the namespace limit, on the real API server: IPAllocation objects are the store.

The Services and Namespaces are real objects with real labels; the Service a
provider would send is built here from them (the Kubernetes provider fills
the same fields), and provisioner.ipalloc runs with the cluster-backed store,
as under ``kopf run``.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace
from typing import Any, AsyncIterator, Iterator

import pytest
import yaml

from controller.config import Report, Section
from controller.extension import ExtensionContext
from controller.instance import Identity
from controller.messages import Action, Message, Service
from controller.selectors import labels_of
from extensions.kit.ownership import Mark
from extensions.kube_api import KubeApi
from extensions.provisioners.ipalloc import IPAllocConfig, IPAllocProvisioner
from extensions.provisioners.ipalloc.kube_store import KubeStore, object_name
from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE
from tests.kubectl import kubectl
from tests.kubernetes.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

GROUP, VERSION, PLURAL = "interlook.io", "v1", "ipallocations"


def pools(team_a: str, team_b: str, **extra: Any) -> dict[str, Any]:
    """team=a namespaces take from team-a; team b's web Services from web; the rest of team b from v6."""
    return {
        "pools": [
            {"name": "team-a", "network_cidr": "10.141.0.0/29", "namespaceSelector": "team=a", "priority": 1},
            {"name": "web", "network_cidr": "10.141.1.0/29", "namespaces": [team_b],
             "serviceSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}},
            {"name": "v6", "network_cidr": "2001:db8:141::/120",
             "namespaceSelector": {"matchLabels": {"team": "b"}}},
        ],
        **extra,
    }


class Site:
    """Labelled namespaces, Services in them, and one Interlook instance's ipalloc against the cluster."""

    def __init__(self, admin: Any, kubeconfig: str):
        from kubernetes import client

        self.core = client.CoreV1Api(admin)
        self.custom = client.CustomObjectsApi(admin)
        self.admin = admin
        self.kubeconfig = kubeconfig
        self.instance = f"il-pools-{uuid.uuid4().hex[:6]}"
        self.namespaces: list[str] = []
        self.apis: list[KubeApi] = []
        self.others: tuple[str, ...] = ()  # other instances whose objects a test planted

    def namespace(self, team: str) -> str:
        name = f"t-{team}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name, "labels": {"team": team}}})
        self.namespaces.append(name)
        return name

    def service(self, namespace: str, name: str, labels: dict[str, str] | None = None, *, pool: str = "",
                requested_ip: str = "") -> Service:
        """A real Service, and the message Service a provider makes of it and its namespace."""
        body = {"metadata": {"name": name, "labels": labels or {}},
                "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80}]}}
        with contextlib.suppress(Exception):
            self.core.create_namespaced_service(namespace, body)
        return self.as_seen(namespace, name, pool=pool, requested_ip=requested_ip)

    def as_seen(self, namespace: str, name: str, *, pool: str = "", requested_ip: str = "") -> Service:
        found = self.core.read_namespaced_service(name, namespace)
        ns = self.core.read_namespace(namespace)
        return Service(name=f"{namespace}/{name}", labels=labels_of(found.metadata.labels),
                       namespace_labels=labels_of(ns.metadata.labels), pool=pool, requested_ip=requested_ip)

    async def ipalloc(self, keys: dict[str, Any], instance: str = "", live: dict[str, Service] | None = None
                      ) -> IPAllocProvisioner:
        report = Report()
        config = IPAllocConfig.from_section(Section(keys, "ipam.ipalloc", report))
        assert not report.errors, report.errors
        api = KubeApi.from_api_client(self.admin)
        self.apis.append(api)
        context = ExtensionContext("provisioner.ipalloc", services={STORE_SERVICE: KubeStore(api)},
                                   identity=Identity(configured=instance or self.instance),
                                   entries=lambda: live or {})
        context.identity.resolve([])
        prov = IPAllocProvisioner(config, context)
        await prov.setup()
        return prov

    def allocations(self, instance: str = "") -> dict[str, dict[str, Any]]:
        """ip -> spec of the IPAllocation objects of ``instance`` (this site's by default)."""
        listing = self.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, label_selector=f"interlook.io/instance={instance or self.instance}")
        return {item["spec"]["ip"]: item["spec"] for item in listing["items"]}

    def plant(self, ip: str, mark: Mark, pool: str) -> None:
        """An IPAllocation as another process would have written it."""
        self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "IPAllocation",
            "metadata": {"name": object_name(ip), "labels": {"interlook.io/instance": mark.instance}},
            "spec": {"ip": ip, "owner": mark.entry, "instance": mark.instance, "pool": pool}})

    async def cleanup(self, *instances: str) -> None:
        for instance in (self.instance, *instances):
            for ip in self.allocations(instance):
                with contextlib.suppress(Exception):
                    self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, object_name(ip))
        for api in self.apis:
            await api.close()


@pytest.fixture()
async def site(admin: Any, kubeconfig: str) -> AsyncIterator[Site]:
    place = Site(admin, kubeconfig)
    try:
        yield place
    finally:
        await place.cleanup(*place.others)


@pytest.fixture()
def teams(site: Site) -> Iterator[tuple[str, str]]:
    yield site.namespace("a"), site.namespace("b")


async def add(prov: IPAllocProvisioner, service: Service) -> Message:
    return await prov.handle(Message(Action.ADD, service))


async def test_two_pools_and_a_v6_pool_chosen_by_namespace_and_service_labels(site: Site, teams) -> None:
    team_a, team_b = teams
    prov = await site.ipalloc(pools(team_a, team_b))
    a_web = await add(prov, site.service(team_a, "shop", {"tier": "web"}))  # team-a (priority 1) before web
    b_web = await add(prov, site.service(team_b, "shop", {"tier": "web"}))
    b_db = await add(prov, site.service(team_b, "db", {"tier": "db"}))
    assert (a_web.error, b_web.error, b_db.error) == ("", "", "")
    assert (a_web.service.public_ip, b_web.service.public_ip, b_db.service.public_ip) == \
        ("10.141.0.1", "10.141.1.1", "2001:db8:141::1")
    assert site.allocations() == {
        "10.141.0.1": {"ip": "10.141.0.1", "owner": f"{team_a}/shop", "instance": site.instance, "pool": "team-a"},
        "10.141.1.1": {"ip": "10.141.1.1", "owner": f"{team_b}/shop", "instance": site.instance, "pool": "web"},
        "2001:db8:141::1": {"ip": "2001:db8:141::1", "owner": f"{team_b}/db", "instance": site.instance,
                            "pool": "v6"},
    }
    # What people see: `kubectl get ipallocations` has the Pool column.
    table = kubectl(site.kubeconfig, "get", "ipallocations", "-l", f"interlook.io/instance={site.instance}")
    header, *rows = [line.split() for line in table.strip().splitlines()]
    assert header[:5] == ["NAME", "IP", "OWNER", "INSTANCE", "POOL"]
    assert {(row[1], row[4]) for row in rows} == {("10.141.0.1", "team-a"), ("10.141.1.1", "web"),
                                                 ("2001:db8:141::1", "v6")}
    assert ["2001-0db8-0141-0000-0000-0000-0000-0001", "2001:db8:141::1"] in [row[:2] for row in rows]


async def test_a_namespace_no_pool_admits_gets_an_error_and_nothing_is_created(site: Site, teams) -> None:
    team_a, team_b = teams
    prov = await site.ipalloc(pools(team_a, team_b))
    stranger = site.namespace("x")
    reply = await add(prov, site.service(stranger, "web", {"tier": "web"}))
    assert reply.error.startswith("no IP pool admits this Service (team-a: the namespace's labels do not match")
    assert f"web: namespace {stranger} is not one of its namespaces" in reply.error
    assert site.allocations() == {}


async def test_the_pool_annotation_picks_the_pool_or_is_a_clear_error(site: Site, teams) -> None:
    team_a, team_b = teams
    prov = await site.ipalloc(pools(team_a, team_b))
    v6 = await add(prov, site.service(team_b, "shop", {"tier": "web"}, pool="v6"))
    assert v6.service.public_ip == "2001:db8:141::1"  # web would have been first without the ask
    unknown = await add(prov, site.service(team_b, "api", pool="gold"))
    assert unknown.error == "IP pool gold does not exist (the pools are: team-a, web, v6)"
    refused = await add(prov, site.service(team_a, "api", pool="v6"))
    assert refused.error == ("IP pool v6 does not admit this Service: the namespace's labels do not match its "
                             "namespaceSelector team=b")
    assert list(site.allocations()) == ["2001:db8:141::1"]
    # Asking for another pool moves the Service: the new address first, then the old one is freed.
    moved = await add(prov, replace(v6.service, pool="web"))
    assert moved.service.public_ip == "10.141.1.1"
    assert {ip: spec["pool"] for ip, spec in site.allocations().items()} == {"10.141.1.1": "web"}


async def test_a_service_relabelled_out_of_its_pool_moves_to_one_that_admits_it(site: Site, teams) -> None:
    team_a, team_b = teams
    prov = await site.ipalloc(pools(team_a, team_b))
    web = await add(prov, site.service(team_b, "shop", {"tier": "web"}))
    assert web.service.public_ip == "10.141.1.1"
    site.core.patch_namespaced_service("shop", team_b, {"metadata": {"labels": {"tier": "db"}}})
    moved = await add(prov, replace(site.as_seen(team_b, "shop"), public_ip=web.service.public_ip))
    assert moved.error == "" and moved.service.public_ip == "2001:db8:141::1"
    assert list(site.allocations()) == ["2001:db8:141::1"]


async def test_allocations_keep_their_pool_and_address_across_a_restart(site: Site, teams) -> None:
    team_a, team_b = teams
    keys = pools(team_a, team_b)
    first = await site.ipalloc(keys)
    services = [site.service(team_a, "one"), site.service(team_b, "two", {"tier": "web"}),
                site.service(team_b, "three")]
    before = [(await add(first, s)).service.public_ip for s in services]
    restarted = await site.ipalloc(keys)  # a new process: everything from the cluster
    after = [(await add(restarted, s)).service.public_ip for s in services]
    assert before == after == ["10.141.0.1", "10.141.1.1", "2001:db8:141::1"]
    assert {spec["pool"] for spec in site.allocations().values()} == {"team-a", "web", "v6"}
    gone = await restarted.handle(Message(Action.DELETE, services[2]))
    assert gone.error == "" and "2001:db8:141::1" not in site.allocations()


async def test_the_namespace_limit_refuses_a_new_address_and_writes_nothing(site: Site, teams) -> None:
    team_a, team_b = teams
    prov = await site.ipalloc(pools(team_a, team_b, maxAddressesPerNamespace=2))
    assert [(await add(prov, site.service(team_b, f"s{i}"))).error for i in range(2)] == ["", ""]
    over = await add(prov, site.service(team_b, "s2"))
    assert over.error == (f"namespace {team_b} holds 2 addresses, the limit of "
                          "ipam.ipalloc.maxAddressesPerNamespace (2)")
    assert len(site.allocations()) == 2
    assert (await add(prov, site.service(team_a, "elsewhere"))).error == ""  # its own count
    restarted = await site.ipalloc(pools(team_a, team_b, maxAddressesPerNamespace=2))  # counts from the cluster
    assert "holds 2 addresses" in (await add(restarted, site.service(team_b, "s2"))).error
    await restarted.handle(Message(Action.DELETE, site.as_seen(team_b, "s0")))
    assert (await add(restarted, site.service(team_b, "s2"))).error == ""


async def test_the_sweep_frees_only_its_own_orphans_in_its_own_pools(site: Site, teams) -> None:
    team_a, team_b = teams
    other = f"il-other-{uuid.uuid4().hex[:6]}"
    site.others = (other,)
    prov = await site.ipalloc(pools(team_a, team_b))
    kept = site.service(team_a, "kept")
    for service in (kept, site.service(team_a, "gone"), site.service(team_b, "gone-v6")):
        assert (await add(prov, service)).error == ""
    site.plant("10.141.0.6", Mark(other, f"{team_a}/theirs"), "team-a")      # another instance, our range
    site.plant("10.142.0.1", Mark(site.instance, f"{team_a}/far"), "other")  # our id, a pool we do not have
    sweeping = await site.ipalloc(pools(team_a, team_b), live={kept.name: kept})
    sweep = sweeping.orphan_sweep()
    assert await sweep.run_pass() == set()  # first pass: suspects only
    assert await sweep.run_pass() == {f"{team_a}/gone", f"{team_b}/gone-v6"}
    assert set(site.allocations()) == {"10.141.0.1", "10.142.0.1"}
    assert set(site.allocations(other)) == {"10.141.0.6"}


def test_the_real_program_takes_from_the_pool_of_each_namespace_v6_included_and_keeps_the_limit(
        cluster: Any, namespace: str, other_namespace: str, make_controller: Any) -> None:
    """`kopf run` with pools: by namespace name (what the provider already knows), a v6 pool for the rest."""
    node = cluster.node("10.143.9.1")
    controller = make_controller([namespace, other_namespace])
    config = yaml.safe_load(controller.config_path.read_text())
    config["ipam"]["ipalloc"] = {"maxAddressesPerNamespace": 1, "pools": [
        {"name": "mine", "network_cidr": "10.143.0.0/29", "namespaces": [namespace]},
        {"name": "v6", "network_cidr": "2001:db8:143::/120"}]}
    controller.config_path.write_text(yaml.safe_dump(config))
    controller.start()
    published = {"interlook.io/hosts": "pools.example.com", "interlook.io/port": "http"}
    for ns, name in ((namespace, "web"), (other_namespace, "web"), (other_namespace, "second")):
        cluster.service(ns, name, annotations=published, type="LoadBalancer")
        cluster.endpoints(ns, name, [node])

    def state(ns: str, name: str, wanted: str) -> dict[str, str] | None:
        annotations = cluster.annotations(ns, name)
        return annotations if annotations.get("interlook.io/state") == wanted else None

    mine = wait_for(lambda: state(namespace, "web", "deployed"), "the Service of the named namespace deployed")
    v6 = wait_for(lambda: state(other_namespace, "web", "deployed") or state(other_namespace, "second", "deployed"),
                  "one Service of the other namespace deployed")
    assert mine["interlook.io/public-ip"] == "10.143.0.1"
    assert v6["interlook.io/public-ip"] == "2001:db8:143::1"
    refused = "second" if state(other_namespace, "web", "deployed") else "web"
    error = wait_for(lambda: state(other_namespace, refused, "error"), "the second Service over the limit")
    assert error["interlook.io/error"] == (f"namespace {other_namespace} holds 1 address, the limit of "
                                           "ipam.ipalloc.maxAddressesPerNamespace (1)")
    objects = {item["spec"]["ip"]: item["spec"].get("pool") for item in cluster.custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL)["items"] if item["spec"]["owner"].split("/")[0] in (namespace, other_namespace)}
    assert objects == {"10.143.0.1": "mine", "2001:db8:143::1": "v6"}
    ingress = wait_for(lambda: cluster.core.read_namespaced_service(
        "second" if refused == "web" else "web", other_namespace).status.load_balancer.ingress, "the v6 ingress")
    assert ingress[0].ip == "2001:db8:143::1"

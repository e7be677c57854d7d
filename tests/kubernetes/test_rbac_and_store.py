"""The in-cluster identity is enough and no more; the cluster never gives an address twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from extensions.kit.ownership import Mark
from extensions.kube_api import KubeApi
from extensions.provisioners.ipalloc.kube_store import KubeStore, object_name
from tests.kubectl import apply_documents, documents
from tests.kubernetes.conftest import ROOT, Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]


def service_account_kubeconfig(admin: Any, admin_kubeconfig: str, path: Path) -> str:
    """A kubeconfig authenticating as interlook-system/interlook with a TokenRequest token."""
    from kubernetes import client

    token = client.CoreV1Api(admin).create_namespaced_service_account_token(
        "interlook", "interlook-system", {"spec": {"expirationSeconds": 3600}}).status.token
    source = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = source["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa",
    }))
    return str(path)


def test_controller_does_its_job_as_its_service_account_and_no_more(
        admin: Any, kubeconfig: str, cluster: Cluster, namespace: str, make_controller: Any, tmp_path: Path) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    # Everything but the Deployment: this cluster has no node; the controller runs here, as the ServiceAccount.
    apply_documents(kubeconfig, [d for d in documents(ROOT / "manifests") if d["kind"] != "Deployment"])
    sa_config = service_account_kubeconfig(admin, kubeconfig, tmp_path / "sa-kubeconfig")

    node = cluster.node("10.9.0.1")
    controller = make_controller([namespace], config=sa_config).start()
    cluster.service(namespace, "web", annotations={"interlook.io/hosts": "rbac.example.com",
                                                   "interlook.io/port": "http"}, type="LoadBalancer")
    cluster.endpoints(namespace, "web", [node])
    wait_for(lambda: cluster.annotations(namespace, "web").get("interlook.io/state") == "deployed", "deployed")
    ip = cluster.annotations(namespace, "web")["interlook.io/public-ip"]
    wait_for(lambda: cluster.core.read_namespaced_service("web", namespace).status.load_balancer.ingress,
             "LoadBalancer ingress written as the service account")
    wait_for(lambda: ("Normal", "Provisioned") in [e[:2] for e in cluster.events(namespace, "web")], "Event")
    cluster.core.delete_namespaced_service("web", namespace)
    wait_for(lambda: not cluster.exists(namespace, "web"), "deletion through our finalizer")
    assert ip not in cluster.allocations()
    assert "Forbidden" not in controller.log() and " 403" not in controller.log()

    as_sa = client.CoreV1Api(config.new_client_from_config(config_file=sa_config))
    cluster.service(namespace, "victim")
    with pytest.raises(ApiException) as denied:
        as_sa.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied:
        as_sa.delete_namespaced_service("victim", namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied:
        as_sa.create_namespaced_service(namespace, {"metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}})
    assert denied.value.status == 403


async def test_an_address_is_never_given_twice_across_stores(admin: Any) -> None:
    # Two stores stand for two controller replicas (or one before and after a crash).
    first, second = KubeStore(KubeApi.from_api_client(admin)), KubeStore(KubeApi.from_api_client(admin))
    a, b, c = Mark("il-race", "race/a"), Mark("il-race", "race/b"), Mark("il-race", "race/c")
    ips = [f"192.0.2.{i}" for i in range(100, 110)]
    claims = [store.claim(ip, mark) for ip in ips for store, mark in ((first, a), (second, b))]
    holders = await asyncio.gather(*claims)
    for index, ip in enumerate(ips):
        assert holders[2 * index] == holders[2 * index + 1], f"both stores must agree who holds {ip}"
    loaded = await first.load()
    assert all(loaded[ip] in (a, b) for ip in ips)

    # Only the holder frees it; then it can be given again.
    ip = ips[0]
    loser = b if loaded[ip] == a else a
    await second.release(ip, loser)
    assert (await first.load())[ip] == loaded[ip]
    await second.release(ip, loaded[ip])
    assert ip not in await first.load()
    assert await second.claim(ip, c) == c
    for ip in ips:
        holder = (await first.load()).get(ip)
        if holder is not None:
            await first.release(ip, holder)


async def test_a_legacy_allocation_is_remarked_once_and_never_handed_over(admin: Any) -> None:
    store = KubeStore(KubeApi.from_api_client(admin), )
    ip, legacy, ours = "192.0.2.120", Mark("", "shop/web"), Mark("il-new", "shop/web")
    assert await store.claim(ip, legacy) == legacy  # as the version before instance ids wrote it
    try:
        assert not await store.remark(ip, Mark("", "shop/other"), ours)  # not the holder: nothing changes
        assert await store.remark(ip, legacy, ours)
        assert (await store.load())[ip] == ours
        # The CRD refuses to move a marked allocation to another instance, whoever asks.
        assert not await store.remark(ip, ours, Mark("il-thief", "shop/web"))
    finally:
        await store.release(ip, (await store.load())[ip])


def test_allocation_object_names() -> None:
    assert object_name("10.0.0.5") == "10-0-0-5"
    assert object_name("2001:db8::1") == "2001-0db8-0000-0000-0000-0000-0000-0001"

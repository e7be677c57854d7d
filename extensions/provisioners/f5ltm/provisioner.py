"""provisioner.f5ltm: puts each service behind an F5 BIG-IP LTM, and takes it away again.

Two ways to publish, as in the Go Interlook (``updateMode``):

* ``vs``: one pool per service (its targets as members, ratio = weight) and one
  virtual server on ``public_ip:port``, tcp, SNAT automap.
* ``policy``: the same pool, plus one rule in a shared, already attached LTM
  policy (``globalHTTPPolicy``, or ``globalSSLPolicy`` for TLS services) that
  forwards the service's host names (HTTP Host or TLS SNI) to that pool.
  Published policies cannot be edited: the rule is changed in a draft that is
  then published, and the draft is deleted if anything fails on the way.

Every step reads first and writes only the difference, so a repeated message
writes nothing.  Objects are named after the entry and carry an ownership mark
in their description (see ``names``): Interlook never changes or deletes what
it did not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from dataclasses import dataclass
from typing import Any, Callable

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message, Service
from extensions.kit.orphans import sweep_forever
from extensions.provisioners.f5ltm.client import BigIPClient, BigIPError, BigIPUnreachable, uri_id
from extensions.provisioners.f5ltm.config import F5Config
from extensions.provisioners.f5ltm.names import (
    node_description,
    object_description,
    object_name,
    owned_by,
    owner_of,
    owns_node,
)

POOL = "/mgmt/tm/ltm/pool"
NODE = "/mgmt/tm/ltm/node"
VIRTUAL = "/mgmt/tm/ltm/virtual"
POLICY = "/mgmt/tm/ltm/policy"
MAX_RATIO = 100  # BIG-IP's upper bound for a member ratio


class PlanError(Exception):
    """The service cannot be published as asked (missing IP, no host names, someone else's object)."""


@dataclass(frozen=True)
class Member:
    host: str
    port: int
    ratio: int

    @property
    def name(self) -> str:
        # BIG-IP separates an IPv6 address from its port with a dot.
        return f"{self.host}.{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_member_name(name: str) -> tuple[str, int]:
    base = name.rsplit("/", 1)[-1]
    host, _, port = base.rpartition("." if base.count(":") > 1 else ":")
    return host, int(port) if port.isdigit() else 0


def normalize_monitor(value: str) -> str:
    """``http`` -> ``/Common/http``; the appliance also pads monitors with a trailing space."""
    parts = [p.strip() for p in value.strip().split(" and ") if p.strip()]
    return " and ".join(p if p.startswith("/") else f"/Common/{p}" for p in parts)


def _full(partition: str, name: str) -> str:
    return name if name.startswith("/") else f"/{partition}/{name}"


def _differences(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in wanted.items() if current.get(key) != value}


class F5Provisioner(BaseExtension):
    name = "provisioner.f5ltm"
    kind = PROVISIONER

    def __init__(self, config: F5Config, context: ExtensionContext | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(context)
        self.config = config
        self.clock = clock
        self.client: BigIPClient | None = None
        # A policy has one draft at a time: rules of different services take turns.
        self._policy_locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle -----------------------------------------------------------
    async def setup(self) -> None:
        self.client = BigIPClient(self.config, clock=self.clock)
        try:
            await self.client.login()
            await self.client.request("GET", "/mgmt/tm/sys/version")
            if await self.client.get(f"/mgmt/tm/auth/partition/{self.config.partition}") is None:
                raise PlanError(f"partition {self.config.partition!r} does not exist")
            if self.config.update_mode == "policy":
                for policy in self._policies():
                    await self._check_policy(policy)
        except (BigIPError, BigIPUnreachable, PlanError) as exc:
            await self.client.close()
            self.client = None
            raise RuntimeError(f"cannot use the BIG-IP at {self.config.base_url}: {exc}") from None
        self.log.info("BIG-IP %s reachable, partition %s, update mode %s", self.config.base_url,
                      self.config.partition, self.config.update_mode)

    async def teardown(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def run_background(self) -> None:
        """Remove what was made for entries that no longer exist (see extensions/kit/orphans.py)."""
        await sweep_forever(self, self.config.reconcile_interval, self._owners, self._remove_orphan,
                            errors=(BigIPError, BigIPUnreachable, PlanError))

    async def _remove_orphan(self, owner: str) -> None:
        await self._unpublish(Service(name=owner))
        self.log.info("removed the objects of %s: its entry no longer exists", owner)

    async def _owners(self) -> set[str]:
        """Entries that own a pool in our partition, read from the ownership mark."""
        listing = await self._bigip.get(POOL) or {}
        owners = set()
        for item in listing.get("items") or []:
            if item.get("partition", self.config.partition) != self.config.partition:
                continue
            owner = owner_of(item.get("description"))
            if owner:
                owners.add(owner)
        return owners

    async def handle(self, message: Message) -> Message:
        if message.action in (Action.ADD, Action.UPDATE):
            work = self._publish
        elif message.action == Action.DELETE:
            work = self._unpublish
        else:
            return message
        try:
            await work(message.service)
        except (BigIPError, BigIPUnreachable, PlanError) as exc:
            self.log.warning("%s %s: %s", message.action, message.service.name, exc)
            return message.failed(f"{self.name}: {exc}")
        return message.reply()

    # -- what a service becomes ------------------------------------------------
    @property
    def _bigip(self) -> BigIPClient:
        if self.client is None:
            raise BigIPUnreachable("not connected (setup did not run)")
        return self.client

    def _pool_path(self, service: Service) -> str:
        return f"/{self.config.partition}/{object_name(service.name)}"

    def _description(self, service: Service) -> str:
        return object_description(service.name, self.config.object_description_suffix)

    def _members(self, service: Service) -> set[Member]:
        return {Member(t.host, t.port, min(max(t.weight, 1), MAX_RATIO)) for t in service.targets}

    def _destination(self, service: Service) -> str:
        if not service.public_ip:
            raise PlanError("the service has no public IP (an IPAM step must run before provisioner.f5ltm)")
        try:
            address = ipaddress.ip_address(service.public_ip)
        except ValueError:
            raise PlanError(f"public IP {service.public_ip!r} is not an IP address") from None
        # The public side listens on httpPort/httpsPort, as in the Go program:
        # the platform's own service port is an internal detail.
        port = self.config.https_port if service.tls else self.config.http_port
        separator = "." if address.version == 6 else ":"
        return f"/{self.config.partition}/{address}{separator}{port}"

    def _policies(self) -> list[str]:
        names = (self.config.global_http_policy, self.config.global_ssl_policy)
        return [_full(self.config.partition, n) for n in names if n]

    def _policy_for(self, service: Service) -> str:
        name = self.config.global_ssl_policy if service.tls else self.config.global_http_policy
        if not name:
            key = "globalSSLPolicy" if service.tls else "globalHTTPPolicy"
            raise PlanError(f"{key} is not configured: cannot publish a {'TLS' if service.tls else 'plain HTTP'} "
                            "service in policy mode")
        return _full(self.config.partition, name)

    def _rule(self, service: Service, pool: str) -> dict[str, Any]:
        if not service.dns_names:
            raise PlanError("the service has no DNS names: policy mode routes by host name")
        hosts = sorted(set(service.dns_names))
        if service.tls:
            condition = {"sslExtension": True, "serverName": True, "equals": True, "sslClientHello": True,
                         "values": hosts}
            action = {"forward": True, "select": True, "pool": pool, "sslClientHello": True}
        else:
            condition = {"httpHost": True, "host": True, "equals": True, "request": True, "values": hosts}
            action = {"forward": True, "select": True, "pool": pool, "request": True}
        return {"name": object_name(service.name), "description": self._description(service),
                "conditions": [{"name": "0", **condition}], "actions": [{"name": "0", **action}]}

    # -- add / update ------------------------------------------------------------
    async def _publish(self, service: Service) -> None:
        if self.config.update_mode == "vs":
            destination = self._destination(service)  # fail before writing anything
            pool = await self._ensure_pool(service)
            await self._ensure_virtual(service, destination, pool)
            return
        policy = self._policy_for(service)
        rule = self._rule(service, self._pool_path(service))  # fail before writing anything
        await self._ensure_pool(service)
        await self._ensure_rule(policy, rule, service)
        # A service that changed TLS moves from one policy to the other.
        for other in self._policies():
            if other != policy:
                await self._remove_rule(other, service)

    async def _ensure_pool(self, service: Service) -> str:
        path = self._pool_path(service)
        url = f"{POOL}/{uri_id(path)}"
        wanted: dict[str, Any] = {"description": self._description(service),
                                  "loadBalancingMode": self.config.load_balancing_mode,
                                  "monitor": normalize_monitor(self.config.monitor_name)}
        members = self._members(service)
        current = await self._bigip.get(f"{url}?expandSubcollections=true")
        if current is None:
            await self._ensure_nodes({m.host for m in members})
            body = {"name": object_name(service.name), "partition": self.config.partition, **wanted,
                    "members": [{"name": m.name, "ratio": m.ratio} for m in sorted(members, key=_member_key)]}
            if not body["monitor"]:
                del body["monitor"]
            await self._bigip.request("POST", POOL, body)
            self.log.info("%s: created pool %s with %d members", service.name, path, len(members))
            return path
        self._require_ours("pool", path, current, service)
        now = {"description": current.get("description", ""), "loadBalancingMode": current.get("loadBalancingMode"),
               "monitor": normalize_monitor(str(current.get("monitor", "")))}
        change = _differences(now, wanted)
        if change:
            await self._bigip.request("PATCH", url, change)
        await self._reconcile_members(url, current, members)
        return path

    async def _reconcile_members(self, pool_url: str, pool: dict[str, Any], wanted: set[Member]) -> None:
        """Members are a set: add the new, re-weigh the changed, remove the departed; order never matters."""
        existing: dict[tuple[str, int], dict[str, Any]] = {}
        for item in (pool.get("membersReference") or {}).get("items", []):
            host, port = parse_member_name(str(item.get("name", "")))
            existing[(str(item.get("address") or host).split("%")[0], port)] = item
        by_key = {(m.host, m.port): m for m in wanted}
        added = [m for key, m in by_key.items() if key not in existing]
        await self._ensure_nodes({m.host for m in added})
        for member in sorted(added, key=_member_key):
            await self._bigip.request("POST", f"{pool_url}/members", {"name": member.name, "ratio": member.ratio})
        for key, item in existing.items():
            kept = by_key.get(key)
            if kept is not None and int(item.get("ratio", 1)) != kept.ratio:
                await self._bigip.request("PATCH", f"{pool_url}/members/{uri_id(item['fullPath'])}",
                                          {"ratio": kept.ratio})
        departed = [item for key, item in existing.items() if key not in by_key]
        for item in departed:
            await self._bigip.delete(f"{pool_url}/members/{uri_id(item['fullPath'])}")
        await self._release_nodes({str(item.get("address", "")).split("%")[0] for item in departed})

    async def _ensure_nodes(self, hosts: set[str]) -> None:
        """Create the nodes a pool needs, marked as Interlook's; existing ones are used as they are."""
        for host in sorted(hosts):
            path = f"/{self.config.partition}/{host}"
            if await self._bigip.get(f"{NODE}/{uri_id(path)}") is not None:
                continue
            body = {"name": host, "partition": self.config.partition, "address": host,
                    "description": node_description(self.config.object_description_suffix)}
            try:
                await self._bigip.request("POST", NODE, body)
            except BigIPError as exc:
                if exc.status != 409:  # created meanwhile by another pool: fine
                    raise

    async def _release_nodes(self, hosts: set[str]) -> None:
        """Delete nodes Interlook made once no pool uses them; a node still in use stays."""
        for host in sorted(h for h in hosts if h):
            url = f"{NODE}/{uri_id(f'/{self.config.partition}/{host}')}"
            node = await self._bigip.get(url)
            if node is None or not owns_node(node.get("description")):
                continue
            try:
                await self._bigip.delete(url)
            except BigIPError as exc:
                if exc.status != 400:  # 400: still referenced by a member of another pool
                    raise

    async def _ensure_virtual(self, service: Service, destination: str, pool: str) -> None:
        path = self._pool_path(service)  # the virtual server has the pool's name
        url = f"{VIRTUAL}/{uri_id(path)}"
        wanted = {"description": self._description(service), "destination": destination, "pool": pool,
                  "ipProtocol": "tcp", "sourceAddressTranslation": {"type": "automap"}}
        current = await self._bigip.get(url)
        if current is None:
            body = {"name": object_name(service.name), "partition": self.config.partition, **wanted}
            await self._bigip.request("POST", VIRTUAL, body)
            self.log.info("%s: created virtual server %s on %s", service.name, path, destination)
            return
        self._require_ours("virtual server", path, current, service)
        now = {key: current.get(key) for key in wanted}
        now["sourceAddressTranslation"] = {"type": (current.get("sourceAddressTranslation") or {}).get("type")}
        change = _differences(now, wanted)
        if change:
            await self._bigip.request("PATCH", url, change)
            self.log.info("%s: updated virtual server %s (%s)", service.name, path, ", ".join(sorted(change)))

    # -- policy rules ------------------------------------------------------------
    async def _check_policy(self, policy: str) -> None:
        found = await self._bigip.get(f"{POLICY}/{uri_id(policy)}")
        if found is None:
            raise PlanError(f"LTM policy {policy} does not exist")
        if found.get("status", "published") != "published":
            raise PlanError(f"LTM policy {policy} is not published")

    async def _published_rule(self, policy: str, rule: str) -> dict[str, Any] | None:
        found = await self._bigip.get(f"{POLICY}/{uri_id(policy)}/rules/{rule}?expandSubcollections=true")
        if found is None:
            await self._check_policy(policy)  # a missing policy is an error, a missing rule is not
        return found

    async def _ensure_rule(self, policy: str, rule: dict[str, Any], service: Service) -> None:
        current = await self._published_rule(policy, rule["name"])
        if current is not None:
            if not owned_by(current.get("description"), service.name):
                raise PlanError(f"rule {rule['name']} of policy {policy} exists but is not Interlook's "
                                f"(description {current.get('description', '')!r}): not changing it")
            if _same_rule(current, rule):
                return

        async def change(draft_url: str) -> None:
            if current is None:
                await self._bigip.request("POST", f"{draft_url}/rules", rule)
            else:
                await self._bigip.request("PUT", f"{draft_url}/rules/{rule['name']}", rule)

        await self._in_draft(policy, change)

    async def _remove_rule(self, policy: str, service: Service) -> None:
        name = object_name(service.name)
        try:
            current = await self._published_rule(policy, name)
        except PlanError:
            return  # no policy, so no rule: nothing to remove
        if current is None:
            return
        if not owned_by(current.get("description"), service.name):
            self.log.warning("rule %s of %s is not Interlook's: left in place", name, policy)
            return

        async def change(draft_url: str) -> None:
            await self._bigip.delete(f"{draft_url}/rules/{name}")

        await self._in_draft(policy, change)

    async def _in_draft(self, policy: str, change: Callable[[str], Any]) -> None:
        """Draft the policy, apply ``change`` to the draft, publish; never leave the draft behind."""
        lock = self._policy_locks.setdefault(policy, asyncio.Lock())
        async with lock:
            partition, _, name = policy.strip("/").partition("/")
            draft = f"/{partition}/Drafts/{name}"
            draft_url = f"{POLICY}/{uri_id(draft)}"
            if await self._bigip.get(draft_url) is not None:
                raise PlanError(f"a draft of policy {policy} already exists ({draft}): someone is editing it, "
                                "or it was left behind; publish or delete it on the BIG-IP")
            try:
                # Inside the try: an answer lost after the draft was made must not leave it behind either.
                await self._bigip.request("PATCH", f"{POLICY}/{uri_id(policy)}?options=create-draft", {})
                await change(draft_url)
                await self._bigip.request("POST", POLICY, {"command": "publish", "name": draft})
            except BaseException:
                # Shielded: even a cancelled message must not leave a draft that blocks the next one.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._bigip.delete(draft_url))
                raise

    # -- delete --------------------------------------------------------------------
    async def _unpublish(self, service: Service) -> None:
        """Virtual server, then policy rules, then the pool: each user before what it uses."""
        path = self._pool_path(service)
        virtual_url = f"{VIRTUAL}/{uri_id(path)}"
        virtual = await self._bigip.get(virtual_url)
        if virtual is not None and self._ours_or_skip("virtual server", path, virtual, service):
            await self._bigip.delete(virtual_url)
        if self.config.update_mode == "policy":
            for policy in self._policies():
                await self._remove_rule(policy, service)
        pool_url = f"{POOL}/{uri_id(path)}"
        pool = await self._bigip.get(f"{pool_url}?expandSubcollections=true")
        if pool is None or not self._ours_or_skip("pool", path, pool, service):
            return
        await self._bigip.delete(pool_url)
        hosts = {str(m.get("address", "")).split("%")[0]
                 for m in (pool.get("membersReference") or {}).get("items", [])}
        await self._release_nodes(hosts)
        self.log.info("%s: removed from the BIG-IP", service.name)

    # -- ownership -------------------------------------------------------------------
    def _require_ours(self, kind: str, path: str, found: dict[str, Any], service: Service) -> None:
        if not owned_by(found.get("description"), service.name):
            raise PlanError(f"{kind} {path} exists but is not Interlook's for {service.name} "
                            f"(description {found.get('description', '')!r}): not changing it")

    def _ours_or_skip(self, kind: str, path: str, found: dict[str, Any], service: Service) -> bool:
        if owned_by(found.get("description"), service.name):
            return True
        self.log.warning("%s %s is not Interlook's for %s: left in place", kind, path, service.name)
        return False


def _member_key(member: Member) -> tuple[str, int]:
    return (member.host, member.port)


def _same_items(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """Compare only what Interlook sets: the appliance adds flags of its own (index, caseInsensitive...)."""
    if len(current) != len(wanted):
        return False
    for have, want in zip(current, wanted, strict=True):
        for key, value in want.items():
            if key == "name":
                continue
            other = have.get(key)
            if key == "values":
                if sorted(map(str, other or [])) != sorted(value):
                    return False
            elif other != value:
                return False
    return True


def _same_rule(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if current.get("description", "") != wanted["description"]:
        return False
    for sub in ("conditions", "actions"):
        items = sorted((current.get(f"{sub}Reference") or {}).get("items", []), key=lambda i: str(i.get("name")))
        if not _same_items(items, wanted[sub]):
            return False
    return True

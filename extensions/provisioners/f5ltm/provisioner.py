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
writes nothing.  The one exception is an entry's first message in this process
when nothing of it can exist yet (see ``_create_first``): its pool and virtual
server are created without a read, and BIG-IP's own guard (409 to a create at
a name that is taken) sends it back to the read-first path, so nothing that
exists is ever written over.  Objects are named after the instance and the entry (see
``names``) and carry the ownership marks of extensions/kit/ownership.py in
their description: this Interlook never changes or deletes what another
instance, another entry or a person made, and a name, destination or host
name held by one of those is an error on the entry.  Objects made before
instance ids (legacy name and mark) are adopted in place for their own entry
and never touched by a sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message, Service
from extensions.kit.fresh import MayHold
from extensions.kit.orphans import sweep_forever
from extensions.kit.ownership import Ownership, Verdict, parse_text
from extensions.provisioners.f5ltm.client import BigIPClient, BigIPError, BigIPUnreachable, uri_id
from extensions.provisioners.f5ltm.config import F5Config
from extensions.provisioners.f5ltm.known import Known, Seen
from extensions.provisioners.f5ltm.names import NODE_ENTRY, legacy_object_name, object_name
from extensions.provisioners.f5ltm.routes import PolicyRoutes

POOL = "/mgmt/tm/ltm/pool"
NODE = "/mgmt/tm/ltm/node"
VIRTUAL = "/mgmt/tm/ltm/virtual"
POLICY = "/mgmt/tm/ltm/policy"
MAX_RATIO = 100  # BIG-IP's upper bound for a member ratio
# "01070333:3: Virtual Server /P/a illegally shares ... with Virtual Server /P/b."
_DRAFT_DELETE_ATTEMPTS = 3
_SHARED_DESTINATION = re.compile(r"with Virtual Server (/\S+?)\.?$")
# The start-up view of our partition (known.py): how long it answers, and its page size.
KNOWN_TTL = 300.0
PAGE = 500


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
        self.ownership = Ownership("")  # bound to the instance id in setup()
        # A policy has one draft at a time: rules of different services take turns.
        self._policy_locks: dict[str, asyncio.Lock] = {}
        self._known: Known | None = None
        # Names at the legacy form that held our objects at start-up (None: not known, read each time).
        self._legacy: set[str] | None = None
        # Hosts with a node in our partition, as seen; cleared by any failed write (see handle).
        self._nodes: set[str] = set()
        # Who routes which host name in each policy, kept by the policy's generation (routes.py).
        self._routes: dict[str, PolicyRoutes] = {}
        # Claiming host names is check-then-write: two of our Services asking one name at once must take turns.
        self._claims = asyncio.Lock()
        # Entries whose objects may exist (ours at start-up, or worked on since): read before any write
        # (see _create_first and extensions/kit/fresh.py).
        self._may_hold = MayHold()

    # -- lifecycle -----------------------------------------------------------
    async def setup(self) -> None:
        if not self.instance_id:
            raise RuntimeError("no instance id: every BIG-IP object must carry one")
        self.ownership = Ownership(self.instance_id)
        self.client = BigIPClient(self.config, clock=self.clock)
        try:
            await self.client.login()
            await self.client.request("GET", "/mgmt/tm/sys/version")
            if await self.client.get(f"/mgmt/tm/auth/partition/{self.config.partition}") is None:
                raise PlanError(f"partition {self.config.partition!r} does not exist")
            generations = {}
            if self.config.update_mode == "policy":
                for policy in self._policies():
                    generations[policy] = (await self._check_policy(policy)).get("generation")
        except (BigIPError, BigIPUnreachable, PlanError) as exc:
            await self.client.close()
            self.client = None
            raise RuntimeError(f"cannot use the BIG-IP at {self.config.base_url}: {exc}") from None
        self.log.info("BIG-IP %s reachable, partition %s, update mode %s, instance %s", self.config.base_url,
                      self.config.partition, self.config.update_mode, self.instance_id)
        await self._load_known(generations)

    async def _load_known(self, generations: dict[str, Any]) -> None:
        """Read every pool, virtual server and policy rule of our partition once (see known.py).

        Only a shortcut: when it fails, every entry is read the normal way.
        ``generations``: each policy's, read before its rules, so that a
        change made while they were listed makes the view look stale, never
        fresh (routes.py).
        """
        self._known, self._legacy = None, None
        self._nodes.clear()
        self._may_hold.forget()
        self._routes = {}
        try:
            pools = await self._list(f"{POOL}?expandSubcollections=true")
            virtuals = await self._list(VIRTUAL)
            rules = {}
            if self.config.update_mode == "policy":
                for policy in self._policies():
                    rules[policy] = await self._list(f"{POLICY}/{uri_id(policy)}/rules?expandSubcollections=true",
                                                     partition=False)
            nodes = await self._list(NODE)
        except (BigIPError, BigIPUnreachable) as exc:
            self.log.info("no bulk read of partition %s (%s): entries are read one by one",
                          self.config.partition, exc)
            return
        self._legacy = {str(item.get("name")) for item in [*pools, *virtuals, *(r for v in rules.values() for r in v)]
                        if _at_legacy_name(item, self.instance_id)}
        self._nodes = {str(item.get("name")) for item in nodes}
        marks = (parse_text(item.get("description")) for item in [*pools, *virtuals])
        self._may_hold.load(mark.entry for mark in marks if mark is not None and self.ownership.is_own(mark))
        expires = self.clock() + KNOWN_TTL
        self._routes = {policy: PolicyRoutes(policy, generations.get(policy), items, expires=expires)
                        for policy, items in rules.items()}
        known = Known(pools=pools, virtuals=virtuals, rules=rules, loaded_at=self.clock(), ttl=KNOWN_TTL)
        if len(known):
            self._known = known
            self.log.info("partition %s: %d pools, %d virtual servers read at start-up", self.config.partition,
                          len(pools), len(virtuals))

    async def _list(self, path: str, *, partition: bool = True) -> list[dict[str, Any]]:
        """Every item of a collection, in pages (``$top``/``$skip``), only our partition's."""
        query = f"%24filter=partition%20eq%20{self.config.partition}&" if partition else ""
        joiner = "&" if "?" in path else "?"
        items: list[dict[str, Any]] = []
        while True:
            page = await self._bigip.get(f"{path}{joiner}{query}%24top={PAGE}&%24skip={len(items)}") or {}
            found = page.get("items") or []
            items.extend(found)
            if len(found) < PAGE:
                break
        if partition:
            items = [i for i in items if i.get("partition", self.config.partition) == self.config.partition]
        return items

    def _seen(self, service: Service) -> Seen | None:
        """The entry's objects as the start-up read found them, the first time it asks; None afterwards."""
        known = self._known
        if known is None:
            return None
        if known.expired(self.clock()):
            self._known = None
            return None
        return known.take(service.name, (object_name(self.instance_id, service.name),
                                         legacy_object_name(service.name)))

    async def teardown(self) -> None:
        self._known = None
        self._may_hold.forget()
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def run_background(self) -> None:
        """Remove what this instance made for entries that no longer exist (see extensions/kit/orphans.py)."""
        await sweep_forever(self, self.config.reconcile_interval, self._owners, self._remove_orphan,
                            errors=(BigIPError, BigIPUnreachable, PlanError))

    async def _remove_orphan(self, owner: str) -> None:
        # adopt=False: a sweep removes only what carries our instance's mark, never a legacy object.
        # What the start-up view holds of the owner is dropped: it must not answer for it again.
        self._seen(Service(name=owner))
        await self._unpublish(Service(name=owner), adopt=False)
        self._may_hold.holds_nothing(owner)
        self.log.info("removed the objects of %s: its entry no longer exists", owner)

    async def _owners(self) -> set[str]:
        """Entries of this instance that own a pool in our partition, read from the ownership marks."""
        listing = await self._bigip.get(POOL) or {}
        owners = set()
        for item in listing.get("items") or []:
            if item.get("partition", self.config.partition) != self.config.partition:
                continue
            mark = parse_text(item.get("description"))
            if mark is not None and self.ownership.is_own(mark):
                owners.add(mark.entry)
        return owners

    async def handle(self, message: Message) -> Message:
        publish = message.action in (Action.ADD, Action.UPDATE)
        if not publish and message.action != Action.DELETE:
            return message
        service = message.service
        seen = self._seen(service)
        create_first = publish and self._create_first(service, seen)
        self._may_hold.writing(service.name)
        try:
            if publish:
                await self._publish(service, seen=seen, create_first=create_first)
            else:
                await self._unpublish(service, seen=seen)
                self._may_hold.holds_nothing(service.name)  # nothing of it is left: as new again
        except (BigIPError, BigIPUnreachable, PlanError) as exc:
            self._nodes.clear()  # a node removed behind our back must be read again
            self.log.warning("%s %s: %s", message.action, service.name, exc)
            return message.failed(f"{self.name}: {exc}")
        return message.reply()

    def _create_first(self, service: Service, seen: Seen | None) -> bool:
        """May the entry's pool and virtual server be created without reading first?

        Yes when the entry is fresh (extensions/kit/fresh.py: none of our
        objects at start-up, no work for it since), nothing was at its legacy
        name at start-up and no start-up view answers for it: its objects then
        exist only if someone made them meanwhile, and a create at a taken name
        is refused by the BIG-IP (409), after which the entry is read and
        handled the usual way.  Saves two reads of a new Service (half of its
        requests); costs one refused create, then the reads, in the rare other
        case.
        """
        if seen is not None or self._legacy is None:
            return False
        return self._may_hold.fresh(service.name) and legacy_object_name(service.name) not in self._legacy

    # -- what a service becomes ------------------------------------------------
    @property
    def _bigip(self) -> BigIPClient:
        if self.client is None:
            raise BigIPUnreachable("not connected (setup did not run)")
        return self.client

    def _path(self, name: str) -> str:
        return f"/{self.config.partition}/{name}"

    def _description(self, service: Service) -> str:
        return f"{self.ownership.mark(service.name).text()} {self.config.object_description_suffix}".strip()

    def _node_description(self) -> str:
        return f"{self.ownership.mark(NODE_ENTRY).text()} {self.config.object_description_suffix}".strip()

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

    @staticmethod
    def _hosts(service: Service) -> list[str]:
        if not service.dns_names:
            raise PlanError("the service has no DNS names: policy mode routes by host name")
        return sorted(set(service.dns_names))

    def _rule(self, service: Service, name: str, hosts: list[str]) -> dict[str, Any]:
        pool = self._path(name)
        if service.tls:
            condition = {"sslExtension": True, "serverName": True, "equals": True, "sslClientHello": True,
                         "values": hosts}
            action = {"forward": True, "select": True, "pool": pool, "sslClientHello": True}
        else:
            condition = {"httpHost": True, "host": True, "equals": True, "request": True, "values": hosts}
            action = {"forward": True, "select": True, "pool": pool, "request": True}
        return {"name": name, "description": self._description(service),
                "conditions": [{"name": "0", **condition}], "actions": [{"name": "0", **action}]}

    # -- names: ours, or adopted from before instance ids ---------------------------
    async def _name_for(self, service: Service, *, adopt: bool = True,
                        seen: Seen | None = None) -> tuple[str, dict[str, Any] | None]:
        """The name of the entry's objects, and the pool found at that name (None: no pool there).

        Ours, unless objects from before instance ids are adopted in place:
        objects at the legacy name (``interlook_<ns>_<name>``) marked for this
        very entry, legacy or already re-marked with our instance, keep their
        name: BIG-IP cannot rename, and re-creating a virtual server would cut
        its traffic.  Only reads: a repeated message still writes nothing.
        The legacy name is only read when the start-up read found an object
        there (or could not tell): a restart must not cost every entry two
        more reads for names that no longer exist.
        """
        name = object_name(self.instance_id, service.name)
        pool = await self._read_pool(name, seen)
        if pool is not None:
            return name, pool
        legacy = legacy_object_name(service.name)
        if self._legacy is not None and legacy not in self._legacy:
            return name, None
        legacy_pool = await self._read_pool(legacy, seen)
        candidates = [legacy_pool, await self._read_virtual(legacy, seen)]
        if self.config.update_mode == "policy":
            for policy in self._policies():
                with contextlib.suppress(PlanError):  # no policy, so no rule in it
                    candidates.append(await self._published_rule(policy, legacy, seen))
        for found in candidates:
            if found is not None and self._verdict(found, service, adopt) is not Verdict.FOREIGN:
                return legacy, legacy_pool
        return name, None

    async def _read_pool(self, name: str, seen: Seen | None) -> dict[str, Any] | None:
        """The pool at ``name`` with its members."""
        if seen is not None:
            return seen.pool(name)
        return await self._bigip.get(  # type: ignore[no-any-return]
            f"{POOL}/{uri_id(self._path(name))}?expandSubcollections=true")

    async def _read_virtual(self, name: str, seen: Seen | None) -> dict[str, Any] | None:
        if seen is not None:
            return seen.virtual(name)
        return await self._bigip.get(f"{VIRTUAL}/{uri_id(self._path(name))}")  # type: ignore[no-any-return]

    def _verdict(self, found: dict[str, Any], service: Service, adopt: bool = True) -> Verdict:
        verdict = self.ownership.judge(parse_text(found.get("description")), service.name)
        return Verdict.FOREIGN if verdict is Verdict.ADOPT and not adopt else verdict

    def _holder(self, found: dict[str, Any] | None) -> str:
        return self.ownership.holder(parse_text((found or {}).get("description")))

    # -- add / update ------------------------------------------------------------
    async def _publish(self, service: Service, *, seen: Seen | None = None, create_first: bool = False) -> None:
        """``seen``: the entry's objects as the start-up read found them (known.py), instead of reading them.

        ``create_first``: nothing of the entry is expected (see _create_first): create, read only if refused.
        """
        if self.config.update_mode == "vs":
            destination = self._destination(service)  # fail before writing anything
            if create_first:
                name = object_name(self.instance_id, service.name)
                pool = await self._create_pool(service, name)
                await self._ensure_virtual(service, name, destination, pool, create_first=True)
                return
            name, current = await self._name_for(service, seen=seen)
            pool = await self._ensure_pool(service, name, current)
            await self._ensure_virtual(service, name, destination, pool, seen)
            return
        policy = self._policy_for(service)
        hosts = self._hosts(service)  # fail before writing anything
        if create_first:
            name, current = object_name(self.instance_id, service.name), None
        else:
            name, current = await self._name_for(service, seen=seen)
        rule = self._rule(service, name, hosts)
        published = await self._published_rule(policy, name, seen)
        if published is not None:
            self._require_ours(f"rule of policy {policy}", name, published, service)
        ensure_pool = functools.partial(self._create_pool, service, name) if create_first else \
            functools.partial(self._ensure_pool, service, name, current)
        if published is not None and _same_rule(published, rule):
            await ensure_pool()
        else:
            async with self._claims:
                await self._require_hosts_free(service, hosts)  # before anything is written
                await ensure_pool()
                await self._write_rule(policy, rule, published)
        # A service that changed TLS moves from one policy to the other.
        for other in self._policies():
            if other != policy:
                await self._remove_rule(other, service, name, seen=seen)

    async def _create_pool(self, service: Service, name: str) -> str:
        """Create the pool at ``name`` without reading first; taken (409): read it and handle it as usual.

        Nodes this call made for the pool are let go again when the pool
        turns out to be someone else's: nothing of ours may stay behind for it.
        """
        made = {m.host for m in self._members(service)} - self._nodes
        try:
            return await self._ensure_pool(service, name, None)
        except BigIPError as exc:
            if exc.status != 409:
                raise
            current = await self._read_pool(name, None)
            if current is None:
                raise
        try:
            return await self._ensure_pool(service, name, current)
        except PlanError:
            await self._release_nodes(made)
            raise

    async def _ensure_pool(self, service: Service, name: str, current: dict[str, Any] | None) -> str:
        """The pool at ``name`` as wanted; ``current``: the pool there as just read (None: none)."""
        path = self._path(name)
        url = f"{POOL}/{uri_id(path)}"
        wanted: dict[str, Any] = {"description": self._description(service),
                                  "loadBalancingMode": self.config.load_balancing_mode,
                                  "monitor": normalize_monitor(self.config.monitor_name)}
        members = self._members(service)
        if current is None:
            await self._ensure_nodes({m.host for m in members})
            body = {"name": name, "partition": self.config.partition, **wanted,
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
        """Create the nodes a pool needs, marked as this instance's; existing ones are used as they are."""
        for host in sorted(hosts - self._nodes):
            path = f"/{self.config.partition}/{host}"
            if await self._bigip.get(f"{NODE}/{uri_id(path)}") is None:
                body = {"name": host, "partition": self.config.partition, "address": host,
                        "description": self._node_description()}
                try:
                    await self._bigip.request("POST", NODE, body)
                except BigIPError as exc:
                    if exc.status != 409:  # created meanwhile by another pool: fine
                        raise
            self._nodes.add(host)

    async def _release_nodes(self, hosts: set[str]) -> None:
        """Delete nodes this instance made once no pool uses them; a node still in use stays.

        Nodes are shared by every pool on the same host, of any instance: one
        made by another instance, by a person or before instance ids is never
        deleted (the BIG-IP also refuses to delete a node a member uses).
        """
        ours = self.ownership.mark(NODE_ENTRY)
        for host in sorted(h for h in hosts if h):
            url = f"{NODE}/{uri_id(f'/{self.config.partition}/{host}')}"
            self._nodes.discard(host)
            node = await self._bigip.get(url)
            if node is None or parse_text(node.get("description")) != ours:
                continue
            try:
                await self._bigip.delete(url)
            except BigIPError as exc:
                if exc.status != 400:  # 400: still referenced by a member of another pool
                    raise

    async def _ensure_virtual(self, service: Service, name: str, destination: str, pool: str,
                              seen: Seen | None = None, *, create_first: bool = False) -> None:
        path = self._path(name)  # the virtual server has the pool's name
        url = f"{VIRTUAL}/{uri_id(path)}"
        wanted = {"description": self._description(service), "destination": destination, "pool": pool,
                  "ipProtocol": "tcp", "sourceAddressTranslation": {"type": "automap"}}
        current = None if create_first else await self._read_virtual(name, seen)
        if current is None:
            body = {"name": name, "partition": self.config.partition, **wanted}
            try:
                await self._write_virtual("POST", VIRTUAL, body, destination)
            except BigIPError as exc:
                # Taken (409; a shared destination is a PlanError by now): read it, then as usual.
                current = await self._read_virtual(name, None) if create_first and exc.status == 409 else None
                if current is None:
                    raise
            else:
                self.log.info("%s: created virtual server %s on %s", service.name, path, destination)
                return
        self._require_ours("virtual server", path, current, service)
        now = {key: current.get(key) for key in wanted}
        now["sourceAddressTranslation"] = {"type": (current.get("sourceAddressTranslation") or {}).get("type")}
        change = _differences(now, wanted)
        if change:
            await self._write_virtual("PATCH", url, change, destination)
            self.log.info("%s: updated virtual server %s (%s)", service.name, path, ", ".join(sorted(change)))

    async def _write_virtual(self, method: str, url: str, body: dict[str, Any], destination: str) -> None:
        """Write a virtual server; a destination another one listens on is an error that names its holder."""
        try:
            await self._bigip.request(method, url, body)
        except BigIPError as exc:
            shared = _SHARED_DESTINATION.search(exc.message) if exc.status in (400, 409) else None
            if shared is None:
                raise
            other = await self._bigip.get(f"{VIRTUAL}/{uri_id(shared.group(1))}")
            # The appliance's text names the other virtual server, whose name
            # names its Service: say only who holds it.
            address = destination.rsplit("/", 1)[-1]
            raise PlanError(f"destination {address} is already used by a virtual server of "
                            f"{self._holder(other)}: not publishing there") from None

    # -- policy rules ------------------------------------------------------------
    async def _check_policy(self, policy: str) -> dict[str, Any]:
        found = await self._bigip.get(f"{POLICY}/{uri_id(policy)}")
        if found is None:
            raise PlanError(f"LTM policy {policy} does not exist")
        if found.get("status", "published") != "published":
            raise PlanError(f"LTM policy {policy} is not published")
        return found  # type: ignore[no-any-return]

    async def _published_rule(self, policy: str, rule: str, seen: Seen | None = None) -> dict[str, Any] | None:
        if seen is not None and seen.knows_policy(policy):
            return seen.rule(policy, rule)
        found = await self._bigip.get(f"{POLICY}/{uri_id(policy)}/rules/{rule}?expandSubcollections=true")
        if found is None:
            await self._check_policy(policy)  # a missing policy is an error, a missing rule is not
        return found

    async def _write_rule(self, policy: str, rule: dict[str, Any], current: dict[str, Any] | None) -> None:
        """Add the rule, or replace ``current`` (the published rule at its name, ours), through a draft."""
        async def change(draft_url: str) -> None:
            if current is None:
                await self._bigip.request("POST", f"{draft_url}/rules", rule)
            else:
                await self._bigip.request("PUT", f"{draft_url}/rules/{rule['name']}", rule)

        await self._in_draft(policy, change, lambda routes: routes.put(rule))

    async def _require_hosts_free(self, service: Service, hosts: list[str]) -> None:
        """A host name that a rule of any of our policies routes for someone else is an error.

        Someone else: another entry, another Interlook instance, a person.
        Both policies count: a name is one team's, over HTTP as over TLS.
        The holder is named only as the Service's own namespace may see it.
        """
        taken: dict[tuple[str, str], list[str]] = {}  # (holder, policy) -> hosts
        for policy in self._policies():
            routes = await self._current_routes(policy)
            for host in hosts:
                for route in routes.routing(host) if routes is not None else ():
                    mark = parse_text(route.description)
                    if self.ownership.may_change(mark, service.name):
                        continue  # the entry's own rule (in the other policy, or by its legacy name)
                    holder = self.ownership.holder(mark, service.name)
                    taken.setdefault((holder, policy), []).append(host)
        if taken:
            raise PlanError("; ".join(_routed_by(hosts, holder, policy) for (holder, policy), hosts in taken.items())
                            + ": not publishing them")

    async def _current_routes(self, policy: str) -> PolicyRoutes | None:
        """Who routes which host in ``policy`` now (None: no such policy): the view while its generation holds.

        One small read of the policy; its rules are listed only when someone
        published a change since the view was made (routes.py).
        """
        found = await self._bigip.get(f"{POLICY}/{uri_id(policy)}")
        if found is None:
            self._routes.pop(policy, None)
            return None
        generation = found.get("generation")
        routes = self._routes.get(policy)
        if routes is not None and routes.fresh(generation, self.clock()):
            return routes
        rules = await self._list(f"{POLICY}/{uri_id(policy)}/rules?expandSubcollections=true", partition=False)
        routes = self._routes[policy] = PolicyRoutes(policy, generation, rules, expires=self.clock() + KNOWN_TTL)
        return routes

    async def _remove_rule(self, policy: str, service: Service, name: str, *, adopt: bool = True,
                           seen: Seen | None = None) -> None:
        try:
            current = await self._published_rule(policy, name, seen)
        except PlanError:
            return  # no policy, so no rule: nothing to remove
        if current is None or not self._ours_or_skip(f"rule of {policy}", name, current, service, adopt):
            return

        async def change(draft_url: str) -> None:
            await self._bigip.delete(f"{draft_url}/rules/{name}")

        await self._in_draft(policy, change, lambda routes: routes.drop(name))

    async def _in_draft(self, policy: str, change: Callable[[str], Any],
                        applied: Callable[[PolicyRoutes], None]) -> None:
        """Draft the policy, apply ``change`` to the draft, publish; never leave the draft behind.

        ``applied`` makes the same change to the view of the policy's routes once it is published.
        """
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
                await asyncio.shield(self._drop_draft(draft_url))
                raise
            await self._note_published(policy, applied)

    async def _note_published(self, policy: str, applied: Callable[[PolicyRoutes], None]) -> None:
        """Keep the view of the policy's routes after our own publish: our change, at the policy's new generation.

        Still under the policy's lock, so no publish of ours comes between.
        A publish by someone else in the instant between ours and this read
        goes unseen until the policy changes again or the view expires
        (PolicyRoutes.fresh); when the read fails the view is dropped and
        the next check lists the rules.
        """
        routes = self._routes.pop(policy, None)
        if routes is None:
            return
        try:
            found = await self._bigip.get(f"{POLICY}/{uri_id(policy)}")
        except (BigIPError, BigIPUnreachable):
            return
        if found is None:
            return
        applied(routes)
        routes.generation = found.get("generation")
        self._routes[policy] = routes

    async def _drop_draft(self, draft_url: str) -> None:
        """Delete a draft, asking again when a busy appliance fails the request: a draft left behind blocks
        every later rule change until a person removes it."""
        for _ in range(_DRAFT_DELETE_ATTEMPTS):
            try:
                await self._bigip.delete(draft_url)
                return
            except (BigIPError, BigIPUnreachable):
                continue

    # -- delete --------------------------------------------------------------------
    async def _unpublish(self, service: Service, *, adopt: bool = True, seen: Seen | None = None) -> None:
        """Virtual server, then policy rules, then the pool: each user before what it uses.

        ``adopt`` False (an orphan sweep) leaves objects from before instance
        ids alone: only what carries this instance's mark is removed.
        """
        name, pool = await self._name_for(service, adopt=adopt, seen=seen)
        path = self._path(name)
        virtual_url = f"{VIRTUAL}/{uri_id(path)}"
        virtual = await self._read_virtual(name, seen)
        if virtual is not None and self._ours_or_skip("virtual server", path, virtual, service, adopt):
            await self._bigip.delete(virtual_url)
        if self.config.update_mode == "policy":
            for policy in self._policies():
                await self._remove_rule(policy, service, name, adopt=adopt, seen=seen)
        pool_url = f"{POOL}/{uri_id(path)}"
        if pool is None or not self._ours_or_skip("pool", path, pool, service, adopt):
            return
        await self._bigip.delete(pool_url)
        hosts = {str(m.get("address", "")).split("%")[0]
                 for m in (pool.get("membersReference") or {}).get("items", [])}
        await self._release_nodes(hosts)
        self.log.info("%s: removed from the BIG-IP", service.name)

    # -- ownership -------------------------------------------------------------------
    def _require_ours(self, kind: str, path: str, found: dict[str, Any], service: Service) -> None:
        verdict = self._verdict(found, service)
        if verdict is Verdict.FOREIGN:
            raise PlanError(f"{kind} {path} exists and is held by {self._holder(found)}: not changing it")
        if verdict is Verdict.ADOPT:
            self.log.info("%s: adopting %s %s made before instance ids (re-marked for instance %s)",
                          service.name, kind, path, self.instance_id)

    def _ours_or_skip(self, kind: str, path: str, found: dict[str, Any], service: Service,
                      adopt: bool = True) -> bool:
        if self._verdict(found, service, adopt) is not Verdict.FOREIGN:
            return True
        self.log.warning("%s %s is held by %s: left in place", kind, path, self._holder(found))
        return False


def _at_legacy_name(item: dict[str, Any], instance: str) -> bool:
    """An object at the legacy name of the entry it is marked for, made before instance ids or adopted by us."""
    mark = parse_text(item.get("description"))
    return (mark is not None and mark.instance in ("", instance)
            and str(item.get("name")) == legacy_object_name(mark.entry))


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


def _routed_by(hosts: list[str], holder: str, policy: str) -> str:
    names = ", ".join(hosts)
    subject = f"host name {names} is" if len(hosts) == 1 else f"host names {names} are"
    return f"{subject} already routed by a rule of {holder} in policy {policy}"


def _same_rule(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if current.get("description", "") != wanted["description"]:
        return False
    for sub in ("conditions", "actions"):
        items = sorted((current.get(f"{sub}Reference") or {}).get("items", []), key=lambda i: str(i.get("name")))
        if not _same_items(items, wanted[sub]):
            return False
    return True

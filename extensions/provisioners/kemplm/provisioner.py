"""provisioner.kemplm: one Virtual Service per published service on a Kemp LoadMaster.

The VS listens on the service's public IP, port ``httpPort`` (or ``httpsPort``
for TLS services), TCP; its Real Servers are the service's targets with their
weights.  Each VS carries the ownership marks (the instance, the entry) in its
nickname, ``interlook_<instance>_<namespace>.<name>`` (see ``nicknames``): that
is how this Interlook finds its own VSs again, and it never changes or deletes
a VS with another instance's nickname, another entry's, or one made by hand.
A VS written before instance ids (``interlook:<entry>``) is adopted by the
entry it names and re-nicknamed.

Every message is handled as plan-then-apply: read the appliance once
(``listvs``), compare with what the service wants, write only the difference.
So ``add`` and ``update`` are the same reconcile, a repeat makes no write, and a
crash at any point is healed by the next message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message, Service
from extensions.kit.ownership import Ownership, Verdict
from extensions.provisioners.kemplm.client import KempAuthError, KempClient, KempError, VirtualService
from extensions.provisioners.kemplm.config import KempConfig
from extensions.provisioners.kemplm.nicknames import NicknameOwnership


class PublishRefused(Exception):
    """The service cannot be published as asked (no public IP, the VS address taken by someone else)."""


@dataclass(frozen=True)
class DesiredVS:
    address: str
    port: int
    nickname: str
    # (host, port) -> weight
    real_servers: dict[tuple[str, int], int]


class KempProvisioner(BaseExtension):
    name = "provisioner.kemplm"
    kind = PROVISIONER

    def __init__(self, config: KempConfig, context: ExtensionContext | None = None):
        super().__init__(context)
        self.config = config
        self.client: KempClient | None = None
        self.marks = NicknameOwnership(Ownership(""))  # bound to the instance id in setup()

    # -- lifecycle ------------------------------------------------------------
    async def setup(self) -> None:
        if not self.instance_id:
            raise RuntimeError("no instance id: every virtual service must carry one")
        self.marks = NicknameOwnership(Ownership(self.instance_id))
        self.client = KempClient(self.config)
        try:
            services = await self.client.list_virtual_services()
        except KempAuthError as exc:
            await self._close()
            raise RuntimeError(f"LoadMaster at {self.config.endpoint} refused the credentials: {exc.message}") from None
        except KempError as exc:
            await self._close()
            raise RuntimeError(f"LoadMaster at {self.config.endpoint} is not usable: {exc}") from None
        mine = [vs for vs in services if self.marks.is_own(vs.nickname)]
        self.log.info("connected to LoadMaster %s: %d virtual services, %d of them instance %s's",
                      self.config.endpoint, len(services), len(mine), self.instance_id)

    async def teardown(self) -> None:
        await self._close()

    async def _close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    # -- messages -------------------------------------------------------------
    async def handle(self, message: Message) -> Message:
        if message.action in (Action.ADD, Action.UPDATE):
            return await self._run(message, self.publish)
        if message.action == Action.DELETE:
            return await self._run(message, self.unpublish)
        return message.reply()

    async def _run(self, message: Message, step: Callable[[Service], Awaitable[str]]) -> Message:
        try:
            info = await step(message.service)
        except KempError as exc:
            self.log.warning("%s %s failed: %s", message.action, message.service.name, exc)
            return message.failed(f"{self.name}: {exc}")
        except PublishRefused as exc:
            return message.failed(f"{self.name}: {exc}")
        return message.reply(info=info)

    def desired(self, service: Service) -> DesiredVS:
        if not service.public_ip:
            raise PublishRefused("the service has no public IP yet (the IPAM step must come before provisioner.kemplm)")
        port = self.config.https_port if service.tls else self.config.http_port
        servers = {(t.host, t.port): max(int(t.weight), 1) for t in service.targets}
        return DesiredVS(address=service.public_ip, port=port, nickname=self.marks.nickname(service.name),
                         real_servers=servers)

    async def publish(self, service: Service) -> str:
        """Make the appliance hold exactly the service's VS and real servers."""
        client = self._client()
        want = self.desired(service)
        existing = await client.list_virtual_services()
        mine = self._owned(existing, service)
        at_target = next((vs for vs in existing if (vs.address, vs.port, vs.protocol) ==
                          (want.address, want.port, "tcp")), None)
        if at_target is not None and at_target not in mine:
            # Say who holds it, never which Service: its nickname may name one the reader has no business seeing.
            raise PublishRefused(f"a virtual service {want.address}:{want.port}/tcp already exists on the LoadMaster "
                                 f"and is held by {self.marks.holder(at_target.nickname)}; not touching it")
        vs = at_target or await self._move_or_create(client, mine, want)
        for stale in mine:
            if stale.index != vs.index:
                await self._delete_vs(client, stale)
        if vs.nickname != want.nickname:
            self.log.info("adopting VS %s:%d written before instance ids: nickname %s", vs.address, vs.port,
                          want.nickname)
            await client.modify_virtual_service(vs.index, {"nickname": want.nickname})
        changes = await self._reconcile_real_servers(client, vs, want)
        return f"LoadMaster VS {want.address}:{want.port} ({len(want.real_servers)} real servers{changes})"

    async def _move_or_create(self, client: KempClient, mine: list[VirtualService],
                              want: DesiredVS) -> VirtualService:
        if mine:
            # Same VS on another port (a TLS change) or address: move it, keeping its real servers.
            vs = mine[0]
            self.log.info("moving VS %s from %s:%d to %s:%d", want.nickname, vs.address, vs.port,
                          want.address, want.port)
            params: dict[str, str | int] = {"vsport": want.port, "nickname": want.nickname}
            if vs.address != want.address:
                params["vsaddress"] = want.address
            await client.modify_virtual_service(vs.index, params)
            return VirtualService(index=vs.index, address=want.address, port=want.port, protocol=vs.protocol,
                                  nickname=want.nickname, real_servers=vs.real_servers)
        self.log.info("creating VS %s at %s:%d", want.nickname, want.address, want.port)
        created = await client.add_virtual_service(
            want.address, want.port, {"nickname": want.nickname, "vstype": "gen", "checktype": "icmp"})
        return VirtualService(index=created.index, address=want.address, port=want.port, protocol="tcp",
                              nickname=want.nickname)

    async def _reconcile_real_servers(self, client: KempClient, vs: VirtualService, want: DesiredVS) -> str:
        current = {(rs.address, rs.port): rs for rs in vs.real_servers}
        added = removed = changed = 0
        for key, rs in current.items():
            if key not in want.real_servers:
                await self._delete_rs(client, vs.index, rs.index)
                removed += 1
        for key, weight in sorted(want.real_servers.items()):
            existing = current.get(key)
            if existing is None:
                await client.add_real_server(vs.index, key[0], key[1], weight)
                added += 1
            elif existing.weight != weight:
                await client.modify_real_server(vs.index, existing.index, {"weight": weight})
                changed += 1
        if not (added or removed or changed):
            return ""
        return f"; added {added}, removed {removed}, reweighted {changed}"

    def _owned(self, services: list[VirtualService], service: Service) -> list[VirtualService]:
        """The VSs this entry may change: ours first, then any written for it before instance ids."""
        verdicts = {vs.index: self.marks.judge(vs.nickname, service.name) for vs in services}
        return sorted((vs for vs in services if verdicts[vs.index] is not Verdict.FOREIGN),
                      key=lambda vs: verdicts[vs.index] is not Verdict.OURS)

    async def unpublish(self, service: Service) -> str:
        """Remove every VS marked as this entry's (of this instance, or from before instance ids); none is success."""
        client = self._client()
        mine = self._owned(await client.list_virtual_services(), service)
        for vs in mine:
            await self._delete_vs(client, vs)
        return f"LoadMaster: removed {len(mine)} virtual service(s)" if mine else "LoadMaster: nothing to remove"

    async def _delete_vs(self, client: KempClient, vs: VirtualService) -> None:
        self.log.info("deleting VS %s at %s:%d", vs.nickname, vs.address, vs.port)
        try:
            await client.delete_virtual_service(vs.index)
        except KempError as exc:
            if not exc.not_found:  # already gone is what we wanted
                raise

    @staticmethod
    async def _delete_rs(client: KempClient, vs_index: int, rs_index: int) -> None:
        try:
            await client.delete_real_server(vs_index, rs_index)
        except KempError as exc:
            if not exc.not_found:
                raise

    def _client(self) -> KempClient:
        if self.client is None:
            raise PublishRefused("not connected to the LoadMaster (setup has not run)")
        return self.client


